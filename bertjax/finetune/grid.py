"""Fine-tuning over tasks, a (learning rate x batch size) grid and seeds, for every task kind:
`run(config, data_dir, init_checkpoint, workdir)`.

For each task (GLUE's, SQuAD, ...; kinds.py says which kind serves it): read and tokenise the
data once; then for every point of the grid and every
seed, fine-tune from the same initialisation (trainer.FineTuner, one per batch size). A grid
point is scored by the median of its seeds' dev metric; the best point's medians are the task's
reported result, and its best-on-dev run writes the test-set submission (GLUE) or has its
dev predictions copied to <workdir>/<task>/ (SQuAD's predictions.json, ...). Finished runs are
cached under <workdir>/<task>/runs/ and reused when the same config runs again.

Reading order: selection -> one task (grid, seeds, cache, outputs) -> config checks -> all tasks.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time
from typing import Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from bertjax import dir_lock, optim, parallel, records
from bertjax.finetune import kinds, pretrained, report, trainer, transfer
from bertjax.finetune.glue import tasks


def seeds_for(config, spec) -> list[int]:
    n = config.num_seeds_large if spec.large else config.num_seeds
    return [config.seed + i for i in range(n)]


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


# --- One task ---------------------------------------------------------------------------------

def run_name(lr, bs, seed) -> str:
    return f"lr{lr:g}_bs{bs}_seed{seed}"


def config_fingerprint(config, init: pretrained.Init) -> str:
    """What makes results comparable: the task config, the init and the tokenizer."""
    fields = config.to_dict()
    if fields.get("head") == "linear" and kinds.find(config.task)[0] in (kinds.GLUE, kinds.OWN):
        # GLUE and own-data configs gained `head`/`lstm_hidden` with issue 20; the linear head
        # is the model they ran before, so its fingerprint stays what it was (finished runs
        # stay cached, and an existing workdir is not refused as "a different config").
        fields.pop("head")
        fields.pop("lstm_hidden", None)
    blob = json.dumps({"config": fields, "init": init.source,
                       "tokenizer": init.tokenizer.identity().get("sha256")},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_main() -> bool:
    return jax.process_index() == 0  # one host writes; all read (shared storage)


def finetune_task(config, spec, task_data, init: pretrained.Init, workdir: pathlib.Path,
                  kind=None) -> dict:
    """Runs the grid and seeds for one task; writes <workdir>/<task>/results.json and the
    submission files. Runs already finished under the same config are reused, not repeated."""
    kind = kind or kinds.kind_of(spec)
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
    inputs = kind.prepare(config, spec, task_data, init.tokenizer)
    seeds = seeds_for(config, spec)
    runs = []
    for bs in config.batch_sizes:
        tuner = None  # built on first need: nothing compiles when every run is cached
        for lr in config.learning_rates:
            for seed in seeds:
                run_dir = task_dir / "runs" / run_name(lr, bs, seed)
                r = _cached_run(run_dir, fingerprint)
                if r is None:
                    tuner = tuner or trainer.FineTuner(config, init, inputs, bs, kind=kind)
                    r = _run(tuner, run_dir, fingerprint, lr=lr, seed=seed)
                runs.append(r)

    # The prepared spec: a kind may only know its primary metric once the data is read
    # (custom: accuracy, or spearman for regression); GLUE's and SQuAD's are the same spec.
    primary = inputs.spec.primary
    grid, chosen, median, sub_run = select(runs, primary)
    chosen_runs = [r for r in runs if _at(r, chosen)]
    files, test = [], None
    if config.predict_test:
        preds = np.load(task_dir / "runs" / sub_run["name"] / "test_predictions.npz")
        files = kind.write_submission(spec, inputs, preds, workdir, write=_is_main())
        if hasattr(kind, "test_metrics"):  # a kind whose test sets are labelled (CoNLL)
            test = kind.test_metrics(inputs, preds)
    for name in sub_run.get("artifact_files", []):  # the best run's predictions, one level up
        if _is_main():
            shutil.copyfile(task_dir / "runs" / sub_run["name"] / name, task_dir / name)
        files.append(str(task_dir / name))

    rates = lambda k: [r[k] for r in runs if r.get(k)]  # noqa: E731
    median_rate = lambda k: float(np.median(rates(k))) if rates(k) else None  # noqa: E731
    results = {
        "task": spec.name, "primary": primary, "metrics": median,
        "metrics_note": f"median over {len(chosen_runs)} seed(s) at the chosen grid point; "
                        "each run's dev metrics are taken at its best dev evaluation",
        "selected": {"learning_rate": chosen["learning_rate"],
                     "batch_size": chosen["batch_size"]},
        "grid": grid, "seeds": seeds, "submission_run": sub_run["name"],
        "submission_files": files, "mode": config.mode,
        "init": init.source, "tokenizer": init.tokenizer.identity(),
        "model": init.model_config.to_dict(),
        **kind.summary(inputs, task_data),
        "buckets": list(inputs.buckets), "devices": jax.device_count(),
        "processes": jax.process_count(), "parallel_mode": config.parallel.mode,
        "train_examples_per_s": median_rate("train_examples_per_s"),
        "eval_examples_per_s": median_rate("eval_examples_per_s"),
        "notes": task_data.notes,
        **({"test": test, "test_note": f"the submission run ({sub_run['name']}, best on dev "
            "at the chosen grid point) with its best-on-dev parameters"} if test else {}),
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
        "config": config.to_dict(), "fingerprint": fingerprint,
    }
    if _is_main():
        records.write_json(results_path, results)
    return results


def _cached_run(run_dir: pathlib.Path, fingerprint: str) -> dict | None:
    path = run_dir / "run.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if old.get("fingerprint") != fingerprint:
        raise FileExistsError(f"{path} is from a different config or init; use a new --workdir")
    logging.info("%s: done earlier; reusing it", run_dir)
    return old


def _run(tuner: trainer.FineTuner, run_dir: pathlib.Path, fingerprint: str, *, lr: float,
         seed: int) -> dict:
    # A run without run.json did not finish: its logs start over.
    if _is_main() and run_dir.exists():
        shutil.rmtree(run_dir)
    name = run_dir.name
    logging.info("%s %s: fine-tuning", tuner.inputs.spec.name, name)
    t0 = time.perf_counter()
    r = tuner.run(lr=lr, seed=seed, log_dir=run_dir, name=name)
    preds, kept = r.pop("test_predictions"), r.pop("kept")
    r.update(name=name, fingerprint=fingerprint, wall_s=time.perf_counter() - t0)
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / "test_predictions.npz", **preds)
        artifacts = tuner.kind.write_artifacts(run_dir, kept)
        if artifacts:
            r["artifact_files"] = artifacts
        records.write_json(run_dir / "run.json", r)  # last: it marks the run as finished
    logging.info("%s %s: dev %s (best step %d of %d), %.1f train examples/s",
                 tuner.inputs.spec.name, name, r["dev"], r["best_step"], r["steps"],
                 r["train_examples_per_s"] or 0)
    return r


# --- All tasks --------------------------------------------------------------------------------

def validate_config(config) -> None:
    """Cheap checks of the whole config, before any data is read or anything compiled."""
    n, hosts = jax.device_count(), jax.process_count()
    # `all` is every GLUE task: the GLUE kind's checks.
    kind = kinds.GLUE if config.task == "all" else kinds.find(config.task)[0]
    kind.validate_config(config)
    if config.mode not in transfer.MODES:
        raise ValueError(f"config.mode={config.mode!r}: expected one of {transfer.MODES}")
    if config.get("source", "tsv") not in ("tsv", "tfds"):
        raise ValueError(f"config.source={config.source!r}: expected 'tsv' or 'tfds'")
    parallel.check_mode(config.parallel.mode, config.parallel.fsdp, key="config.parallel")
    if not config.learning_rates or min(config.learning_rates) <= 0:
        raise ValueError(f"config.learning_rates={config.learning_rates}: expected positive "
                         "values")
    optim.check_config(ml_collections.ConfigDict(dict(  # name and schedule; the rest per run
        config.optim.to_dict(), learning_rate=min(config.learning_rates), warmup_steps=0)))
    for key, values in [("batch_sizes", config.batch_sizes),
                        ("eval_batch_size", [config.eval_batch_size])]:
        if not values or any(b <= 0 or b % n for b in values):
            raise ValueError(f"config.{key}={values}: each must be a positive multiple of the "
                             f"{n} devices on {hosts} host(s) (the batch is split evenly over "
                             "them)")
    if config.epochs < 1:
        raise ValueError(f"config.epochs={config.epochs}: expected >= 1")
    if config.num_seeds < 1 or config.num_seeds_large < 1:
        raise ValueError("config.num_seeds and config.num_seeds_large must be >= 1")
    if not 0 <= config.warmup_fraction < 1:
        raise ValueError(f"config.warmup_fraction={config.warmup_fraction}: expected [0, 1)")
    if config.max_seq_length < 8:
        raise ValueError(f"config.max_seq_length={config.max_seq_length}: expected >= 8")
    if config.log_every < 1:
        raise ValueError(f"config.log_every={config.log_every}: expected >= 1")


@dir_lock.locked("workdir", "fine-tuning")
def run(config: ml_collections.ConfigDict, data_dir: str, init_checkpoint: str, workdir: str,
        tokenizer_path: str = "") -> dict:
    """Fine-tunes and evaluates config.task (or every GLUE task found, for 'all'); writes
    per-task results, submission/prediction files and a summary under workdir. Returns the
    summary dict. `data_dir/<task>/` holds each task's files (GLUE's download layout, SQuAD's
    official JSON files, ...)."""
    validate_config(config)
    workdir = pathlib.Path(workdir)
    names = list(tasks.TASK_NAMES) if config.task == "all" else [config.task]
    specs = [kinds.find(n) for n in names]  # (kind, spec)

    # Find the data before loading a model: a missing task is a message, not a crash later.
    skipped, found = {}, []
    for kind, spec in specs:
        missing = kind.files_missing(spec, data_dir, config)
        if not missing:
            found.append((kind, spec))
        elif config.task != "all":
            raise FileNotFoundError(f"{kind.family}{spec.name}: missing {missing} under the "
                                    "data directory (--data_dir, or its old name --glue_dir)")
        elif not (pathlib.Path(data_dir) / spec.folder).is_dir():
            skipped[spec.name] = f"directory {spec.folder}/ absent from {data_dir}"
        else:
            skipped[spec.name] = "missing " + ", ".join(pathlib.Path(m).name for m in missing)
    if not found:
        raise FileNotFoundError(f"no GLUE task found under {data_dir} (looked for "
                                f"{[s.folder for _, s in specs]})")
    for name, why in skipped.items():
        logging.warning("skipping %s: %s", name, why)

    init = pretrained.resolve_init(config, init_checkpoint, tokenizer_path)
    # The transfer mode must suit the model (e.g. partial needs unrolled layers): say so now.
    transfer.trainable_predicate(config.mode, init.model_config, config.trainable_layers)
    # Read every file of every task (cheap next to training) before fine-tuning anything: a
    # malformed row in MNLI is an error now, not after CoLA and SST-2 have trained.
    loaded = {spec.name: kind.load(spec, data_dir, config) for kind, spec in found}
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind, spec in found:
        task_config = ml_collections.ConfigDict(config.to_dict())
        task_config.task = spec.name
        results[spec.name] = finetune_task(task_config, spec, loaded.pop(spec.name), init,
                                           workdir, kind=kind)
    return report.write_summary(workdir, results, skipped)
