"""Orbax checkpoints: one layout for pretraining runs, imported models and fine-tuning inits.

A checkpoint directory is an Orbax `CheckpointManager` root (`<dir>/<step>/...`) whose steps hold
these items:
  params      the BertForPreTraining parameter tree ({'bert': ..., 'cls': ...}), float32
  metadata    JSON: {'model': BertConfig fields, 'tokenizer': tokenizer identity, 'config': the
              full run config (pretraining runs), 'source': where it came from, 'objective':
              'mlm' | 'ltr' (pretraining runs; absent = 'mlm')}. model.causal (absent = False)
              is what makes a left-to-right checkpoint's fine-tuning keep the causal mask: every
              model built from this config gets it.
  train_state optimizer state, step and RNG (pretraining runs only)
  data_iter   the input pipeline's iterator state (pretraining runs only)
A pretraining workdir keeps its checkpoints in `<workdir>/checkpoints`; `load_pretrained` accepts
either that directory or the workdir itself (latest step), or one step's folder
`<workdir>/checkpoints/<step>` (that step).

`RunCheckpoints` writes and reads the pretraining layout. A step is complete once Orbax has
renamed `<step>.orbax-checkpoint-tmp` to `<step>`; a half-written step (killed or failed
mid-save) keeps the tmp name and is never restored. Old steps are deleted only after a newer one
is complete, so a failed save never costs the previous checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from bertjax.models import bert

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(path: str | os.PathLike) -> epath.Path:
    """A workdir or a checkpoint root -> the checkpoint root."""
    path = epath.Path(path)
    if (path / CHECKPOINT_SUBDIR).is_dir():
        return path / CHECKPOINT_SUBDIR
    return path


def split_step_dir(path) -> tuple[epath.Path, int | None]:
    """`<root>/<step>`, a finished step folder of a checkpoint root -> (root, step); any other
    path -> (path, None)."""
    path = epath.Path(path)
    if path.name.isdigit() and (path / "metadata").is_dir():
        return path.parent, int(path.name)
    return path, None


def make_manager(directory, *, max_to_keep: int | None = None, async_save: bool = False,
                 read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(epath.Path(directory), options=options)


def save_pretrained(directory, params, model_config: bert.BertConfig | Mapping[str, Any],
                    tokenizer: Mapping[str, Any] | None, *, step: int = 0,
                    source: str = "", extra: Mapping[str, Any] | None = None) -> epath.Path:
    """Write params + metadata as a checkpoint that `load_pretrained` and fine-tuning read.

    `extra` adds entries to the metadata (e.g. 'conversion' for imported models).
    Refuses to write into a directory that already holds checkpoints (never overwrite)."""
    directory = epath.Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; refusing to overwrite it")
    model = (model_config.to_dict() if isinstance(model_config, bert.BertConfig)
             else bert.BertConfig.from_dict(model_config).to_dict())
    meta = {"model": model, "tokenizer": dict(tokenizer or {}), "source": source}
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata {clash} would replace the checkpoint's own entries")
    meta.update(extra or {})
    with make_manager(directory) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), metadata=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    return directory


def load_pretrained(path, step: int | None = None):
    """-> (params, BertConfig, tokenizer identity dict, metadata dict). Latest step by default.

    Params are restored as host (numpy-backed) arrays in their saved dtype."""
    root = checkpoint_dir(path)
    if step is None:
        root, step = split_step_dir(root)
    with make_manager(root, read_only=True) as mngr:
        step = _pick_step(mngr, root, step)
        restored = _restore(mngr, root, step, params=ocp.args.StandardRestore(),
                            metadata=ocp.args.JsonRestore())
    meta = dict(restored["metadata"])
    if "model" not in meta:
        raise ValueError(f"{root}/{step}: metadata has no 'model' entry; not a bertjax checkpoint")
    cfg = bert.BertConfig.from_dict(meta["model"])
    params = jax.tree_util.tree_map(lambda x: x, restored["params"])
    return params, cfg, dict(meta.get("tokenizer") or {}), meta


_EXPECTED = ("expected a bertjax pretraining workdir, its checkpoints/ folder, or the --out "
             "of scripts/convert_checkpoint.py")


def _restore(mngr: ocp.CheckpointManager, root, step: int, **items):
    try:
        return mngr.restore(step, args=ocp.args.Composite(**items))
    except KeyError as e:  # Orbax: 'Item "metadata" was not found in the checkpoint. ...'
        raise ValueError(f"{root}/{step} is an Orbax checkpoint but not a bertjax one "
                         f"({e.args[0] if e.args else e}); {_EXPECTED}") from None


def _pick_step(mngr: ocp.CheckpointManager, root, step):
    # Orbax lists only finished steps: a half-written `<step>.orbax-checkpoint-tmp` is ignored.
    steps = mngr.all_steps()
    if not steps:
        root = epath.Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no checkpoint found: {root} does not exist; {_EXPECTED}")
        if (root / "config.json").exists() and not (root / CHECKPOINT_SUBDIR).exists():
            raise FileNotFoundError(
                f"{root} looks like a Hugging Face model directory (config.json), not a bertjax "
                f"checkpoint; import it first: python scripts/convert_checkpoint.py --from=hf "
                f"--src={root} --out=DIR, then use DIR")
        raise FileNotFoundError(f"no checkpoint found under {root} (no finished <step>/ "
                                f"folders); {_EXPECTED}")
    if step is None:
        return mngr.latest_step()
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} under {root}; have {sorted(steps)}")
    return step


# --------------------------------------------------------------------------------------------
# Pretraining runs: the items params / train_state / data_iter / metadata.

class CheckpointSaveError(OSError):
    """A checkpoint could not be written (disk full, unwritable directory, ...)."""


def check_writable(directory) -> epath.Path:
    """Creates `directory` and writes a probe file there, so that an unwritable checkpoint
    directory stops a run before its first step rather than at its first save."""
    directory = epath.Path(directory)
    probe = directory / f".write-test-{jax.process_index()}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CheckpointSaveError(
            f"checkpoint directory {directory} cannot be written ({e.strerror or e}); choose a "
            "--workdir this user can write, or fix its permissions") from e
    return directory


class IteratorState:
    """The data iterator's position as grain's Orbax handler saves it for one host: the phase
    and the state after the last batch consumed (batches are prefetched, so the live iterator
    is ahead of training). grain states can hold bytes; JSON carries them as latin-1."""

    def __init__(self, phase: int = 0, state: Any = None):
        self.phase, self.state = phase, state

    def get_state(self) -> bytes:
        return json.dumps({"phase": self.phase, "state": _jsonable(self.state)}).encode()

    def set_state(self, raw: bytes) -> None:
        d = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        self.phase, self.state = d["phase"], _from_jsonable(d["state"])

    def start_prefetch(self) -> None:  # part of grain's iterator protocol; nothing to start
        pass


def _jsonable(state):
    if isinstance(state, bytes):
        return {"__bytes__": state.decode("latin-1")}
    return state


def _from_jsonable(state):
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return state["__bytes__"].encode("latin-1")
    return state


class _OneReport(logging.Filter):
    """Orbax logs a failed background save from each of its threads, with a traceback;
    RunCheckpoints reports it once, as CheckpointSaveError (chained to the original)."""

    def filter(self, record):
        return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)


class RunCheckpoints:
    """A pretraining run's checkpoints (the layout above) in `directory`.

    With async_save, `save` returns once the arrays are copied off the devices and the write
    continues in the background. `check(step)`, called at every step boundary, raises
    CheckpointSaveError as soon as such a write has failed. It costs one flag read while a write
    is in progress (training never waits for it) and one wait that returns at once after it
    ended; so a failure stops the run at the first step boundary after it, not at the next save.
    """

    def __init__(self, directory, *, max_to_keep: int | None = None, async_save: bool = False):
        self.directory = check_writable(directory)
        self._mngr = make_manager(self.directory, max_to_keep=max_to_keep, async_save=async_save)
        self._async = async_save
        self.last_complete = self._mngr.latest_step()  # the step a failure falls back to
        self._pending = None  # step of a background write not yet known to have finished
        self._failed = False
        self._quiet = _OneReport()
        logging.getLogger("absl").addFilter(self._quiet)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, host_state, it_state: IteratorState, meta: Mapping,
             *, force: bool = False) -> None:
        """`host_state`: the train state as one unreplicated copy (DataParallel.get_state)."""
        self.wait(step)  # Orbax would wait for the previous write anyway; its error is its own
        try:
            self._mngr.save(step, force=force, args=ocp.args.Composite(
                params=ocp.args.StandardSave(host_state.params),
                train_state=ocp.args.StandardSave({"step": host_state.step,
                                                   "opt_state": host_state.opt_state,
                                                   "rng": host_state.rng}),
                data_iter=grain.checkpoint.CheckpointSave(it_state),
                metadata=ocp.args.JsonSave(dict(meta))))
        except Exception as e:  # noqa: BLE001 (tensorstore raises ValueError for I/O errors)
            raise self._error(step, step, e) from e
        if self._async:  # finished or not, only wait_until_finished tells whether it worked
            self._pending = step
        else:
            self.last_complete = step

    def check(self, step: int) -> None:
        """Raise CheckpointSaveError if a background write has failed (see the class doc)."""
        if self._pending is None or self._mngr.is_saving_in_progress():
            return
        self.wait(step)

    def wait(self, step: int) -> None:
        """Block until the background write (if any) is done; raise if it failed."""
        if self._pending is None:
            return
        saving, self._pending = self._pending, None
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._error(saving, step, e) from e
        self.last_complete = saving

    def _error(self, saving: int, step: int, e: BaseException) -> CheckpointSaveError:
        self._failed = True
        kept = (f"the last complete checkpoint (step {self.last_complete}) is intact and a rerun "
                "resumes from it" if self.last_complete is not None
                else "no earlier checkpoint exists")
        return CheckpointSaveError(
            f"writing the checkpoint of step {saving} to {self.directory} failed "
            f"({type(e).__name__}: {e}); stopped at step {step}; {kept}")

    def restore(self, step: int, abstract_state, shardings=None):
        """-> (state, IteratorState). `abstract_state`: the train state of ShapeDtypeStructs
        (jax.eval_shape of the init); `shardings`: target shardings, or None for one device."""
        def target(tree, shard):
            if shard is None:
                return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                              tree)
            return jax.tree_util.tree_map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shard)

        tgt = target(abstract_state, shardings)
        it_state = IteratorState()
        restored = self._mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(tgt.params),
            train_state=ocp.args.StandardRestore({"step": tgt.step, "opt_state": tgt.opt_state,
                                                  "rng": tgt.rng}),
            data_iter=grain.checkpoint.CheckpointRestore(it_state)))
        ts = restored["train_state"]
        state = abstract_state.replace(step=ts["step"], params=restored["params"],
                                       opt_state=ts["opt_state"], rng=ts["rng"])
        return state, it_state

    def close(self) -> None:
        """Finish pending writes and release the manager. Errors here were either reported by
        wait() already or are masked by the error the run is stopping for: logged, not raised."""
        try:
            self._mngr.wait_until_finished()
            self._mngr.close()
        except Exception as e:  # noqa: BLE001
            if not self._failed:
                logging.getLogger("bertjax.checkpoint").error(
                    "closing checkpoints in %s: %s: %s", self.directory, type(e).__name__, e)
        finally:
            logging.getLogger("absl").removeFilter(self._quiet)
