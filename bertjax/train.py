"""Pretraining: train_and_evaluate(config, workdir), readable top to bottom.

Sections: the train state and the pure step functions (module level, compiled once); config
checks that run before anything expensive; the loop (data -> devices -> step -> logs, eval,
checkpoints), which resumes from the workdir's latest checkpoint automatically.
Elsewhere: the checkpoint layout (checkpoint.RunCheckpoints), device placement and the
cross-device reductions (parallel), prefetching with the iterator state (data/prefetch),
the SIGTERM/Ctrl-C stop (preemption), one experiment per workdir (workdir).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from bertjax import checkpoint as ckpt_lib
from bertjax import config_checks, context_probe, dir_lock
from bertjax import losses, metrics as metrics_lib, objectives, optim, parallel, preemption
from bertjax import run_clock
from bertjax import workdir as workdir_lib
from bertjax.data import prefetch as prefetch_lib
from bertjax.models import attention, bert

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
               collectives: parallel.Collectives, objective=objectives.MLM):
    params = collectives.params_for_compute(params)  # FSDP: the one place params meet the model
    packing = {k: batch[k] for k in ("position_ids", "sequence_ids", "cls_positions")
               if k in batch}  # packed rows (bertjax.data.pretraining.MODEL_PACKING_KEYS)
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
        batch["masked_positions"], deterministic=deterministic, rngs={"dropout": dropout_rng},
        packing=packing or None)
    m, h = objective.metrics(mlm_logits, batch), objective.head  # masked LM or next tokens
    sums = {k: m[k] for k in (f"{h}_loss_sum", f"{h}_correct", f"{h}_count")}
    sums["real_token_count"] = jnp.sum(batch["input_mask"].astype(jnp.float32))
    if use_nsp:
        n = losses.nsp_metrics(nsp_logits, batch["nsp_label"], batch.get("nsp_weights"))
        sums.update({k: n[k] for k in ("nsp_loss_sum", "nsp_correct", "nsp_count")})
    return sums


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, grad_accum: int,
               use_nsp: bool, collectives: parallel.Collectives = parallel.ONE_DEVICE,
               objective: objectives.Objective = objectives.MLM):
    """One optimizer update on one global batch, split into `grad_accum` micro-batches.

    The loss is sum-over-predictions / count-over-the-whole-global-batch, so one device,
    jit over a mesh and pmap (where `collectives.sum` is a psum) compute the same gradient.
    With FSDP the forward and backward passes see gathered parameters
    (`collectives.params_for_compute`); the optimizer update stays on the stored layout."""
    c = collectives
    dropout_rng = c.per_device_rng(jax.random.fold_in(state.rng, state.step))
    predictions_total = c.sum(jnp.sum(batch["masked_weights"].astype(jnp.float32)))
    nsp_total = c.sum(jnp.sum(batch["nsp_weights"]) if "nsp_weights" in batch  # packed pairs
                      else jnp.float32(batch["nsp_label"].shape[0]))

    def loss_fn(params, micro, rng):
        sums = _loss_sums(params, micro, rng, model=model, use_nsp=use_nsp, deterministic=False,
                          collectives=c, objective=objective)
        loss = sums[f"{objective.head}_loss_sum"] / jnp.maximum(predictions_total, 1.0)
        if use_nsp:
            loss = loss + sums["nsp_loss_sum"] / nsp_total
        return loss, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)
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
    grads, sums = c.sum((grads, sums))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = dict(sums, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out


def eval_step(state: TrainState, batch: dict, *, model, use_nsp: bool,
              collectives: parallel.Collectives = parallel.ONE_DEVICE,
              objective: objectives.Objective = objectives.MLM):
    sums = _loss_sums(state.params, batch, state.rng, model=model, use_nsp=use_nsp,
                      deterministic=True, collectives=collectives, objective=objective)
    return collectives.sum(sums)


def summarize(sums: dict, objective: objectives.Objective = objectives.MLM) -> dict:
    """Summed counters (over steps/devices) -> mean losses and accuracies."""
    return objective.summarize(sums)


# ----------------------------------------------------------------------------------------------
# Config checks (before anything expensive).
# ----------------------------------------------------------------------------------------------
# Changing these between runs in one workdir would silently mix two experiments.
# ("data.nsp" also covers data.nsp_single_sentence: a prefix match.)
_RESUME_MUST_MATCH = ("model", "data.corpus", "data.corpus_format", "data.max_seq_len",
                      "data.nsp", "data.mask_rate", "data.mask_token_prob",
                      "data.random_token_prob", "data.max_predictions_per_seq",
                      "data.whole_word_mask", "data.short_seq_prob", "data.packing",
                      "data.max_sequences_per_row", "optim", "objective",
                      "train.batch_size", "train.grad_accum_steps", "seed")


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of training with one input shape (BERT: 90% at seq 128, then seq 512)."""
    index: int
    start: int  # first step of the phase
    seq_len: int
    max_predictions: int


def phases(config) -> list[Phase]:
    slots = objectives.of(config).predictions  # LTR: every position predicts
    out = [Phase(0, 0, config.data.max_seq_len,
                 slots(config.data.max_seq_len, config.data.max_predictions_per_seq))]
    if config.train.phase2_start >= 0:
        out.append(Phase(1, config.train.phase2_start, config.train.phase2_max_seq_len,
                         slots(config.train.phase2_max_seq_len,
                               config.train.phase2_max_predictions_per_seq)))
    return out



def phase_at(all_phases: list[Phase], step: int) -> Phase:
    return [p for p in all_phases if step >= p.start][-1]


def check_config(config: ml_collections.ConfigDict) -> bert.BertConfig:
    """Every field, by the table in bertjax/config_checks.py and the checks its rows name;
    the warnings it finds are logged, one line each."""
    from bertjax.data import corpus as corpus_lib, masking as masking_lib, prepare, pretraining
    model_cfg = bert.BertConfig.from_dict(config.model.to_dict())
    objectives.of(config).check(model_cfg, config.data)
    optim.check_config(config.optim)
    t, d = config.train, config.data
    corpus_lib.check_format(d.corpus_format)
    prepare.check_eval_fraction(d.eval_fraction)
    warnings = config_checks.check(config)
    parallel.check_mode(config.parallel.mode, config.parallel.fsdp)
    parallel.check_batch_divisible(t.batch_size, t.grad_accum_steps, config.parallel.mode)
    if d.packing == "sequences":
        attention.check_packing(model_cfg.attention_impl)
    for key, p in zip(("data.max_seq_len", "train.phase2_max_seq_len"), phases(config)):
        if p.seq_len > model_cfg.max_position_embeddings:
            raise ValueError(f"{key}={p.seq_len}: sequence length {p.seq_len} exceeds "
                             f"model.max_position_embeddings="
                             f"{model_cfg.max_position_embeddings}; expected at most that (or "
                             "raise model.max_position_embeddings)")
    # The data options are validated where they are used (the pipeline's option classes); built
    # here as well so that a bad value fails before the corpus is prepared.
    for p in phases(config):
        pairing = pretraining.PairingOptions(
            max_seq_len=p.seq_len, short_seq_prob=d.short_seq_prob, nsp=d.nsp,
            single_sentence=d.nsp_single_sentence, packing=d.packing,
            max_sequences_per_row=d.max_sequences_per_row)
        masking = masking_lib.MaskingOptions(
            mask_rate=d.mask_rate, mask_token_prob=d.mask_token_prob,
            random_token_prob=d.random_token_prob, max_predictions=p.max_predictions,
            whole_word=d.whole_word_mask)
        pretraining.check_prediction_budget(pairing, masking)
    for line in warnings:
        log.warning("%s", line)
    return model_cfg


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    step: int
    last_train: dict
    last_eval: dict
    preempted: bool = False
    budget: dict | None = None  # what train.budget_minutes/budget_flops counted (budget.json)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> RunResult:
    from bertjax.data import pretraining, tokenizer as tok_lib

    # --- Checks and setup, before any compile or data preparation.
    if config.parallel.distributed:
        parallel.initialize_distributed()
    model_cfg = check_config(config)
    all_phases = phases(config)
    if not str(workdir).strip():  # epath would take '' as the current directory
        raise ValueError("workdir is empty; expected a directory")
    workdir = epath.Path(workdir)
    # One run per workdir (released on any exit); Ctrl-C as a stop (bertjax/preemption.py).
    with dir_lock.hold(workdir, "pretraining"), preemption.StopFlag() as stop:
        workdir_lib.check_same_experiment(workdir, config, _RESUME_MUST_MATCH)
        tok = tok_lib.load(config.data.tokenizer)
        tok_lib.check_matches_model(tok, model_cfg.vocab_size)
        is_main = jax.process_index() == 0
        ckpts = ckpt_lib.RunCheckpoints(workdir / ckpt_lib.CHECKPOINT_SUBDIR,
                                        max_to_keep=config.train.keep_checkpoints,
                                        async_save=config.train.async_checkpointing)
        try:
            if is_main:
                workdir_lib.save_config(workdir, config)
                prepared = pretraining.prepare_if_needed(config.data, str(workdir), tokenizer=tok)
            # Process 0 prepares (the default prepared_dir is shared through the workdir); the
            # others then find it prepared, or prepare their own when data.prepared_dir is local.
            parallel.barrier("prepared")
            if not is_main:
                prepared = pretraining.prepare_if_needed(config.data, str(workdir), tokenizer=tok)
            return _train(config, workdir, model_cfg, all_phases, tok, prepared, ckpts, is_main,
                          stop)
        finally:
            ckpts.close()


class _Run:
    """What one pretraining run builds once: model, optimizer, the data-parallel steps, the data
    iterators, the writer; and its periodic actions (evaluate, log). The loop is in _train."""

    def __init__(self, config, workdir, model_cfg, all_phases, tok, prepared, ckpts):
        self.config, self.model_cfg, self.all_phases = config, model_cfg, all_phases
        self.tok, self.prepared, self.ckpts = tok, prepared, ckpts
        # --- Model, optimizer, state layout (abstract: nothing allocated yet).
        model = bert.BertForPreTraining(model_cfg)
        tx, schedule = optim.make_optimizer(config.optim, config.train.steps)
        self.init_fn = functools.partial(init_state, model=model, tx=tx,
                                         seq_len=all_phases[0].seq_len,
                                         max_predictions=all_phases[0].max_predictions)
        self.rng = jax.random.PRNGKey(config.seed)
        self.abstract_state = jax.eval_shape(self.init_fn, self.rng)
        use_nsp, self.objective = bool(config.data.nsp), objectives.of(config)
        self.dp = parallel.DataParallel(
            config.parallel.mode,
            functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                              grad_accum=config.train.grad_accum_steps, use_nsp=use_nsp,
                              objective=self.objective),
            self.abstract_state, fsdp=config.parallel.fsdp,
            eval_fn=functools.partial(eval_step, model=model, use_nsp=use_nsp,
                                      objective=self.objective))
        n_params = bert.param_count(self.abstract_state.params)
        log.info("model %s: %s parameters; %d devices, %d processes, mode=%s%s",
                 model_cfg.size or "custom", f"{n_params:,}", jax.device_count(),
                 jax.process_count(), self.dp.mode, " fsdp" if config.parallel.fsdp else "")
        self.meta = {"model": model_cfg.to_dict(), "tokenizer": tok.identity(),  # causal or not
                     "config": json.loads(config.to_json()), "source": "bertjax pretraining",
                     "objective": self.objective.name}
        self.writer = metrics_lib.MetricWriter(str(workdir))
        self.peak = metrics_lib.peak_flops()

    def restore_or_init(self):
        """-> (state on the devices, iterator state, step): the latest checkpoint, or fresh."""
        dp, latest = self.dp, self.ckpts.latest_step()
        if latest is not None:
            state, it_state = self.ckpts.restore(latest, self.abstract_state,
                                                 dp.shardings_for_restore())
            log.info("resumed from %s at step %d", self.ckpts.directory, latest)
            return dp.put_state(state), it_state, int(latest)
        if dp.mode == "jit":
            state = jax.jit(self.init_fn, out_shardings=dp.state_sharding)(self.rng)
        else:
            state = dp.put_state(jax.jit(self.init_fn)(self.rng))
        return state, ckpt_lib.IteratorState(), 0

    def make_iterator(self, split, phase, seed_offset=0):
        from bertjax.data import pretraining
        c = self.config
        return pretraining.make_iterator(
            c.data, self.prepared, split=split, global_batch_size=c.train.batch_size,
            seed=c.seed + 1000 * phase.index + seed_offset,
            process_index=jax.process_index(), process_count=jax.process_count(),
            shards=c.data.shards, max_seq_len=phase.seq_len,
            max_predictions_per_seq=phase.max_predictions, tokenizer=self.tok,
            objective=self.objective.name)

    def device_batches(self, it, phase_index):
        def put(b):
            bert.check_token_ids(b["input_ids"], self.model_cfg.vocab_size)
            return self.dp.put_batch(b)
        return prefetch_lib.prefetch(prefetch_lib.tagged(it, phase_index), put,
                                     self.config.data.prefetch)

    def step_flops(self, phase) -> float:
        return self.config.train.batch_size * metrics_lib.pretraining_flops_per_sequence(
            self.model_cfg, phase.seq_len, phase.max_predictions)

    def evaluate(self, state, step) -> dict:
        # The objective's eval feeds: MLM's also have the context shuffled (context_nats, the
        # escape from the unigram plateau, bertjax/context_probe.py); LTR's are the rows as is.
        it = self.make_iterator("eval", phase_at(self.all_phases, step), seed_offset=7)
        rng, total, dp = np.random.default_rng(step), {}, self.dp
        for _, b in zip(range(self.config.train.eval_steps), it):
            bert.check_token_ids(b["input_ids"], self.model_cfg.vocab_size)
            feeds = self.objective.eval_feeds(b, self.tok, self.model_cfg.vocab_size, rng)
            for name, fed in feeds.items():
                sums = dp.metrics_to_host(dp.eval(state, dp.put_batch(fed)))
                total[name] = jax.tree_util.tree_map(np.add, total[name], sums) if name in total \
                    else sums
        out = self.objective.eval_summary(total)
        self.writer.write(step, "eval", out)
        log.info("eval step %d: %s", step, format_metrics(out))
        return out

    def log_train(self, step, host, clock: run_clock.StepClock, phase) -> dict:
        steps, seconds = clock.take()
        out = run_clock.train_figures(host, steps, seconds, self.config, phase, self.model_cfg,
                                      self.peak, self.objective, summarize)
        self.writer.write(step, "train", out)
        return out


def _train(config, workdir, model_cfg, all_phases, tok, prepared, ckpts, is_main,
           stop: preemption.StopFlag) -> RunResult:
    """Restore or init, then the loop: step; every log_every a train log; every eval_every an
    evaluation; every checkpoint_every (and at the end, a stop or a spent budget) a checkpoint.
    The caller closes `ckpts` (it exists before data preparation, so that an unwritable
    directory stops the run first)."""
    from tqdm import tqdm
    run = _Run(config, workdir, model_cfg, all_phases, tok, prepared, ckpts)
    dp, t = run.dp, config.train
    state, it_state, step = run.restore_or_init()
    phase = phase_at(all_phases, step)
    train_it = run.make_iterator("train", phase)
    if it_state.state is not None and it_state.phase == phase.index:
        train_it.set_state(it_state.state)
    it_state = ckpt_lib.IteratorState(phase.index, train_it.get_state())
    batches = run.device_batches(train_it, phase.index)
    budget, clock = run_clock.Budget(t, workdir / "budget.json"), run_clock.StepClock()
    pending, last_train, last_eval, preempted = [], {}, {}, False
    bar = tqdm(total=t.steps, initial=step, disable=not is_main, unit="step", dynamic_ncols=True)
    try:
        with stop.at_step_boundaries():
            while step < t.steps and not budget.spent():
                if phase_at(all_phases, step) != phase:  # BERT recipe: switch to long sequences
                    phase = phase_at(all_phases, step)
                    batches.close()
                    train_it = run.make_iterator("train", phase)
                    batches = run.device_batches(train_it, phase.index)
                    log.info("step %d: phase %d, seq_len %d", step, phase.index, phase.seq_len)
                batch, tag = next(batches)
                t0 = time.perf_counter()
                state, out = dp.step(state, batch)
                step += 1
                it_state = ckpt_lib.IteratorState(*tag)
                pending.append(out)
                over = budget.add_step(run.step_flops(phase))
                compile_s = clock.stepped(out, t0)
                if compile_s is not None:  # the first step compiles: timed apart
                    run.writer.write(step, "train", {"compile_time_s": compile_s})
                bar.update(1)
                ckpts.check(step)  # a failed background save stops the run here

                preempt = stop.reached(step)  # read once: the signal can come at any moment
                log_now = step % t.log_every == 0 or step == t.steps or over
                ckpt_now = step % t.checkpoint_every == 0 or step == t.steps or preempt or over
                if log_now or ckpt_now:
                    host = [dp.metrics_to_host(m) for m in pending]
                    run_clock.check_finite(host, step - len(pending) + 1, ckpts)
                    pending = []
                if log_now and host:
                    last_train = run.log_train(step, host, clock, phase)
                    bar.set_postfix(run.objective.progress(last_train, last_eval))
                escaped = False
                if step % t.eval_every == 0 or step == t.steps or over:
                    last_eval = run.evaluate(state, step)
                    clock.restart()
                    escaped = t.stop_at_escape and context_probe.escaped(last_eval)
                    ckpt_now = ckpt_now or escaped
                if ckpt_now:
                    ckpts.save(step, dp.get_state(state), it_state, run.meta, force=True)
                    if is_main:
                        budget.save(step, over)
                if over:
                    log.info("compute budget spent at step %d: %.1f min, %.3g FLOPs", step,
                             budget.used["minutes"], budget.used["flops"])
                if escaped:
                    log.info("escaped the unigram plateau at step %d (context_nats %.3f); "
                             "stopping (train.stop_at_escape)", step, last_eval["context_nats"])
                    break
                if preempt:
                    preempted = True
                    log.warning("%s at step %d; checkpoint saved; the same command resumes",
                                "stopped by Ctrl-C" if stop.signal == "SIGINT" else "preempted",
                                step)
                    break
        ckpts.wait(step)  # the last save must be complete (or its failure reported)
    finally:  # also on errors: stop the prefetch thread (the caller closes the checkpoints)
        bar.close()
        batches.close()
        if hasattr(train_it, "close"):  # grain worker processes, when data.num_workers > 0
            train_it.close()
        run.writer.close()
    return RunResult(step=step, last_train=last_train, last_eval=last_eval, preempted=preempted,
                     budget=budget.summary())


def format_metrics(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in d.items() if isinstance(v, (int, float)))
