"""Pretraining: train_and_evaluate(config, workdir), readable top to bottom.

Sections: the train state and the pure step functions (module level, compiled once); config
checks that run before anything expensive; the loop (data -> devices -> step -> logs, eval,
checkpoints), which resumes from the workdir's latest checkpoint automatically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import grain
from etils import epath

from bertjax import checkpoint as ckpt_lib
from bertjax import losses, metrics as metrics_lib, optim, parallel, records
from bertjax.models import bert

log = logging.getLogger("bertjax.train")


# ----------------------------------------------------------------------------------------------
# Train state and step functions.
# ----------------------------------------------------------------------------------------------
@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: number of updates applied
    params: Any
    opt_state: Any
    rng: jax.Array           # base PRNG key; step k's dropout key is fold_in(rng, k)


def init_state(rng, model: bert.BertForPreTraining, tx: optax.GradientTransformation,
               seq_len: int, max_predictions: int) -> TrainState:
    init_rng, base_rng = jax.random.split(rng)
    ids = jnp.zeros((1, seq_len), jnp.int32)
    pos = jnp.zeros((1, max_predictions), jnp.int32)
    params = model.init(init_rng, ids, ids, ids, pos)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=base_rng)


def _loss_sums(params, batch, dropout_rng, *, model, use_nsp: bool, deterministic: bool,
               gather_params: Callable | None = None):
    if gather_params is not None:  # FSDP: sharded storage -> the layout the model runs in
        params = gather_params(params)
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
        batch["masked_positions"], deterministic=deterministic, rngs={"dropout": dropout_rng})
    m = losses.mlm_metrics(mlm_logits, batch["masked_ids"], batch["masked_weights"])
    n = losses.nsp_metrics(nsp_logits, batch["nsp_label"])
    sums = {k: m[k] for k in ("mlm_loss_sum", "mlm_correct", "mlm_count")}
    if use_nsp:
        sums.update({k: n[k] for k in ("nsp_loss_sum", "nsp_correct", "nsp_count")})
    return sums


def _psum(tree, axis_name):
    return jax.lax.psum(tree, axis_name) if axis_name else tree


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, grad_accum: int,
               use_nsp: bool, axis_name: str | None = None,
               gather_params: Callable | None = None):
    """One optimizer update on one global batch, split into `grad_accum` micro-batches.

    The loss is sum-over-predictions / count-over-the-whole-global-batch, so one device,
    jit over a mesh and pmap (with psum over `axis_name`) compute the same gradient.
    `gather_params` (FSDP) maps the stored, sharded parameters to the layout the forward and
    backward passes use; the optimizer update stays on the stored layout."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    if axis_name:
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    mlm_total = _psum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), axis_name)
    nsp_total = _psum(jnp.float32(batch["nsp_label"].shape[0]), axis_name)

    def objective(params, micro, rng):
        sums = _loss_sums(params, micro, rng, model=model, use_nsp=use_nsp, deterministic=False,
                          gather_params=gather_params)
        loss = sums["mlm_loss_sum"] / jnp.maximum(mlm_total, 1.0)
        if use_nsp:
            loss = loss + sums["nsp_loss_sum"] / nsp_total
        return loss, sums

    grad_fn = jax.grad(objective, has_aux=True)
    if grad_accum == 1:
        grads, sums = grad_fn(state.params, batch, dropout_rng)
    else:
        # Micro-batch j takes rows j, j+A, j+2A, ...: every device contributes to every
        # micro-batch, so the sharded leading axis needs no reshuffling.
        micro = jax.tree_util.tree_map(
            lambda x: x.reshape((-1, grad_accum) + x.shape[1:]).swapaxes(0, 1), batch)

        def body(carry, xs):
            g_acc, s_acc = carry
            j, mb = xs
            g, s = grad_fn(state.params, mb, jax.random.fold_in(dropout_rng, j))
            return (jax.tree_util.tree_map(jnp.add, g_acc, g),
                    jax.tree_util.tree_map(jnp.add, s_acc, s)), None

        zeros_g = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        zeros_s = jax.tree_util.tree_map(
            jnp.zeros_like, jax.eval_shape(lambda: grad_fn(
                state.params, jax.tree_util.tree_map(lambda x: x[0], micro), dropout_rng)[1]))
        (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_s),
                                        (jnp.arange(grad_accum), micro))
    grads, sums = _psum((grads, sums), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = dict(sums, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out


def eval_step(state: TrainState, batch: dict, *, model, use_nsp: bool,
              axis_name: str | None = None, gather_params: Callable | None = None):
    sums = _loss_sums(state.params, batch, state.rng, model=model, use_nsp=use_nsp,
                      deterministic=True, gather_params=gather_params)
    return _psum(sums, axis_name)


def summarize(sums: dict) -> dict:
    """Summed counters (over steps/devices) -> mean losses and accuracies."""
    out = {}
    for head in ("mlm", "nsp"):
        if f"{head}_count" in sums:
            count = max(float(sums[f"{head}_count"]), 1e-8)
            out[f"{head}_loss"] = float(sums[f"{head}_loss_sum"]) / count
            out[f"{head}_accuracy"] = float(sums[f"{head}_correct"]) / count
    out["loss"] = out["mlm_loss"] + out.get("nsp_loss", 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# Config checks (before anything expensive).
# ----------------------------------------------------------------------------------------------
# Changing these between runs in one workdir would silently mix two experiments.
# ("data.nsp" also covers data.nsp_single_sentence: a prefix match.)
_RESUME_MUST_MATCH = ("model", "data.corpus", "data.corpus_format", "data.max_seq_len",
                      "data.nsp", "data.mask_rate", "data.mask_token_prob",
                      "data.random_token_prob", "data.max_predictions_per_seq",
                      "data.whole_word_mask", "data.short_seq_prob", "optim",
                      "train.batch_size", "train.grad_accum_steps", "seed")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_config(config: ml_collections.ConfigDict) -> bert.BertConfig:
    from bertjax.data import corpus as corpus_lib, prepare, pretraining
    model_cfg = bert.BertConfig.from_dict(config.model.to_dict())
    optim.check_config(config.optim)
    t, d = config.train, config.data
    for key in ("batch_size", "steps", "log_every", "eval_every", "eval_steps",
                "checkpoint_every", "grad_accum_steps"):
        if int(t[key]) < 1:
            raise ValueError(f"train.{key}={t[key]}: expected a positive integer")
    for key in ("budget_minutes", "budget_flops"):
        if t[key] < 0:
            raise ValueError(f"train.{key}={t[key]}: expected >= 0 (0 = no budget)")
    if config.parallel.mode not in parallel.MODES:
        raise ValueError(f"parallel.mode={config.parallel.mode!r}: expected one of "
                         f"{parallel.MODES}")
    if config.parallel.fsdp and config.parallel.mode != "jit":
        raise ValueError("parallel.fsdp=True needs parallel.mode='jit'")
    parallel.check_batch_divisible(t.batch_size, t.grad_accum_steps, config.parallel.mode)
    for key, (seq, _) in zip(("data.max_seq_len", "train.phase2_max_seq_len"),
                             _phase_shapes(config)):
        if seq > model_cfg.max_position_embeddings:
            raise ValueError(f"{key}={seq}: sequence length {seq} exceeds "
                             f"model.max_position_embeddings="
                             f"{model_cfg.max_position_embeddings}; expected at most that (or "
                             "raise model.max_position_embeddings)")
    # The data options are validated where they are used (the pipeline's option classes); built
    # here as well so that a bad value fails before the corpus is prepared.
    corpus_lib.check_format(d.corpus_format)
    prepare.check_eval_fraction(d.eval_fraction)
    pretraining.PairingOptions(max_seq_len=d.max_seq_len, short_seq_prob=d.short_seq_prob,
                               nsp=d.nsp, single_sentence=d.nsp_single_sentence)
    pretraining.MaskingOptions(mask_rate=d.mask_rate, mask_token_prob=d.mask_token_prob,
                               random_token_prob=d.random_token_prob,
                               max_predictions=d.max_predictions_per_seq,
                               whole_word=d.whole_word_mask)
    if t.phase2_start >= 0:
        for key, low in (("phase2_max_seq_len", 8), ("phase2_max_predictions_per_seq", 1)):
            if t[key] < low:
                raise ValueError(f"train.{key}={t[key]}: expected at least {low}")
    return model_cfg


def check_workdir(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """A workdir holds one experiment: resuming with a different one is an error."""
    path = workdir / "config.json"
    if not path.exists():
        return
    old = _flatten(json.loads(path.read_text()))
    new = _flatten(json.loads(config.to_json()))
    diffs = [k for k in sorted(set(old) | set(new))
             if k.startswith(_RESUME_MUST_MATCH) and old.get(k) != new.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs)
        raise ValueError(
            f"workdir {workdir} holds a run with a different config ({detail}). Use a new "
            "--workdir, or restore the original values; nothing was overwritten.")


def _phase_shapes(config) -> list[tuple[int, int]]:
    shapes = [(config.data.max_seq_len, config.data.max_predictions_per_seq)]
    if config.train.phase2_start >= 0:
        shapes.append((config.train.phase2_max_seq_len,
                       config.train.phase2_max_predictions_per_seq))
    return shapes


def _phase(config, step: int) -> int:
    return int(config.train.phase2_start >= 0 and step >= config.train.phase2_start)


# ----------------------------------------------------------------------------------------------
# Checkpoint items.
# ----------------------------------------------------------------------------------------------
class _IteratorState:
    """What grain's Orbax handler saves for one host: the state after the last batch consumed
    (batches are prefetched, so the live iterator is ahead of training)."""

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


def _save(mngr, step: int, state: TrainState, dp: parallel.DataParallel, it_state, meta,
          force: bool = False):
    host_state = dp.get_state(state)
    mngr.save(step, force=force, args=ocp.args.Composite(
        params=ocp.args.StandardSave(host_state.params),
        train_state=ocp.args.StandardSave({"step": host_state.step,
                                           "opt_state": host_state.opt_state,
                                           "rng": host_state.rng}),
        data_iter=grain.checkpoint.CheckpointSave(it_state),
        metadata=ocp.args.JsonSave(meta)))


def _restore(mngr, step: int, abstract_state: TrainState, shardings):
    def target(tree, shard):
        if shard is None:
            return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
        return jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shard)

    tgt = target(abstract_state, shardings)
    it_state = _IteratorState()
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(tgt.params),
        train_state=ocp.args.StandardRestore({"step": tgt.step, "opt_state": tgt.opt_state,
                                              "rng": tgt.rng}),
        data_iter=grain.checkpoint.CheckpointRestore(it_state)))
    ts = restored["train_state"]
    state = TrainState(step=ts["step"], params=restored["params"], opt_state=ts["opt_state"],
                       rng=ts["rng"])
    return state, it_state


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------
class _Preempted:
    """Turns SIGTERM (preemption) into a flag checked between steps."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler
            self._old = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and exiting after this step")
        self.flag = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


@dataclasses.dataclass
class RunResult:
    step: int
    last_train: dict
    last_eval: dict
    preempted: bool = False
    budget: dict | None = None  # what train.budget_minutes/budget_flops counted (budget.json)


def _make_iterator(config, prepared, split, phase, *, seed_offset=0):
    from bertjax.data import pretraining
    seq, preds = _phase_shapes(config)[phase]
    return pretraining.make_iterator(
        config.data, prepared, split=split, global_batch_size=config.train.batch_size,
        seed=config.seed + 1000 * phase + seed_offset, process_index=jax.process_index(),
        process_count=jax.process_count(), max_seq_len=seq, max_predictions_per_seq=preds)


def _tagged(it, phase):
    """Yield (batch, iterator state after it) pairs."""
    for batch in it:
        yield batch, (phase, it.get_state())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> RunResult:
    from bertjax.data import pretraining, tokenizer as tok_lib

    # --- Checks and setup, before any compile or data preparation.
    if config.parallel.distributed:
        jax.distributed.initialize()
    model_cfg = check_config(config)
    workdir = epath.Path(workdir)
    check_workdir(workdir, config)
    tok = tok_lib.load(config.data.tokenizer)
    tok_lib.check_matches_model(tok, model_cfg.vocab_size)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "config.json").exists():
            (workdir / "config.json").write_text(config.to_json(indent=2))
    prepared = pretraining.prepare_if_needed(config.data, str(workdir))

    # --- Model, optimizer, state layout (abstract: nothing allocated yet).
    model = bert.BertForPreTraining(model_cfg)
    tx, schedule = optim.make_optimizer(config.optim, config.train.steps)
    seq0, preds0 = _phase_shapes(config)[0]
    init_fn = functools.partial(init_state, model=model, tx=tx, seq_len=seq0,
                                max_predictions=preds0)
    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(init_fn, rng)
    use_nsp = bool(config.data.nsp)
    dp = parallel.DataParallel(
        config.parallel.mode,
        functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                          grad_accum=config.train.grad_accum_steps, use_nsp=use_nsp),
        abstract_state, fsdp=config.parallel.fsdp,
        eval_fn=functools.partial(eval_step, model=model, use_nsp=use_nsp))
    n_params = bert.param_count(abstract_state.params)
    log.info("model %s: %s parameters; %d devices, %d processes, mode=%s%s",
             model_cfg.size or "custom", f"{n_params:,}", jax.device_count(),
             jax.process_count(), dp.mode, " fsdp" if config.parallel.fsdp else "")

    # --- Restore or initialise.
    mngr = ckpt_lib.make_manager(workdir / ckpt_lib.CHECKPOINT_SUBDIR,
                                 max_to_keep=config.train.keep_checkpoints,
                                 async_save=config.train.async_checkpointing)
    meta = {"model": model_cfg.to_dict(), "tokenizer": tok.identity(),
            "config": json.loads(config.to_json()), "source": "bertjax pretraining"}
    latest = mngr.latest_step()
    if latest is not None:
        state, it_state = _restore(mngr, latest, abstract_state, dp.shardings_for_restore())
        state = dp.put_state(state)
        log.info("resumed from %s at step %d", mngr.directory, latest)
    else:
        if dp.mode == "jit":
            state = jax.jit(init_fn, out_shardings=dp.state_sharding)(rng)
        else:
            state = dp.put_state(jax.jit(init_fn)(rng))
        it_state = _IteratorState()
    step = int(latest or 0)

    # --- Data.
    phase = _phase(config, step)
    train_it = _make_iterator(config, prepared, "train", phase)
    if it_state.state is not None and it_state.phase == phase:
        train_it.set_state(it_state.state)
    it_state = _IteratorState(phase, train_it.get_state())

    def device_batches(it, ph):
        def put(b):
            bert.check_token_ids(b["input_ids"], model_cfg.vocab_size)
            return dp.put_batch(b)
        return parallel.prefetch(_tagged(it, ph), put, config.data.prefetch)

    batches = device_batches(train_it, phase)
    writer = metrics_lib.MetricWriter(str(workdir))
    peak = metrics_lib.peak_flops()

    def run_eval(state, step):
        it = _make_iterator(config, prepared, "eval", _phase(config, step), seed_offset=7)
        total = None
        with contextlib.closing(device_batches(it, 0)) as batches_:
            for _, (b, _) in zip(range(config.train.eval_steps), batches_):
                sums = dp.metrics_to_host(dp.eval(state, b))
                total = sums if total is None else jax.tree_util.tree_map(np.add, total, sums)
        out = summarize(total)
        writer.write(step, "eval", out)
        log.info("eval step %d: %s", step, format_metrics(out))
        return out

    # --- Loop.
    from tqdm import tqdm
    pending, last_train, last_eval = [], {}, {}
    window_start, window_steps, compile_s = None, 0, None
    last_good = latest
    preempted = False
    budget_path = workdir / "budget.json"
    used = (json.loads(budget_path.read_text()) if budget_path.exists()
            else {"minutes": 0.0, "flops": 0.0})
    minutes_before, loop_start = used["minutes"], time.perf_counter()

    def budget_spent() -> bool:
        b_min, b_flops = config.train.budget_minutes, config.train.budget_flops
        return bool((b_min and used["minutes"] >= b_min) or (b_flops and used["flops"] >= b_flops))
    bar = tqdm(total=config.train.steps, initial=step, disable=not is_main, unit="step",
               dynamic_ncols=True)
    try:
        with _Preempted() as stop:
            while step < config.train.steps and not budget_spent():
                if _phase(config, step) != phase:  # BERT recipe: switch to long sequences
                    phase = _phase(config, step)
                    batches.close()
                    train_it = _make_iterator(config, prepared, "train", phase)
                    batches = device_batches(train_it, phase)
                    log.info("step %d: phase %d, seq_len %d", step, phase,
                             _phase_shapes(config)[phase][0])
                batch, tag = next(batches)
                t0 = time.perf_counter()
                state, out = dp.step(state, batch)
                step += 1
                it_state = _IteratorState(*tag)
                pending.append(out)
                seq_len, preds = _phase_shapes(config)[phase]
                used["flops"] += (config.train.batch_size * metrics_lib
                                  .pretraining_flops_per_sequence(model_cfg, seq_len, preds))
                used["minutes"] = minutes_before + (time.perf_counter() - loop_start) / 60
                over = budget_spent()
                if compile_s is None:  # the first step compiles: time it apart from the rest
                    jax.block_until_ready(out)
                    compile_s = time.perf_counter() - t0
                    window_start, window_steps = time.perf_counter(), 0
                    writer.write(step, "train", {"compile_time_s": compile_s})
                else:
                    window_steps += 1
                bar.update(1)

                preempt = stop.flag  # read once: the signal can arrive at any moment
                log_now = step % config.train.log_every == 0 or step == config.train.steps or over
                ckpt_now = (step % config.train.checkpoint_every == 0 or step == config.train.steps
                            or preempt or over)
                if log_now or ckpt_now:
                    host = [dp.metrics_to_host(m) for m in pending]
                    _check_finite(host, step - len(pending) + 1, last_good, mngr.directory)
                    pending = []
                if log_now and host:
                    now = time.perf_counter()
                    seq_len = _phase_shapes(config)[phase][0]
                    last_train = _train_log(host, window_steps, now - window_start, config, seq_len,
                                            model_cfg, peak, phase)
                    writer.write(step, "train", last_train)
                    bar.set_postfix(loss=f"{last_train['loss']:.3f}",
                                    mlm_acc=f"{last_train['mlm_accuracy']:.3f}")
                    window_start, window_steps = now, 0
                if step % config.train.eval_every == 0 or step == config.train.steps or over:
                    last_eval = run_eval(state, step)
                    window_start = time.perf_counter()
                if ckpt_now:
                    _save(mngr, step, state, dp, it_state, meta, force=True)
                    last_good = step
                    if is_main:
                        records.write_json(budget_path, dict(used, step=step,
                                                             stopped_by_budget=over))
                if over:
                    log.info("compute budget spent at step %d: %.1f min, %.3g FLOPs", step,
                             used["minutes"], used["flops"])
                if preempt:
                    preempted = True
                    log.warning("preempted at step %d; checkpoint saved", step)
                    break
    finally:  # also on errors: stop the prefetch thread, finish pending checkpoint writes
        bar.close()
        batches.close()
        if hasattr(train_it, "close"):  # grain worker processes, when data.num_workers > 0
            train_it.close()
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
    return RunResult(step=step, last_train=last_train, last_eval=last_eval, preempted=preempted,
                     budget=dict(used, stopped_by_budget=budget_spent()))


def _check_finite(host_metrics: list, first_step: int, last_good, ckpt_dir) -> None:
    for i, m in enumerate(host_metrics):
        bad = [k for k in ("mlm_loss_sum", "nsp_loss_sum", "grad_norm")
               if k in m and not np.isfinite(m[k])]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} at step {first_step + i}; stopping. The last good "
                f"checkpoint (step {last_good}) in {ckpt_dir} is kept; try a lower learning rate "
                "or more warmup.")


def _train_log(host: list, steps_timed: int, seconds: float, config, seq_len: int,
               model_cfg, peak, phase: int) -> dict:
    total = {k: np.sum([m[k] for m in host]) for k in host[0] if k.endswith(("_sum", "_correct",
                                                                             "_count"))}
    out = summarize(total)
    out["grad_norm"] = float(host[-1]["grad_norm"])
    out["learning_rate"] = float(host[-1]["learning_rate"])
    if steps_timed > 0 and seconds > 0:
        step_s = seconds / steps_timed
        seq_s = config.train.batch_size / step_s
        preds = _phase_shapes(config)[phase][1]
        flops = metrics_lib.pretraining_flops_per_sequence(model_cfg, seq_len, preds) * seq_s
        out.update(step_time_s=step_s, seq_per_s=seq_s, tokens_per_s=seq_s * seq_len,
                   mfu=(flops / (peak * jax.device_count())) if peak else None)
    return out


def format_metrics(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in d.items() if isinstance(v, (int, float)))
