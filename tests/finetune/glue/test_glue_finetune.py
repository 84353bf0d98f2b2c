import csv
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from glue_fixtures import SIZES, write_keyword_task, write_task

from bertjax import checkpoint
from bertjax.data import tokenizer
from bertjax import metrics as metrics_lib, optim
from bertjax.finetune import trainer, grid, pretrained, report
from bertjax.finetune.glue import data, kind as glue_kind, tasks
from bertjax.models import bert


def _read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.slow
def test_learns_a_trivial_pair_task_and_writes_its_outputs(tmp_path, micro, glue_tokenizer_path):
    root = write_keyword_task(tmp_path / "glue")
    config = micro("RTE", max_train_examples=0, epochs=3, learning_rates=(1e-3,),
                   batch_sizes=(16,), eval_batch_size=64, log_every=20, buckets=(16, 32))
    # The tiny size, with dropout as in real fine-tuning.
    config.model.update(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=256,
                        hidden_dropout_rate=0.1, attention_dropout_rate=0.1)
    summary = grid.run(config, str(root), "", str(tmp_path / "wd"), str(glue_tokenizer_path))

    assert summary["tasks"]["RTE"]["metrics"]["accuracy"] > 0.95
    results = json.loads((tmp_path / "wd" / "RTE" / "results.json").read_text())
    assert results["examples"] == {"train": 1000, "dev": 200, "test_RTE": 50}
    assert results["init"] == "random" and results["seeds"] == [0]
    assert results["buckets"] == [16, 32] and results["devices"] == 8
    assert results["runs"][0]["steps"] == 3 * results["runs"][0]["steps_per_epoch"]
    assert results["train_examples_per_s"] > 0 and results["eval_examples_per_s"] > 0
    rows = _read_tsv(tmp_path / "wd" / "submission" / "RTE.tsv")
    assert rows[0] == ["index", "prediction"] and len(rows) == 51
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(50)]
    assert {r[1] for r in rows[1:]} <= {"entailment", "not_entailment"}
    # The test set follows the same rule as dev, so the submission should be right too.
    test = _read_tsv(root / "RTE" / "test.tsv")[1:]
    truth = [tasks.get_task("RTE").labels[not r[2].startswith("yes")] for r in test]
    assert np.mean([p[1] == t for p, t in zip(rows[1:], truth)]) > 0.9
    md = (tmp_path / "wd" / "summary.md").read_text()
    assert "| RTE | acc |" in md and "GLUE average as in the BERT paper: n/a" in md
    runs = list(csv.DictReader(open(tmp_path / "wd" / "summary.csv")))
    assert len(runs) == 1 and float(runs[0]["dev_accuracy"]) > 0.95


@pytest.mark.slow
def test_all_runs_the_tasks_found_skips_the_rest_and_reuses_finished_work(
        tmp_path, micro, glue_tokenizer_path):
    root = tmp_path / "glue"
    for t in ("STS-B", "MNLI"):
        write_task(root, t)
    (root / "QNLI").mkdir()  # present but without train.tsv, as in ../shared/data
    config = micro("all", max_steps=2, epochs=1)
    wd = tmp_path / "wd"
    summary = grid.run(config, str(root), "", str(wd), str(glue_tokenizer_path))

    assert list(summary["tasks"]) == ["STS-B", "MNLI"]
    assert summary["skipped"]["QNLI"] == "missing train.tsv, dev.tsv"
    assert "directory QQP/ absent" in summary["skipped"]["QQP"]
    assert set(summary["tasks"]["MNLI"]["metrics"]) == {"accuracy_m", "accuracy_mm"}
    assert set(summary["tasks"]["STS-B"]["metrics"]) == {"pearson", "spearman"}
    n_test = {t: SIZES[t][2] for t in SIZES}
    expect = {"STS-B.tsv": n_test["STS-B"],
              "MNLI-m.tsv": n_test["MNLI"], "MNLI-mm.tsv": n_test["MNLI"],
              "AX.tsv": n_test["MNLI"] + 3}
    assert sorted(p.name for p in (wd / "submission").iterdir()) == sorted(expect)
    for name, n in expect.items():
        rows = _read_tsv(wd / "submission" / name)
        assert rows[0] == ["index", "prediction"] and len(rows) == n + 1, name
    assert {r[1] for r in _read_tsv(wd / "submission" / "MNLI-m.tsv")[1:]} <= {
        "contradiction", "entailment", "neutral"}
    float(_read_tsv(wd / "submission" / "STS-B.tsv")[1][1])  # a score, not a class
    md = (wd / "summary.md").read_text()
    assert "- QQP skipped: directory QQP/ absent" in md and "| MNLI | acc-m/acc-mm |" in md

    # Same config again: every task's results are reused (nothing is re-trained or rewritten).
    stamp = (wd / "MNLI" / "results.json").stat().st_mtime_ns
    again = grid.run(config, str(root), "", str(wd), str(glue_tokenizer_path))
    assert again["tasks"] == summary["tasks"]
    assert (wd / "MNLI" / "results.json").stat().st_mtime_ns == stamp
    # A different config never overwrites them.
    config.learning_rates = (1e-4,)
    with pytest.raises(FileExistsError, match="different config"):
        grid.run(config, str(root), "", str(wd), str(glue_tokenizer_path))


def test_submission_files_for_every_task(tmp_path, glue_dir):
    root, _ = glue_dir
    names = []
    for t in tasks.TASK_NAMES:
        spec = tasks.get_task(t)
        for name, split in tasks.load_task(spec, root).test.items():
            preds = (np.linspace(0, 5, len(split)) if spec.is_regression
                     else np.arange(len(split)) % spec.num_labels)
            path = glue_kind.write_submission(spec, name, split.ids, preds, tmp_path / "sub")
            rows = _read_tsv(path)
            assert rows[0] == ["index", "prediction"] and len(rows) == len(split) + 1
            assert [r[0] for r in rows[1:]] == split.ids
            if not spec.is_regression:
                assert [r[1] for r in rows[1:]] == [spec.labels[int(p)] for p in preds]
            names.append(path.name)
    assert sorted(names) == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv",
                                    "MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv", "QNLI.tsv",
                                    "RTE.tsv", "WNLI.tsv"])
    with pytest.raises(ValueError, match="3 test rows but 2 predictions"):
        glue_kind.write_submission(tasks.get_task("RTE"), "RTE", ["0", "1", "2"], np.zeros(2),
                                tmp_path)


def _pretrained_checkpoint(path, tok, cfg):
    ids = jnp.zeros((1, 8), jnp.int32)
    params = bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(42), ids, ids, ids,
                                               ids[:, :2])["params"]
    checkpoint.save_pretrained(path, params, cfg, tok.identity(), source="test")
    return params


@pytest.mark.slow
def test_init_from_checkpoint_uses_its_encoder_and_checks_the_tokenizer(
        tmp_path, micro, glue_dir, glue_tokenizer, glue_tokenizer_path):
    config = micro("SST-2")
    cfg = bert.BertConfig.from_dict(dict(config.model.to_dict(), num_layers=1,
                                         vocab_size=glue_tokenizer.vocab_size))
    params = _pretrained_checkpoint(tmp_path / "ckpt", glue_tokenizer, cfg)
    init = pretrained.resolve_init(config, str(tmp_path / "ckpt"), str(glue_tokenizer_path))
    assert init.model_config.num_layers == 1  # the checkpoint's shape, not config.model's
    spec = tasks.get_task("SST-2")
    inputs = data.prepare_inputs(config, spec, tasks.load_task(spec, glue_dir[0]),
                                 glue_tokenizer)
    tuner = trainer.FineTuner(config, init, inputs, 16)
    state = tuner.create_state(seed=3, lr=1e-3)
    got = jax.device_get(state.params)
    for k, v in traverse_util.flatten_dict(params["bert"], sep="/").items():
        np.testing.assert_array_equal(got["bert/" + k], v)  # bit for bit
    assert got["classifier/kernel"].shape == (cfg.hidden_size, 2)
    assert float(optim.peak_learning_rate(state.opt_state)) == np.float32(1e-3)

    other = tokenizer.train([f"completely different text number {i}" for i in range(300)],
                            tmp_path / "other", vocab_size=glue_tokenizer.vocab_size - 60)
    with pytest.raises(ValueError, match="tokenizer mismatch: .*sha256="):
        pretrained.resolve_init(config, str(tmp_path / "ckpt"), str(other))
    # A checkpoint without the 'bert' subtree, or whose encoder does not fit, fails early.
    bad_cfg = bert.BertConfig.from_dict(dict(cfg.to_dict(), hidden_size=64))
    with pytest.raises(ValueError, match="does not fit the model"):
        trainer.FineTuner(config, pretrained.Init(bad_cfg, params["bert"], glue_tokenizer, "x"),
                           inputs, 16)


def test_selection_takes_the_best_median_grid_point():
    def run(lr, seed, acc, f1):
        return {"learning_rate": lr, "batch_size": 32, "seed": seed,
                "dev": {"f1": f1, "accuracy": acc}}
    runs = [run(5e-5, 0, 0.8, 0.90), run(5e-5, 1, 0.7, 0.50), run(5e-5, 2, 0.7, 0.55),
            run(2e-5, 0, 0.7, 0.80), run(2e-5, 1, 0.75, 0.82), run(2e-5, 2, 0.6, 0.70)]
    grid_, chosen, median, best = grid.select(runs, "f1")
    # 5e-5 has the best single run (0.90) but the worse median (0.55 < 0.80).
    assert [g["median_dev_f1"] for g in grid_] == [0.55, 0.80]
    assert chosen["learning_rate"] == 2e-5
    assert median == {"f1": 0.80, "accuracy": 0.7}
    assert (best["learning_rate"], best["seed"]) == (2e-5, 1)


@pytest.mark.slow
def test_learning_rate_schedule_is_linear_warmup_then_linear_decay(micro, glue_dir,
                                                                   glue_tokenizer):
    """The schedule the fine-tuning step applies, read from its logged learning rates."""
    config = micro("SST-2", max_steps=0, epochs=10, warmup_fraction=0.25)
    cfg = bert.BertConfig.from_dict(dict(config.model.to_dict(),
                                         vocab_size=glue_tokenizer.vocab_size))
    spec = tasks.get_task("SST-2")
    inputs = data.prepare_inputs(config, spec, tasks.load_task(spec, glue_dir[0]),
                                 glue_tokenizer)
    tuner = trainer.FineTuner(config, pretrained.Init(cfg, None, glue_tokenizer, "random"),
                               inputs, 16)
    assert (tuner.total_steps, tuner.warmup_steps) == (20, 5)  # 28 rows: 2 steps per epoch
    state = tuner.create_state(seed=0, lr=2.0)
    rows, length = data.batch_plan(inputs.train, 16, inputs.buckets)[0]
    batch = tuner.put_batch(data.make_batch(inputs.train, rows, 16, length))
    lrs = []
    for _ in range(20):
        state, out = tuner.dp.step(state, batch)
        lrs.append(float(tuner.dp.metrics_to_host(out)["learning_rate"]))
    expect = [2.0 * s / 5 for s in range(5)] + [2.0 * (20 - s) / 15 for s in range(5, 20)]
    np.testing.assert_allclose(lrs, expect, rtol=1e-6)


@pytest.mark.slow
def test_early_stopping_stops_after_patience_evaluations_without_gain(
        tmp_path, micro, glue_tokenizer_path):
    root = tmp_path / "glue"
    write_task(root, "WNLI")
    # A learning rate too small to change any prediction: the dev metric never improves.
    config = micro("WNLI", learning_rates=(1e-12,), epochs=10, eval_every=1,
                   early_stopping_patience=2, batch_sizes=(8,), eval_batch_size=8,
                   predict_test=False)
    grid.run(config, str(root), "", str(tmp_path / "wd"), str(glue_tokenizer_path))
    r = json.loads((tmp_path / "wd" / "WNLI" / "results.json").read_text())["runs"][0]
    assert r["stopped_early"] and r["steps"] == 3 and r["best_step"] == 1
    assert r["total_steps"] == 10 * r["steps_per_epoch"]


def test_bad_config_and_data_fail_before_any_training(tmp_path, micro, glue_tokenizer_path):
    root = tmp_path / "glue"
    write_task(root, "CoLA")
    with pytest.raises(ValueError, match=r"batch_sizes=\(12,\): each must be a positive "
                                         r"multiple of the 8 devices"):
        grid.run(micro("CoLA", batch_sizes=(12,)), str(root), "", str(tmp_path / "a"),
                     str(glue_tokenizer_path))
    with pytest.raises(FileNotFoundError, match=r"GLUE MRPC: missing"):
        grid.run(micro("MRPC"), str(root), "", str(tmp_path / "b"),
                     str(glue_tokenizer_path))
    shutil.copy(root / "CoLA" / "dev.tsv", root / "CoLA" / "dev.bak")
    with open(root / "CoLA" / "dev.tsv", "a") as f:
        f.write("gj04\t1\tonly three fields\n")
    with pytest.raises(tasks.GlueFormatError, match=r"CoLA/dev.tsv:12: malformed row"):
        grid.run(micro("CoLA"), str(root), "", str(tmp_path / "c"),
                     str(glue_tokenizer_path))
    assert not (tmp_path / "c").exists()  # nothing written before the data is known good
    write_task(root, "RTE")
    (root / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(ValueError, match=r"RTE/train.tsv: no examples"):
        grid.run(micro("RTE"), str(root), "", str(tmp_path / "d"), str(glue_tokenizer_path))
    assert not (tmp_path / "d" / "RTE").exists()


def _fake_results(workdir, task, primary, values, init):
    runs = [{"learning_rate": 2e-5, "batch_size": 32, "seed": s, "dev": {primary: v},
             "best_step": 1, "steps": 1, "train_examples_per_s": 1.0,
             "eval_examples_per_s": 1.0} for s, v in enumerate(values)]
    r = {"task": task, "primary": primary, "metrics": {primary: float(np.median(values))},
         "selected": {"learning_rate": 2e-5, "batch_size": 32}, "seeds": list(range(len(values))),
         "runs": runs, "init": init, "mode": "full", "train_examples_per_s": 1.0,
         "eval_examples_per_s": 1.0, "subsampled": False}
    (workdir / task).mkdir(parents=True)
    (workdir / task / "results.json").write_text(json.dumps(r))


def test_compare_table_puts_workdirs_side_by_side(tmp_path):
    _fake_results(tmp_path / "pre", "SST-2", "accuracy", [0.80, 0.82, 0.81], "ckpt")
    _fake_results(tmp_path / "pre", "CoLA", "mcc", [0.20, 0.30, 0.25], "ckpt")
    _fake_results(tmp_path / "rand", "SST-2", "accuracy", [0.60, 0.55, 0.58], "random")
    table = report.compare_table([str(tmp_path / "pre"), str(tmp_path / "rand")],
                                 ["pretrained", "random init"])
    lines = table.splitlines()
    assert lines[0] == "| Task | Metric | pretrained | random init |"
    assert lines[2] == "| CoLA | MCC | 25.0 (20.0–30.0) | – |"
    assert lines[3] == "| SST-2 | acc | 81.0 (80.0–82.0) | 58.0 (55.0–60.0) |"
    assert lines[4] == "| GLUE avg (BERT paper) | | n/a | n/a |"
    with pytest.raises(FileNotFoundError, match="no <task>/results.json"):
        report.compare_table([str(tmp_path / "nothing")])


@pytest.mark.slow
def test_feature_mode_learns_the_pair_task_from_frozen_random_features(
        tmp_path, micro, glue_tokenizer_path):
    # Learned position embeddings (BERT's original) for the frozen random encoder: with the
    # sinusoidal default, positions (amplitude 1) dwarf the 0.02-scale word embeddings at
    # initialisation and a frozen random encoder barely tells 'yes' from 'no'.
    root = write_keyword_task(tmp_path / "glue")
    config = micro("RTE", mode="feature", max_train_examples=0, epochs=2,
                   learning_rates=(1e-3,), predict_test=False)
    config.model.position_embedding = "learned"
    summary = grid.run(config, str(root), "", str(tmp_path / "wd"), str(glue_tokenizer_path))
    assert summary["tasks"]["RTE"]["mode"] == "feature"
    assert summary["tasks"]["RTE"]["metrics"]["accuracy"] > 0.95


@pytest.mark.slow
def test_each_run_shows_a_progress_bar_and_writes_its_logs_line_by_line(
        tmp_path, micro, glue_tokenizer_path, monkeypatch, capfd):
    root = tmp_path / "glue"
    write_task(root, "WNLI")
    config = micro("WNLI", epochs=2, batch_sizes=(8,), eval_batch_size=8, predict_test=False)
    on_disk = []
    write = metrics_lib.MetricWriter.write

    def write_and_count(self, step, split, values):
        write(self, step, split, values)
        on_disk.append(len(open(self._jsonl.name).read().splitlines()))
    monkeypatch.setattr(metrics_lib.MetricWriter, "write", write_and_count)
    grid.run(config, str(root), "", str(tmp_path / "wd"), str(glue_tokenizer_path))

    # Each line is on disk as soon as it is written, not when the run ends.
    assert on_disk == list(range(1, len(on_disk) + 1))
    run_dir = tmp_path / "wd" / "WNLI" / "runs" / "lr0.0003_bs8_seed0"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]  # 18 rows, batch 8, 2 epochs
    assert all(np.isfinite(r["loss"]) and r["learning_rate"] >= 0 for r in train_rows)
    assert [(r["step"], r["best"]) for r in rows if r["split"] == "dev"][0] == (3, 1.0)
    assert any(p.name.startswith("events.out.tfevents")
               for p in (run_dir / "tensorboard").iterdir())
    err = capfd.readouterr().err
    assert "WNLI lr0.0003_bs8_seed0" in err and "6/6" in err  # tqdm: name, steps done
