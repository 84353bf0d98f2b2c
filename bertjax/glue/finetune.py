"""GLUE fine-tuning and evaluation: `run(config, glue_dir, init_checkpoint, workdir)`.

For each task: read and tokenise the data once; then for every point of the (learning rate x
batch size) grid and every seed, fine-tune from the same initialisation, evaluating on dev as it
goes and keeping the best-on-dev parameters (early stopping with optional patience). A grid point
is scored by the median of its seeds' dev metric; the best point's medians are the task's
reported result, and its best-on-dev run writes the test-set submission.

Reading order: initialisation (checkpoint or random, tokenizer check) -> step functions ->
one run -> one task (grid, seeds, outputs) -> all tasks (summary).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bertjax import checkpoint
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.glue import data, metrics, report, tasks, transfer
from bertjax.models import bert

# Fields of config.model that also apply on top of a checkpoint's config: they change how the
# model runs, not its shapes. Everything else comes from the checkpoint.
RUNTIME_MODEL_FIELDS = ("hidden_dropout_rate", "attention_dropout_rate", "attention_impl",
                        "dtype", "remat")
MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "labels", "weights")


# --- Initialisation ---------------------------------------------------------------------------

@dataclasses.dataclass
class Init:
    """What every run of every task starts from."""
    model_config: bert.BertConfig
    bert_params: Any | None            # pretrained encoder ('bert' subtree), None = random init
    tokenizer: Any
    source: str                        # checkpoint path, or 'random'


def resolve_init(config: ml_collections.ConfigDict, init_checkpoint: str,
                 tokenizer_path: str = "") -> Init:
    """Loads the checkpoint (if any) and the tokenizer, and checks that they belong together."""
    tok_path = tokenizer_path or config.tokenizer
    if not tok_path:
        raise ValueError("no tokenizer: pass --tokenizer or set --config.tokenizer")
    tok = tokenizer_lib.load(tok_path)
    runtime = {k: config.model[k] for k in RUNTIME_MODEL_FIELDS}
    if init_checkpoint:
        params, cfg, identity, _ = checkpoint.load_pretrained(init_checkpoint)
        if "bert" not in params:
            raise ValueError(f"{init_checkpoint}: params have no 'bert' subtree (found "
                             f"{sorted(params)}); expected a bertjax pretraining checkpoint")
        _check_tokenizer_identity(tok, identity, init_checkpoint)
        tokenizer_lib.check_matches_model(tok, cfg.vocab_size)
        cfg = dataclasses.replace(cfg, **runtime)
        return Init(cfg, params["bert"], tok, str(init_checkpoint))
    model = dict(config.model.to_dict(), vocab_size=tok.vocab_size)
    return Init(bert.BertConfig.from_dict(model), None, tok, "random")


def _check_tokenizer_identity(tok, identity: Mapping, where: str) -> None:
    if not identity:
        logging.warning("%s records no tokenizer identity; only the vocabulary size is checked",
                        where)
        return
    mine = tok.identity()
    for key in ("sha256", "vocab_size"):
        if key in identity and identity[key] != mine.get(key):
            raise ValueError(
                f"tokenizer mismatch: {where} was pretrained with {identity.get('path', '?')} "
                f"({key}={identity[key]}), but the tokenizer given is {mine.get('path')} "
                f"({key}={mine.get(key)}). Pass the checkpoint's tokenizer with --tokenizer.")


def check_encoder_fits(param_shapes: Mapping, init: Init) -> None:
    """Compares shapes only (nothing materialised): a checkpoint that does not fit the model is
    an error before anything is compiled."""
    if init.bert_params is None:
        return
    expect = transfer.flatten(param_shapes["bert"])
    got = transfer.flatten(init.bert_params)
    bad = sorted(set(expect) ^ set(got)) or [
        k for k in expect if tuple(expect[k].shape) != tuple(np.shape(got[k]))]
    if bad:
        raise ValueError(f"checkpoint encoder does not fit the model: differing keys or "
                         f"shapes {bad[:5]} ({len(bad)} in all)")


def init_params(init_fn: Callable, init: Init, seed: int) -> dict:
    """Fresh parameters with the pretrained encoder (if any) put in. The classifier head, and
    the encoder of a random-init baseline, come from `seed`."""
    params = flax.core.unfreeze(init_fn(jax.random.PRNGKey(seed)))
    if init.bert_params is not None:
        params["bert"] = jax.tree_util.tree_map(jnp.asarray, init.bert_params)
    return params


# --- Optimizer and step functions -------------------------------------------------------------

def make_optimizer(o: ml_collections.ConfigDict,
                   trainable: Mapping) -> optax.GradientTransformation:
    """AdamW as in BERT (clip 1.0, decay mask), *without* the learning rate: train_step scales
    the update by a learning rate passed in each step, so one compiled step serves every
    learning rate and schedule of the grid."""
    parts = [optax.clip_by_global_norm(o.grad_clip_norm)] if o.grad_clip_norm > 0 else []
    parts += [optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
              optax.add_decayed_weights(o.weight_decay, transfer.weight_decay_mask(trainable))]
    return optax.chain(*parts)


def learning_rate(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """BERT's schedule: linear warmup from 0, then linear decay to 0 at total_steps."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict          # the trainable parameters only (flat {path: array})
    opt_state: Any
    rng: jax.Array


def _loss(trainable, frozen, batch, rng, *, model, regression: bool):
    out = model.apply({"params": transfer.merge_params(trainable, frozen)},
                      batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                      deterministic=False, rngs={"dropout": rng})
    out = out.astype(jnp.float32)
    if regression:
        per_example = jnp.square(out - batch["labels"])
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(out, batch["labels"])
    # Weighted, because a bucket's last batch is padded with zero-weight rows.
    w = batch["weights"]
    return jnp.sum(per_example * w) / jnp.maximum(jnp.sum(w), 1.0)


def train_step(state: TrainState, frozen, batch, lr, *, model, tx, regression: bool):
    rng = jax.random.fold_in(state.rng, state.step)
    loss, grads = jax.value_and_grad(_loss)(state.params, frozen, batch, rng, model=model,
                                            regression=regression)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree_util.tree_map(lambda p, u: (p - lr * u).astype(p.dtype),
                                    state.params, updates)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def eval_step(trainable, frozen, batch, *, model):
    return model.apply({"params": transfer.merge_params(trainable, frozen)},
                       batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                       deterministic=True).astype(jnp.float32)


@dataclasses.dataclass
class Compiled:
    """A task's model, optimizer and jitted steps, shared by all its runs."""
    model: Any
    init_fn: Callable                  # rng -> a fresh parameter tree
    predicate: Callable[[str], bool]
    tx: optax.GradientTransformation
    train: Callable
    eval: Callable
    mesh: Mesh
    seen_shapes: set = dataclasses.field(default_factory=set)

    def put_batch(self, batch: dict) -> dict:
        sharding = NamedSharding(self.mesh, P("data"))
        return {k: jax.device_put(batch[k], sharding) for k in MODEL_INPUTS}

    def put_replicated(self, tree):
        return jax.device_put(tree, NamedSharding(self.mesh, P()))


def compile_task(config, spec: tasks.TaskSpec, init: Init) -> Compiled:
    model = transfer.build_model(config.mode, init.model_config, spec.num_labels,
                                 feature_hidden=config.feature_hidden,
                                 feature_dropout=config.model.hidden_dropout_rate)
    predicate = transfer.trainable_predicate(config.mode, init.model_config,
                                             config.trainable_layers)
    ids = jnp.zeros((1, 8), jnp.int32)
    init_fn = jax.jit(lambda rng: model.init(rng, ids, ids, ids)["params"])
    shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    check_encoder_fits(shapes, init)
    trainable_shapes, _ = transfer.split_params(shapes, predicate)
    tx = make_optimizer(config.optim, trainable_shapes)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    train = jax.jit(functools.partial(train_step, model=model, tx=tx,
                                      regression=spec.is_regression), donate_argnums=0)
    evaluate = jax.jit(functools.partial(eval_step, model=model))
    return Compiled(model, init_fn, predicate, tx, train, evaluate, mesh)


def create_state(comp: Compiled, init: Init, seed: int) -> tuple[TrainState, dict]:
    """(train state over the trainable parameters, frozen parameters), both on the mesh."""
    trainable, frozen = transfer.split_params(init_params(comp.init_fn, init, seed),
                                              comp.predicate)
    trainable, frozen = comp.put_replicated(trainable), comp.put_replicated(frozen)
    state = TrainState(step=comp.put_replicated(jnp.zeros((), jnp.int32)), params=trainable,
                       opt_state=comp.put_replicated(comp.tx.init(trainable)),
                       rng=comp.put_replicated(jax.random.PRNGKey(seed + 1_000_003)))
    return state, frozen


# --- One run: a (learning rate, batch size, seed) --------------------------------------------

@dataclasses.dataclass
class TaskInputs:
    spec: tasks.TaskSpec
    train: data.Encoded
    dev: dict[str, data.Encoded]
    test: dict[str, data.Encoded]
    test_splits: dict[str, tasks.Split]
    buckets: tuple[int, ...]
    subsampled: bool = False          # train or dev cut by max_train/eval_examples


class _Timer:
    """Wall time of steps whose shape was already compiled: a step with a new shape is timed
    alone (blocking before and after) and left out, so examples/s measures steady state."""

    def __init__(self, seen: set):
        self.seen, self.excluded, self.examples, self.start = seen, 0.0, 0.0, None

    def before(self, key, pending) -> bool:
        if self.start is None:
            jax.block_until_ready(pending)
            self.start = time.perf_counter()
        if key in self.seen:
            return False
        jax.block_until_ready(pending)
        self._t = time.perf_counter()
        return True

    def after(self, key, new: bool, out, examples: float):
        if new:
            jax.block_until_ready(out)
            self.excluded += time.perf_counter() - self._t
            self.seen.add(key)
        else:
            self.examples += examples

    def rate(self, pending) -> float | None:
        if self.start is None:
            return None
        jax.block_until_ready(pending)
        elapsed = time.perf_counter() - self.start - self.excluded
        return self.examples / elapsed if self.examples and elapsed > 0 else None


def predict(comp: Compiled, trainable, frozen, enc: data.Encoded, batch_size: int,
            buckets) -> tuple[np.ndarray, float | None]:
    """Model outputs for every example of `enc` (logits [n, C], or scores [n]) and examples/s."""
    timer = _Timer(comp.seen_shapes)
    pending = []
    for rows, length in data.batch_plan(enc, batch_size, buckets):
        b = data.make_batch(enc, rows, batch_size, length)
        key = ("eval", batch_size, length)
        new = timer.before(key, pending[-1][1] if pending else trainable)
        out = comp.eval(trainable, frozen, comp.put_batch(b))
        timer.after(key, new, out, float(len(rows)))
        pending.append((rows, out))
    rate = timer.rate(pending[-1][1] if pending else trainable)
    outs = [(rows, np.asarray(o)[:len(rows)]) for rows, o in pending]
    shape = (len(enc),) + (outs[0][1].shape[1:] if outs else ())
    result = np.zeros(shape, np.float32)
    for rows, o in outs:
        result[rows] = o
    return result, rate


def decide(spec: tasks.TaskSpec, outputs: np.ndarray) -> np.ndarray:
    """Model outputs -> predicted class indices (or regression scores)."""
    return outputs if spec.is_regression else outputs.argmax(-1)


def evaluate_dev(comp, spec, trainable, frozen, inputs: TaskInputs, batch_size):
    labels, preds, rates = {}, {}, []
    for suffix, enc in inputs.dev.items():
        out, rate = predict(comp, trainable, frozen, enc, batch_size, inputs.buckets)
        labels[suffix], preds[suffix] = enc.labels, decide(spec, out)
        rates.append(rate)
    return metrics.task_metrics(spec, labels, preds), rates


def run_one(config, comp: Compiled, init: Init, inputs: TaskInputs, *, lr: float,
            batch_size: int, seed: int, log_path: pathlib.Path) -> dict:
    """Fine-tunes once; returns dev metrics (best and final), test predictions and speed."""
    spec = inputs.spec
    state, frozen = create_state(comp, init, seed)

    per_epoch = data.steps_per_epoch(inputs.train, batch_size, inputs.buckets)
    total = per_epoch * config.epochs
    if config.max_steps > 0:
        total = min(total, config.max_steps)
    warmup = int(config.warmup_fraction * total)
    eval_every = config.eval_every if config.eval_every > 0 else per_epoch
    rng = np.random.default_rng(seed)
    timer = _Timer(comp.seen_shapes)
    best, history, bad_evals, stopped_early, step = None, [], 0, False, 0
    last_metrics, last_loss, eval_rates = None, None, []
    log = open(log_path, "w", encoding="utf-8")

    def do_eval():
        nonlocal best, bad_evals, last_metrics
        m, rates = evaluate_dev(comp, spec, state.params, frozen, inputs, config.eval_batch_size)
        eval_rates.extend(r for r in rates if r)
        last_metrics = m
        improved = best is None or m[spec.primary] > best["metrics"][spec.primary]
        if improved:
            best = {"step": step, "metrics": m, "params": jax.device_get(state.params)}
            bad_evals = 0
        else:
            bad_evals += 1
        rec = {"step": step, "dev": m, "best": improved}
        history.append(rec)
        log.write(json.dumps(rec) + "\n")
        return config.early_stopping_patience > 0 and bad_evals >= config.early_stopping_patience

    try:
        while step < total and not stopped_early:
            for rows, length in data.batch_plan(inputs.train, batch_size, inputs.buckets, rng):
                b = data.make_batch(inputs.train, rows, batch_size, length)
                key = ("train", batch_size, length)
                new = timer.before(key, state.step)
                lr_now = np.float32(learning_rate(step, lr, warmup, total))
                state, out = comp.train(state, frozen, comp.put_batch(b), lr_now)
                timer.after(key, new, state.step, float(len(rows)))
                step += 1
                if step % config.log_every == 0 or step == total:
                    last_loss = float(out["loss"])
                    log.write(json.dumps({"step": step, "loss": last_loss, "lr": float(lr_now),
                                          "grad_norm": float(out["grad_norm"])}) + "\n")
                    if not np.isfinite(last_loss):
                        raise FloatingPointError(
                            f"{spec.name} lr={lr} batch={batch_size} seed={seed}: loss is "
                            f"{last_loss} at step {step}")
                if step % eval_every == 0 or step == total:
                    # Evaluation time is not training time: leave it out of examples/s.
                    jax.block_until_ready(state.step)
                    t_eval = time.perf_counter()
                    stopped_early = do_eval()
                    timer.excluded += time.perf_counter() - t_eval
                    if stopped_early:
                        break
                if step >= total:
                    break
        train_rate = timer.rate(state.step)
    finally:
        log.close()

    best_params = comp.put_replicated(best["params"])
    test_preds, test_rates = {}, []
    if config.predict_test:
        for name, enc in inputs.test.items():
            out, rate = predict(comp, best_params, frozen, enc, config.eval_batch_size,
                                inputs.buckets)
            test_preds[name] = decide(spec, out)
            test_rates.append(rate)
    eval_rates += [r for r in test_rates if r]
    return {
        "learning_rate": lr, "batch_size": batch_size, "seed": seed,
        "steps": step, "total_steps": total, "warmup_steps": warmup, "steps_per_epoch": per_epoch,
        "stopped_early": stopped_early, "best_step": best["step"],
        "dev": best["metrics"], "dev_final": last_metrics, "train_loss_last": last_loss,
        "history": history,
        "train_examples_per_s": train_rate,
        "eval_examples_per_s": float(np.median(eval_rates)) if eval_rates else None,
        "test_predictions": test_preds,
    }


# --- One task: grid x seeds, selection, outputs -----------------------------------------------

def seeds_for(config, spec: tasks.TaskSpec) -> list[int]:
    n = config.num_seeds_large if spec.large else config.num_seeds
    return [config.seed + i for i in range(n)]


def prepare_inputs(config, spec: tasks.TaskSpec, task_data: tasks.TaskData, tok) -> TaskInputs:
    buckets = data.bucket_lengths(config.buckets, config.max_seq_length)
    train, dev, cut = task_data.train, dict(task_data.dev), False
    if 0 < config.max_train_examples < len(train):
        train, cut = _subsample(train, config.max_train_examples), True
    for k, v in dev.items():
        if 0 < config.max_eval_examples < len(v):
            dev[k], cut = _subsample(v, config.max_eval_examples), True
    enc = lambda s: data.encode_split(s, tok, config.max_seq_length)  # noqa: E731
    inputs = TaskInputs(spec, enc(train), {k: enc(v) for k, v in dev.items()},
                        {k: enc(v) for k, v in task_data.test.items()}, task_data.test, buckets,
                        subsampled=cut)
    for where, e in [("train", inputs.train), *inputs.dev.items(), *inputs.test.items()]:
        bert.check_token_ids(e.tokens, tok.vocab_size, where=f"{spec.name} {where or 'dev'} ids")
    for split, e in [(train, inputs.train), *[(dev[k], e) for k, e in inputs.dev.items()]]:
        if len(e) == 0:
            raise ValueError(f"{split.path}: no examples; fine-tuning needs labelled rows")
    return inputs


def _subsample(split: tasks.Split, n: int) -> tasks.Split:
    # A fixed random subset (seed 0), the same for every run, for smoke tests and quick looks.
    rows = np.sort(np.random.default_rng(0).permutation(len(split))[:n])
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    return tasks.Split(split.path, pick(split.text_a),
                       pick(split.text_b) if split.text_b is not None else None,
                       split.labels[rows] if split.labels is not None else None, pick(split.ids))


def _run_name(lr, bs, seed) -> str:
    return f"lr{lr:g}_bs{bs}_seed{seed}"


def config_fingerprint(config, init: Init) -> str:
    """What makes results comparable: the task config, the init and the tokenizer."""
    blob = json.dumps({"config": config.to_dict(), "init": init.source,
                       "tokenizer": init.tokenizer.identity().get("sha256")},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finetune_task(config, spec: tasks.TaskSpec, task_data: tasks.TaskData, init: Init,
                  workdir: pathlib.Path) -> dict:
    """Runs the grid and seeds for one task; writes <workdir>/<task>/results.json and the
    submission files. Runs already finished under the same config are reused, not repeated."""
    task_dir = workdir / spec.name
    fingerprint = config_fingerprint(config, init)
    results_path = task_dir / "results.json"
    if results_path.exists():
        old = json.loads(results_path.read_text())
        if old.get("fingerprint") != fingerprint:
            raise FileExistsError(
                f"{results_path} holds results from a different config or init "
                f"({old.get('fingerprint')} != {fingerprint}); use a new --workdir")
        logging.info("%s: results exist in %s; reusing them", spec.name, results_path)
        return old
    inputs = prepare_inputs(config, spec, task_data, init.tokenizer)
    comp = compile_task(config, spec, init)
    (task_dir / "runs").mkdir(parents=True, exist_ok=True)
    seeds = seeds_for(config, spec)
    runs = []
    for bs in config.batch_sizes:
        for lr in config.learning_rates:
            for seed in seeds:
                runs.append(_run_or_reuse(config, comp, init, inputs, task_dir, fingerprint,
                                          lr=lr, batch_size=bs, seed=seed))

    grid, chosen, median, sub_run = select(runs, spec.primary)
    chosen_runs = [r for r in runs if _at(r, chosen)]
    files = []
    if config.predict_test:
        preds = np.load(task_dir / "runs" / f"{sub_run['name']}.test.npz")
        for name, split in inputs.test_splits.items():
            files.append(str(report.write_submission(
                spec, name, split.ids, preds[name], workdir / "submission")))

    rates = lambda k: [r[k] for r in runs if r.get(k)]  # noqa: E731
    results = {
        "task": spec.name, "primary": spec.primary, "metrics": median,
        "metrics_note": f"median over {len(chosen_runs)} seed(s) at the chosen grid point; "
                        "each run's dev metrics are taken at its best dev evaluation",
        "selected": {"learning_rate": chosen["learning_rate"],
                     "batch_size": chosen["batch_size"]},
        "grid": grid, "seeds": seeds, "submission_run": sub_run["name"],
        "submission_files": files, "mode": config.mode,
        "init": init.source, "tokenizer": init.tokenizer.identity(),
        "model": init.model_config.to_dict(),
        "examples": {"train": len(inputs.train), **{f"dev{('_' + k) if k else ''}": len(v)
                                                     for k, v in inputs.dev.items()},
                     **{f"test_{k}": len(v) for k, v in inputs.test.items()}},
        "subsampled": inputs.subsampled,
        "truncated_train_examples": inputs.train.truncated,
        "buckets": list(inputs.buckets), "devices": jax.device_count(),
        "train_examples_per_s": float(np.median(rates("train_examples_per_s")))
        if rates("train_examples_per_s") else None,
        "eval_examples_per_s": float(np.median(rates("eval_examples_per_s")))
        if rates("eval_examples_per_s") else None,
        "notes": task_data.notes,
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
        "config": config.to_dict(), "fingerprint": fingerprint,
    }
    _write_json(results_path, results)
    return results


def _at(run: Mapping, point: Mapping) -> bool:
    return (run["learning_rate"] == point["learning_rate"]
            and run["batch_size"] == point["batch_size"])


def select(runs: list[Mapping], primary: str):
    """Best-on-dev selection over the grid. A grid point scores the median over its seeds of
    the primary dev metric; the best point's per-metric medians are the reported result. The
    submission run is that point's best seed on dev (BERT: "several random restarts ...
    selected the best model on the Dev set"). -> (grid, chosen point, medians, submission run)
    """
    points = list(dict.fromkeys((r["learning_rate"], r["batch_size"]) for r in runs))
    grid = []
    for lr, bs in points:
        mine = [r for r in runs if r["learning_rate"] == lr and r["batch_size"] == bs]
        grid.append({"learning_rate": lr, "batch_size": bs, "seeds": len(mine),
                     f"median_dev_{primary}": float(np.median([r["dev"][primary]
                                                               for r in mine]))})
    chosen = max(grid, key=lambda g: g[f"median_dev_{primary}"])  # first of equals wins
    mine = [r for r in runs if _at(r, chosen)]
    median = {k: float(np.median([r["dev"][k] for r in mine])) for k in mine[0]["dev"]}
    return grid, chosen, median, max(mine, key=lambda r: r["dev"][primary])


def _run_or_reuse(config, comp, init, inputs, task_dir, fingerprint, *, lr, batch_size, seed):
    name = _run_name(lr, batch_size, seed)
    path = task_dir / "runs" / f"{name}.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("fingerprint") == fingerprint:
            logging.info("%s %s: done earlier; reusing %s", inputs.spec.name, name, path)
            return old
        raise FileExistsError(f"{path} is from a different config or init; use a new --workdir")
    logging.info("%s %s: fine-tuning", inputs.spec.name, name)
    t0 = time.perf_counter()
    r = run_one(config, comp, init, inputs, lr=lr, batch_size=batch_size, seed=seed,
                log_path=task_dir / "runs" / f"{name}.log.jsonl")
    preds = r.pop("test_predictions")
    np.savez(task_dir / "runs" / f"{name}.test.npz", **preds)
    r.update(name=name, fingerprint=fingerprint, wall_s=time.perf_counter() - t0)
    _write_json(path, r)
    logging.info("%s %s: dev %s (best step %d of %d), %.1f train examples/s", inputs.spec.name,
                 name, r["dev"], r["best_step"], r["steps"], r["train_examples_per_s"] or 0)
    return r


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    tmp.replace(path)  # atomic: a crash never leaves half a results file


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (tuple, set)):
        return list(x)
    raise TypeError(f"cannot write {type(x)} to JSON")


# --- All tasks --------------------------------------------------------------------------------

def validate_config(config) -> None:
    """Cheap checks of the whole config, before any data is read or anything compiled."""
    n = jax.device_count()
    if jax.process_count() > 1:
        raise NotImplementedError("GLUE fine-tuning runs on one host (all its local devices)")
    if config.task != "all":
        tasks.get_task(config.task)
    if config.mode not in transfer.MODES:
        raise ValueError(f"config.mode={config.mode!r}: expected one of {transfer.MODES}")
    if config.source not in ("tsv", "tfds"):
        raise ValueError(f"config.source={config.source!r}: expected 'tsv' or 'tfds'")
    if not config.learning_rates or min(config.learning_rates) <= 0:
        raise ValueError(f"config.learning_rates={config.learning_rates}: expected positive "
                         "values")
    for key, values in [("batch_sizes", config.batch_sizes),
                        ("eval_batch_size", [config.eval_batch_size])]:
        if not values or any(b <= 0 or b % n for b in values):
            raise ValueError(f"config.{key}={values}: each must be a positive multiple of the "
                             f"{n} devices (the batch is split evenly over them)")
    if config.epochs < 1:
        raise ValueError(f"config.epochs={config.epochs}: expected >= 1")
    if config.num_seeds < 1 or config.num_seeds_large < 1:
        raise ValueError("config.num_seeds and config.num_seeds_large must be >= 1")
    if not 0 <= config.warmup_fraction < 1:
        raise ValueError(f"config.warmup_fraction={config.warmup_fraction}: expected [0, 1)")
    if config.max_seq_length < 8:
        raise ValueError(f"config.max_seq_length={config.max_seq_length}: expected >= 8")


def run(config: ml_collections.ConfigDict, glue_dir: str, init_checkpoint: str, workdir: str,
        tokenizer_path: str = "") -> dict:
    """Fine-tunes and evaluates config.task (or every task found, for 'all'); writes per-task
    results, submission files and a summary under workdir. Returns the summary dict."""
    validate_config(config)
    workdir = pathlib.Path(workdir)
    names = list(tasks.TASK_NAMES) if config.task == "all" else [tasks.get_task(config.task).name]
    specs = [tasks.get_task(n) for n in names]

    # Find the data before loading a model: a missing task is a message, not a crash later.
    skipped, found = {}, []
    for spec in specs:
        missing = [] if config.source == "tfds" else tasks.task_files_missing(spec, glue_dir)
        if not missing:
            found.append(spec)
        elif config.task != "all":
            raise FileNotFoundError(f"GLUE {spec.name}: missing {missing} under --glue_dir")
        elif not (pathlib.Path(glue_dir) / spec.folder).is_dir():
            skipped[spec.name] = f"directory {spec.folder}/ absent from {glue_dir}"
        else:
            skipped[spec.name] = "missing " + ", ".join(pathlib.Path(m).name for m in missing)
    if not found:
        raise FileNotFoundError(f"no GLUE task found under {glue_dir} (looked for "
                                f"{[s.folder for s in specs]})")
    for name, why in skipped.items():
        logging.warning("skipping %s: %s", name, why)

    init = resolve_init(config, init_checkpoint, tokenizer_path)
    # The transfer mode must suit the model (e.g. partial needs unrolled layers): say so now.
    transfer.trainable_predicate(config.mode, init.model_config, config.trainable_layers)
    # Read every file of every task (cheap next to training) before fine-tuning anything: a
    # malformed row in MNLI is an error now, not after CoLA and SST-2 have trained.
    loaded = {spec.name: (tasks.load_task_tfds(spec, glue_dir or None)
                          if config.source == "tfds" else tasks.load_task(spec, glue_dir))
              for spec in found}
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in found:
        task_config = ml_collections.ConfigDict(config.to_dict())
        task_config.task = spec.name
        results[spec.name] = finetune_task(task_config, spec, loaded.pop(spec.name), init,
                                           workdir)
    return report.write_summary(workdir, results, skipped)
