"""Orbax checkpoints: one layout for pretraining runs, imported models and fine-tuning inits.

A checkpoint directory is an Orbax `CheckpointManager` root (`<dir>/<step>/...`) whose steps hold
these items:
  params      the BertForPreTraining parameter tree ({'bert': ..., 'cls': ...}), float32
  metadata    JSON: {'model': BertConfig fields, 'tokenizer': tokenizer identity, 'config': the
              full run config (pretraining runs), 'source': where it came from}
  train_state optimizer state, step and RNG (pretraining runs only)
  data_iter   the input pipeline's iterator state (pretraining runs only)
A pretraining workdir keeps its checkpoints in `<workdir>/checkpoints`; `load_pretrained` accepts
either that directory or the workdir itself.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

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


def read_metadata(path, step: int | None = None) -> tuple[dict, int]:
    root = checkpoint_dir(path)
    with make_manager(root, read_only=True) as mngr:
        step = _pick_step(mngr, root, step)
        meta = _restore(mngr, root, step, metadata=ocp.args.JsonRestore())
    return dict(meta["metadata"]), step


def load_pretrained(path, step: int | None = None):
    """-> (params, BertConfig, tokenizer identity dict, metadata dict). Latest step by default.

    Params are restored as host (numpy-backed) arrays in their saved dtype."""
    root = checkpoint_dir(path)
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
