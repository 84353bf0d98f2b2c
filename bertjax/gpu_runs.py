"""The two real runs of the GPU report (bertjax/gpu_report.py): a short bf16 pretraining with a
resume, and GLUE fine-tuning speed. Both go through the same code as the users' runs
(train.train_and_evaluate, finetune.trainer.FineTuner), not a re-implementation."""
from __future__ import annotations

import json
import math
import os
import pathlib
import random


def on_gpu() -> bool:
    import jax
    return jax.default_backend() == "gpu"


def load_config(name: str, arg: str):
    """configs/<name>.py's get_config(arg), from the repository."""
    import importlib.util

    from bertjax import cli
    spec = importlib.util.spec_from_file_location(f"{name}_config",
                                                  cli.repo_file(f"configs/{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _train_rows(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r["split"] == "train" and "loss" in r]


def pretrain(*, workdir: str, variant: str, steps: int, batch: int, log_every: int) -> dict:
    """`variant` in bf16 on the built-in corpus: `steps // 2` steps with a checkpoint at the
    end, then the same run to `steps`, which must resume from it.

    Every step is checked for finite losses and gradient norm by the training loop itself
    (run_clock.check_finite stops the run at the first non-finite one), so a run that reaches
    `steps` had none; the logged losses are checked again here."""
    from bertjax import cli, train
    config = load_config("pretrain", variant)
    config.model.dtype = "bfloat16"
    config.data.corpus = "default"
    config.data.eval_fraction = 0.05   # the built-in corpus is small (as the cpu_demo preset)
    config.train.batch_size = batch
    config.train.log_every = log_every
    config.train.eval_every = steps
    config.train.eval_steps = 2
    config.train.checkpoint_every = steps // 2
    config.optim.learning_rate = 1e-3  # a few hundred steps: the cpu_demo preset's schedule
    config.optim.warmup_steps = max(1, steps // 10)
    cli.resolve_data_paths(config.data)
    path = pathlib.Path(workdir)
    config.train.steps = steps // 2
    first = train.train_and_evaluate(config, str(path))
    rows_first = len(_train_rows(path))
    config.train.steps = steps
    second = train.train_and_evaluate(config, str(path))
    rows = _train_rows(path)
    losses = [r["loss"] for r in rows]
    after = [r["step"] for r in rows[rows_first:]]
    ckpts = sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())
    resumed = (first.step == steps // 2 and second.step == steps and bool(after)
               and min(after) > steps // 2)
    checks = {"loss_fell": bool(losses) and losses[-1] < losses[0],
              "logged_losses_finite": all(math.isfinite(x) for x in losses),
              "checkpoint_saved": steps // 2 in ckpts and steps in ckpts,
              "resumed_at_half": resumed}
    seq_s = [r["seq_per_s"] for r in rows if r.get("seq_per_s")]
    return {"status": "ok" if all(checks.values()) else "FAILED: " + ", ".join(
                k for k, v in checks.items() if not v),
            **checks, "variant": variant, "dtype": config.model.dtype,
            "attention_impl": config.model.attention_impl, "steps": second.step,
            "batch": batch, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "checkpoints": ckpts,
            "last_eval": second.last_eval,
            "train_seq_per_s": max(seq_s) if seq_s else None, "workdir": str(path)}


_WORDS = ("the a film movie plot actor good bad great boring dull fine sad happy slow quick "
          "story scene music cast ending long short funny warm cold").split()


def write_sst2(root: pathlib.Path, n_train: int, n_dev: int) -> None:
    """A synthetic SST-2 folder in GLUE's TSV layout: random word sentences, random labels
    (speed only: nothing is learnt)."""
    r = random.Random(0)
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = ["sentence\tlabel"] + [
            " ".join(r.choice(_WORDS) for _ in range(r.randint(5, 40))) + f"\t{r.randint(0, 1)}"
            for _ in range(n)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def glue(*, workdir: str, variant: str, size: str, steps: int, batch: int, seq: int) -> dict:
    """Fine-tuning speed of a random-init `size` model in bf16 on synthetic SST-2 rows, every
    batch padded to `seq` tokens (one bucket), through finetune.trainer.FineTuner as a real run
    goes (cuDNN attention when the variant asks for it and a GPU is there, else xla)."""
    import ml_collections

    from bertjax.finetune import pretrained, trainer
    from bertjax.finetune.glue import data, tasks
    from bertjax.models import bert
    config = load_config("glue", variant)
    config.model = ml_collections.ConfigDict(dict(bert.model_config(size), **{
        k: config.model[k] for k in ("dtype", "attention_impl", "attention_dropout_rate")}))
    config.model.dtype = "bfloat16"
    if config.model.attention_impl == "cudnn" and not on_gpu():
        config.model.attention_impl = "xla"
    config.max_seq_length, config.buckets = seq, (seq,)
    config.max_train_examples = config.max_eval_examples = 0
    config.epochs, config.max_steps = 1, steps
    config.learning_rates, config.batch_sizes = (2e-5,), (batch,)
    config.eval_batch_size = 2 * batch
    config.num_seeds = config.num_seeds_large = 1
    config.predict_test = False
    config.log_every = max(1, steps // 4)
    root = pathlib.Path(workdir)
    write_sst2(root, n_train=steps * batch, n_dev=4 * config.eval_batch_size)
    spec = tasks.get_task("SST-2")
    init = pretrained.resolve_init(config, "")
    inputs = data.prepare_inputs(config, spec, tasks.load_task(spec, root), init.tokenizer)
    tuner = trainer.FineTuner(config, init, inputs, batch)
    result = tuner.run(lr=config.learning_rates[0], seed=0, log_dir=os.fspath(root / "run"))
    ok = result["train_examples_per_s"] is not None and math.isfinite(result["train_loss_last"])
    return {"status": "ok" if ok else "FAILED: no steady train steps timed or loss not finite",
            "size": size, "dtype": config.model.dtype,
            "attention_impl": config.model.attention_impl, "seq": seq, "batch": batch,
            "steps": result["steps"], "train_examples_per_s": result["train_examples_per_s"],
            "eval_examples_per_s": result["eval_examples_per_s"],
            "compile_s": result["compile_s"], "train_loss_last": result["train_loss_last"]}
