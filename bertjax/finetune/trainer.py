"""One fine-tuning run, for every task kind: the train state, the step functions and the loop.

`FineTuner(config, init, inputs, batch_size)` builds what every run of one task at one batch
size shares, from the same pieces as pretraining: the model (the task kind's head, see
kinds.py), the optimizer (optim.make_optimizer,
BERT's AdamW with linear warmup and decay; the peak learning rate lives in the optimizer state,
so one compiled step serves every learning rate of the grid) and the data-parallel steps
(parallel.DataParallel: every device of every host, sharded jit or pmap).
`FineTuner.run(lr=..., seed=..., log_dir=...)` then fine-tunes once from fresh parameters,
evaluating on dev as it goes (the kind decodes outputs and scores them) and keeping the
best-on-dev parameters and what the kind keeps of that evaluation (SQuAD: its predictions;
early stopping with optional patience), and predicts the test sets with them. Logs go to
<log_dir>/metrics.jsonl and <log_dir>/tensorboard (metrics.MetricWriter) as they happen; a progress bar shows the run.
"""
from __future__ import annotations

import functools
import itertools

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from bertjax import optim, parallel
from bertjax import metrics as metrics_lib
from bertjax.finetune import batching, kinds, pretrained, transfer

# The dropout key of a run with seed s; apart from the head's initialisation key (s).
_DROPOUT_SEED_OFFSET = 1_000_003


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict          # the trainable parameters (flat {path: array}): the gradient's argument
    frozen: dict          # the others (flat), passed through the step unchanged
    opt_state: optax.OptState
    rng: jax.Array        # step k's dropout key is fold_in(rng, k)


def _outputs(params, frozen, batch, *, model, deterministic: bool, collectives, rng=None):
    # FSDP: sharded storage -> the layout the model runs in (identity otherwise).
    tree = collectives.params_for_compute(transfer.merge_params(params, frozen))
    out = model.apply({"params": tree}, batch["input_ids"], batch["segment_ids"],
                      batch["input_mask"], deterministic=deterministic,
                      rngs=None if deterministic else {"dropout": rng})
    return out.astype(jnp.float32)


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, loss_fn,
               collectives: parallel.Collectives = parallel.ONE_DEVICE):
    """One update on one global batch. The loss is averaged over the real examples of the whole
    global batch (a bucket's last batch is padded with zero-weight rows), so one device, jit
    over a mesh and pmap (summed over the devices by `collectives`) compute the same gradient.
    `loss_fn(outputs, batch, total_weight)` is the task kind's."""
    rng = collectives.per_device_rng(jax.random.fold_in(state.rng, state.step))
    total_weight = collectives.sum(jnp.sum(batch["weights"]))

    def objective(params):
        out = _outputs(params, state.frozen, batch, model=model, deterministic=False, rng=rng,
                       collectives=collectives)
        return loss_fn(out, batch, total_weight)

    loss, grads = collectives.sum(jax.value_and_grad(objective)(state.params))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {"loss": loss, "grad_norm": optax.global_norm(grads),
           "learning_rate": schedule(state.step, optim.peak_learning_rate(state.opt_state))}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out


def eval_step(state: TrainState, batch: dict, *, model,
              collectives: parallel.Collectives = parallel.ONE_DEVICE):
    """Model outputs (GLUE: logits [B, C] or scores [B]; SQuAD: [B, L, 2]) for the whole global
    batch, on every host."""
    out = _outputs(state.params, state.frozen, batch, model=model, deterministic=True,
                   collectives=collectives)
    return collectives.gather(out)


class FineTuner:
    """A task's model, optimizer and compiled steps at one batch size, shared by its runs."""

    def __init__(self, config: ml_collections.ConfigDict, init: pretrained.Init,
                 inputs, batch_size: int, *, kind=None, mesh=None):
        self.config, self.init, self.inputs, self.batch_size = config, init, inputs, batch_size
        spec = inputs.spec
        self.kind = kind or kinds.kind_of(spec)
        self.model = self.kind.build_model(config, init.model_config, spec)
        self.predicate = transfer.trainable_predicate(config.mode, init.model_config,
                                                      config.trainable_layers)
        ids = jnp.zeros((1, 8), jnp.int32)
        self._init_fn = jax.jit(lambda rng: self.model.init(rng, ids, ids, ids)["params"])
        shapes = jax.eval_shape(self._init_fn, jax.random.PRNGKey(0))
        pretrained.check_encoder_fits(shapes, init)

        self.steps_per_epoch = batching.steps_per_epoch(inputs.train, batch_size,
                                                        inputs.buckets)
        self.total_steps = self.steps_per_epoch * config.epochs
        if config.max_steps > 0:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.warmup_steps = int(config.warmup_fraction * self.total_steps)
        optim_cfg = ml_collections.ConfigDict(dict(
            config.optim.to_dict(), learning_rate=max(config.learning_rates),
            warmup_steps=self.warmup_steps))
        self.tx, schedule = optim.make_optimizer(optim_cfg, self.total_steps,
                                                 peak_lr_in_state=True)
        abstract = jax.eval_shape(lambda p: self._state(p, jnp.float32(0), 0), shapes)
        self.dp = parallel.DataParallel(
            config.parallel.mode,
            functools.partial(train_step, model=self.model, tx=self.tx, schedule=schedule,
                              loss_fn=self.kind.loss_fn(spec)),
            abstract, fsdp=config.parallel.fsdp,
            eval_fn=functools.partial(eval_step, model=self.model), mesh=mesh)
        self.seen: set = set()  # shapes compiled already, for the timers of every run

    def _state(self, params, lr, seed) -> TrainState:
        trainable, frozen = transfer.split_params(params, self.predicate)
        return TrainState(step=jnp.zeros((), jnp.int32), params=trainable, frozen=frozen,
                          opt_state=optim.set_peak_learning_rate(self.tx.init(trainable), lr),
                          rng=jax.random.PRNGKey(seed + _DROPOUT_SEED_OFFSET))

    def create_state(self, seed: int, lr: float) -> TrainState:
        """Fresh parameters (the pretrained encoder, if any, put in; the classifier head, and
        the encoder of a random-init baseline, from `seed`), on the devices. They are this
        run's own buffers: the train step donates them."""
        params = flax.core.unfreeze(self._init_fn(jax.random.PRNGKey(seed)))
        if self.init.bert_params is not None:
            params["bert"] = self.init.bert_params
        return self.dp.put_state(self._state(params, lr, seed))

    def put_batch(self, batch: dict):
        """The global batch -> this host's rows on its devices."""
        n = len(batch["weights"]) // jax.process_count()
        rows = slice(jax.process_index() * n, (jax.process_index() + 1) * n)
        return self.dp.put_batch({k: batch[k][rows] for k in self.kind.model_inputs})

    def predict(self, state, enc, timer: metrics_lib.StepTimer) -> np.ndarray:
        """Model outputs for every row of the features `enc` ([n, ...]; outputs that follow the
        sequence, e.g. SQuAD's [n, L, 2], are padded with zeros to the longest bucket used)."""
        bs, pending = self.config.eval_batch_size, []
        for rows, length in batching.batch_plan(enc, bs, self.inputs.buckets):
            batch = self.put_batch(enc.batch(rows, bs, length))
            pending.append((rows, timer.step(("eval", length),
                                             lambda: self.dp.eval(state, batch), len(rows))))
        timer.stop()  # the last batches' time belongs to evaluation
        if not pending:
            return np.zeros((0,), np.float32)
        # Fetched only now, so the devices never wait for the host between batches.
        outs = [(rows, np.asarray(self.dp.metrics_to_host(out))[:len(rows)])
                for rows, out in pending]
        shape = tuple(np.max([out.shape[1:] for _, out in outs], axis=0))
        result = np.zeros((len(enc),) + shape, np.float32)
        for rows, out in outs:
            result[(rows,) + tuple(slice(0, n) for n in out.shape[1:])] = out
        return result

    def evaluate_dev(self, state, timer) -> tuple[dict, object]:
        """-> (dev metrics, what the kind keeps of this evaluation if it is the best)."""
        outputs = {suffix: self.predict(state, enc, timer)
                   for suffix, enc in self.inputs.dev.items()}
        return self.kind.evaluate(self.inputs.spec, self.inputs, outputs)

    def run(self, *, lr: float, seed: int, log_dir, name: str = "") -> dict:
        """Fine-tunes once; returns dev metrics (best and final), test predictions and speed."""
        config, inputs, spec = self.config, self.inputs, self.inputs.spec
        total, primary = self.total_steps, spec.primary
        eval_every = config.eval_every if config.eval_every > 0 else self.steps_per_epoch
        state = self.create_state(seed, lr)
        rng = np.random.default_rng(seed)
        plan = itertools.chain.from_iterable(
            batching.batch_plan(inputs.train, self.batch_size, inputs.buckets, rng)
            for _ in itertools.count())
        train_timer = metrics_lib.StepTimer(self.seen)
        eval_timer = metrics_lib.StepTimer(self.seen)
        best, history, bad_evals, stopped_early = None, [], 0, False
        last_dev = last_loss = None
        writer = metrics_lib.MetricWriter(str(log_dir))
        bar = tqdm(total=total, desc=f"{spec.name} {name}".strip(), unit="step",
                   dynamic_ncols=True, disable=jax.process_index() != 0)
        try:
            for step, (rows, length) in zip(range(1, total + 1), plan):
                batch = self.put_batch(inputs.train.batch(rows, self.batch_size, length))
                state, out = train_timer.step(("train", self.batch_size, length),
                                              lambda: self.dp.step(state, batch), len(rows))
                bar.update(1)
                if step % config.log_every == 0 or step == total:
                    out = self.dp.metrics_to_host(out)
                    last_loss = float(out["loss"])
                    writer.write(step, "train", out)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    if not np.isfinite(last_loss):
                        raise FloatingPointError(
                            f"{spec.name} lr={lr} batch={self.batch_size} seed={seed}: loss is "
                            f"{last_loss} at step {step}")
                if step % eval_every == 0 or step == total:
                    with train_timer.paused():  # evaluation is not training time
                        last_dev, kept = self.evaluate_dev(state, eval_timer)
                    improved = best is None or last_dev[primary] > best["metrics"][primary]
                    if improved:
                        best = {"step": step, "metrics": last_dev, "kept": kept,
                                "params": jax.device_get(self.dp.get_state(state).params)}
                    bad_evals = 0 if improved else bad_evals + 1
                    history.append({"step": step, "dev": last_dev, "best": improved})
                    writer.write(step, "dev", dict(last_dev, best=improved))
                    stopped_early = 0 < config.early_stopping_patience <= bad_evals
                    if stopped_early:
                        break
        finally:
            bar.close()
            writer.close()
        train_rate = train_timer.rate()

        test_preds = {}
        if config.predict_test:
            best_state = self.dp.put_state(self.dp.get_state(state).replace(params=best["params"]))
            test_preds = self.kind.test_predictions(
                spec, {name: self.predict(best_state, enc, eval_timer)
                       for name, enc in inputs.test.items()})
        return {
            "learning_rate": lr, "batch_size": self.batch_size, "seed": seed,
            "steps": step, "total_steps": total, "warmup_steps": self.warmup_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "stopped_early": stopped_early, "best_step": best["step"],
            "dev": best["metrics"], "dev_final": last_dev, "train_loss_last": last_loss,
            "history": history,
            "train_examples_per_s": train_rate, "eval_examples_per_s": eval_timer.rate(),
            "compile_s": train_timer.compile_s + eval_timer.compile_s,
            "test_predictions": test_preds, "kept": best["kept"],
        }
