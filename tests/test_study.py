"""Studies end to end at smoke scale: pretraining points -> GLUE (fixture files) -> tables and
figures; plus the compute-budget stop and the config's study definitions."""
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from pretrain_helpers import TEST_SHAPES, as_flags, tiny_pretrain_config

from bertjax import study, sweep, train
from configs import pretrain

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "finetune", "glue"))
from glue_fixtures import micro_config, write_task  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TASKS = ["STS-B"]  # one task keeps compiles few; the mask_rate study runs two
# Micro shapes keep each compile to seconds; the size/budget studies override them per point.
MICRO_MODEL = {"model.num_layers": 2, "model.hidden_size": 32, "model.num_heads": 2,
               "model.intermediate_size": 64, "model.hidden_dropout_rate": 0.0,
               "model.attention_dropout_rate": 0.0}


def _pretrain_config(prepared: str, **overrides):
    return tiny_pretrain_config(prepared, **{
        **MICRO_MODEL, "train.steps": 3, "train.eval_every": 3, "train.checkpoint_every": 3,
        "optim.warmup_steps": 1, **overrides})


@pytest.fixture(scope="module")
def env(tmp_path_factory, default_prepared):
    root = tmp_path_factory.mktemp("study")
    glue_dir = root / "glue"
    for t in ("CoLA", "STS-B"):
        write_task(glue_dir, t)
    glue = micro_config("CoLA", num_seeds=2, max_steps=2, predict_test=False)
    trained = {}

    def shared_train(cfg, workdir):
        """train_and_evaluate, shared between studies whose points have the same config (the
        base point recurs in several studies): a copy of the finished run, not a rerun."""
        key = cfg.to_json()
        if key in trained:
            src, out = trained[key]
            # The pretraining run only: its GLUE runs belong to the other study's point.
            shutil.copytree(src, workdir, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("glue_*", "result.json"))
            return out
        out = train.train_and_evaluate(cfg, workdir)
        trained[key] = (workdir, out)
        return out

    return {"root": root, "glue_dir": str(glue_dir), "glue": glue, "train": shared_train,
            "prepared": default_prepared}


def _run(env, name, points=(), modes=None, tasks=None, **overrides):
    s = pretrain.get_study(name)
    if modes:
        s = dict(s, modes={k: s["modes"][k] for k in modes})
    cfg = _pretrain_config(env["prepared"], **overrides)
    workdir = env["root"] / name
    out = study.run_study(name, s, cfg, env["glue"], env["glue_dir"], str(workdir),
                          tasks or TASKS, points=points, train_fn=env["train"],
                          baselines_dir=str(env["root"] / "random_init"))
    return out, workdir


def _check_outputs(out, workdir, n_pretrained, modes, tasks=("STS-B",)):
    rows = out["rows"]
    assert len(rows) == n_pretrained + 1  # + the random-init baseline (one model shape)
    assert [r["init"] for r in rows] == ["pretrained"] * n_pretrained + ["random"]
    with open(workdir / "study.csv", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header = table[0]
    # + the paper's rows, for a study that mirrors a paper table (bertjax/paper_tables.py)
    assert len(table) == len(rows) + len(out["reference_rows"]) + 1
    assert header == out["columns"]
    for col in ("point", "mlm_loss", "mlm_accuracy", "mlm_perplexity", "nsp_accuracy"):
        assert col in header
    pre = [f"{m}:" for m in modes] if len(modes) > 1 else [""]
    for p in pre:
        cols = [f"{p}avg", f"{p}seed spread"] + [f"{p}STS-B {m}" for m in ("pearson", "spearman")
                                                  if "STS-B" in tasks]
        cols += [f"{p}CoLA mcc"] if "CoLA" in tasks else []
        for col in cols:
            assert col in header, (col, header)
        for r in rows:
            assert isinstance(r[f"{p}avg"], float) and -100 <= r[f"{p}avg"] <= 100
            assert r[f"{p}seed spread"] >= 0
    for r in rows[:n_pretrained]:
        assert r["step"] == 3 and 0 < r["mlm_loss"] < 20 and r["mlm_perplexity"] > 1
    md = (workdir / "study.md").read_text()
    assert all(r["point"] in md for r in rows)
    assert json.loads((workdir / "study.json").read_text())["rows"] == json.loads(
        json.dumps(rows))
    for fig in ("loss_curves", "downstream"):
        for ext in ("png", "svg"):
            assert (workdir / f"{fig}.{ext}").stat().st_size > 1000, (fig, ext)


@pytest.mark.slow
def test_mask_mix_study_has_fine_tuning_and_feature_columns(env):
    out, workdir = _run(env, "mask_mix", points=["mask_token_prob=0.8,random_token_prob=0.1"])
    _check_outputs(out, workdir, 1, ["full", "feature"])
    assert [r.get("mask_token_prob") for r in out["rows"]] == [0.8, None]
    # Table 8's rows beside the measured ones; MNLI and CoNLL-2003 were not run here.
    assert [r["point"] for r in out["reference_rows"]][0] == "paper: MASK/SAME/RND 80/10/10"
    with open(workdir / "study.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert table[0]["full:MNLI accuracy_m"] == "not run" and table[2]["full:MNLI accuracy_m"] \
        == "84.2" and table[2]["feature:CoNLL-2003 f1"] == "94.9"


@pytest.mark.slow  # ~36 s; rerun-skipping is also covered by the GLUE grid and sweep tests
def test_mask_rate_study_and_rerun_skips_everything(env):
    out, workdir = _run(env, "mask_rate", points=["mask_rate=0.15", "mask_rate=0.4"],
                        tasks=["CoLA", "STS-B"])
    _check_outputs(out, workdir, 2, ["full"], tasks=["CoLA", "STS-B"])
    runs = list(workdir.rglob("run.json")) + list((env["root"] / "random_init").rglob("run.json"))
    stamp = {p: p.stat().st_mtime_ns for p in runs}
    calls = []
    s = pretrain.get_study("mask_rate")
    again = study.run_study("mask_rate", s, _pretrain_config(env["prepared"]), env["glue"],
                            env["glue_dir"], str(workdir), ["CoLA", "STS-B"],
                            baselines_dir=str(env["root"] / "random_init"),
                            points=["mask_rate=0.15", "mask_rate=0.4"],
                            train_fn=lambda *a: calls.append(a))
    assert calls == []  # pretraining skipped (result.json) ...
    assert {p: p.stat().st_mtime_ns for p in runs} == stamp  # ... and GLUE
    assert again["rows"] == out["rows"]


@pytest.mark.slow  # ~22 s; the suite keeps mask_mix, mask_rate, transfer and budget
def test_nsp_study(env):
    out, workdir = _run(env, "nsp")
    _check_outputs(out, workdir, 2, ["full"])
    assert out["rows"][1]["nsp"] is False and out["rows"][1]["nsp_accuracy"] is None


@pytest.mark.slow
def test_transfer_study_compares_modes_on_one_checkpoint(env):
    out, workdir = _run(env, "transfer")
    _check_outputs(out, workdir, 1, ["full", "feature", "partial"])
    modes = {json.loads(p.read_text())["mode"] for p in workdir.glob("base/glue_*/*/results.json")}
    assert modes == {"full", "feature", "partial"}


@pytest.mark.slow  # ~21 s
def test_size_study_reports_shapes_and_perplexity(env):
    out, workdir = _run(env, "size", points=["size=tiny"], **{"data.max_seq_len": 32})
    _check_outputs(out, workdir, 1, ["full"])
    assert out["rows"][0]["hidden_size"] == 128 and out["rows"][1]["hidden_size"] == 128


@pytest.mark.slow
def test_budget_study_stops_at_the_flops_budget_and_reports_it(env):
    # Three steps' worth of FLOPs of the tiny size at seq 32: stops after step 3 of 50.
    from bertjax.metrics import pretraining_flops_per_sequence
    from bertjax.models import bert
    per_step = 8 * pretraining_flops_per_sequence(
        bert.BertConfig.from_dict(dict(bert.model_config("tiny"), hidden_dropout_rate=0.0)),
        32, 5)
    out, workdir = _run(env, "budget", points=["size=tiny"], **{
        "train.steps": 50, "train.budget_flops": 2.5 * per_step})
    _check_outputs(out, workdir, 1, ["full"])
    row = out["rows"][0]
    assert row["stopped_by_budget"] is True and row["budget_flops_used"] == pytest.approx(
        3 * per_step)
    budget = json.loads((workdir / "size=tiny" / "budget.json").read_text())
    assert budget["step"] == 3 and budget["stopped_by_budget"] is True
    assert (workdir / "size=tiny" / "checkpoints" / "3").is_dir()


@pytest.mark.slow
def test_budget_minutes_stop_resumes_nothing_more(tmp_path, env):
    """A spent wall-clock budget: the run stops, saves, and a rerun does not train further."""
    cfg = _pretrain_config(env["prepared"], **{"train.steps": 10_000,
                                               "train.budget_minutes": 1e-9})
    first = train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert first.step == 1 and first.budget["stopped_by_budget"]
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()
    again = train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert again.step == 1


def test_budget_study_without_a_budget_is_refused_before_anything_runs(env, tmp_path):
    with pytest.raises(ValueError, match="budget_minutes"):
        study.run_study("budget", pretrain.get_study("budget"),
                        _pretrain_config(env["prepared"]), env["glue"], env["glue_dir"],
                        str(tmp_path / "b"), TASKS)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ["CoLA", "RTE"]}, r"GLUE RTE: missing"),
    ({"tasks": ["CoLAA"]}, r"CoLAA"),
    ({"points": ["mask_rate=0.5"]}, r"--points \['mask_rate=0.5'\]: not in study"),
])
def test_bad_study_input_is_refused_before_pretraining(env, tmp_path, kwargs, message):
    args = dict(tasks=TASKS, points=())
    args.update(kwargs)
    with pytest.raises((ValueError, FileNotFoundError, KeyError), match=message):
        study.run_study("mask_rate", pretrain.get_study("mask_rate"),
                        _pretrain_config(env["prepared"]), env["glue"], env["glue_dir"],
                        str(tmp_path / "s"), args["tasks"], points=args["points"],
                        train_fn=lambda *a: pytest.fail("pretraining started"))


@pytest.mark.parametrize("name", ["mask_mix", "mask_rate", "nsp", "size", "transfer", "budget",
                                  "pretraining_tasks", "steps"])
def test_every_study_applies_to_the_config(name):
    s = pretrain.get_study(name)
    for p in s["points"]:
        sweep.apply_overrides(pretrain.get_config("tiny"), p)
    assert set(s["modes"]) <= set(pretrain.GLUE_MODES)
    if name == "mask_mix":  # Table 8's six rows, fine-tuning and feature-based
        assert [(p["data.mask_token_prob"], p["data.random_token_prob"]) for p in s["points"]] \
            == [(0.8, 0.1), (1.0, 0.0), (0.8, 0.2), (0.8, 0.0), (0.0, 0.8), (0.0, 1.0)]
        assert set(s["modes"]) == {"full", "feature"}


@pytest.mark.slow  # a third of the file's time (a fresh process compiles everything again)
def test_script_runs_a_study_from_another_directory(env, tmp_path):
    """As a user runs it: relative paths from a working directory outside the repository."""
    shutil.copytree(env["glue_dir"], tmp_path / "glue")
    overrides = {**MICRO_MODEL, **TEST_SHAPES, "train.steps": 2, "train.eval_every": 2,
                 "train.checkpoint_every": 2}
    glue = {"num_seeds": 1, "max_steps": 1, "predict_test": False, "batch_sizes": "(16,)",
            "eval_batch_size": 16, "max_seq_length": 32, "buckets": "()"}
    glue_model = {f"model.{k.split('.')[1]}": v for k, v in MICRO_MODEL.items()}
    cmd = [sys.executable, str(REPO / "scripts" / "study.py"), "--config",
           f"{REPO}/configs/pretrain.py:tiny", "--study", "transfer", "--modes", "full",
           "--workdir", "runs/t", "--glue_dir", "glue"]
    cmd += as_flags(overrides)
    cmd += [f"--glue_config.{k}={v}" for k, v in {**glue, **glue_model}.items()]
    cmd += ["--tasks", "STS-B"]
    env_vars = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env_vars,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "random init" in p.stdout and "study stage" in p.stderr
    assert (tmp_path / "runs" / "t" / "study.csv").exists()
    bad = subprocess.run(cmd[:-2] + ["--tasks", "RTE"], cwd=tmp_path, capture_output=True,
                         text=True, env=env_vars, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: ")


def test_squad_columns_are_on_the_study_scale():
    """SQuAD's results are 0-100 (as the official script prints them), GLUE's fractions: the
    table shows both x100-of-a-fraction and the average counts SQuAD F1 as the paper reports."""
    def res(metrics, scale=1.0):
        runs = [{"learning_rate": 1e-4, "batch_size": 8, "dev": metrics}]
        out = {"metrics": metrics, "selected": {"learning_rate": 1e-4, "batch_size": 8},
               "runs": runs, "primary": "f1" if "f1" in metrics else "spearman"}
        if scale != 1.0:
            out["metric_scale"] = scale
        return out
    glue = {"full": {"STS-B": res({"pearson": 0.5, "spearman": 0.4}),
                     "SQuAD": res({"exact_match": 30.0, "f1": 60.0}, 100.0)}}
    row = study._glue_columns(glue, ["full"], ["STS-B", "SQuAD"])
    assert row["SQuAD f1"] == pytest.approx(60.0) and row["SQuAD exact_match"] == 30.0
    assert row["STS-B spearman"] == pytest.approx(40.0)
    assert row["avg"] == pytest.approx((40.0 + 60.0) / 2)  # STS-B Spearman, SQuAD F1


def test_squad_task_config_in_a_study():
    c = study._glue_config(micro_config("CoLA"), "squad", {"mode": "full"})
    assert c.task == "SQuAD" and c.doc_stride == 32 and c.max_seq_length == 128
    assert "source" not in c and c.model.hidden_size == 32  # the study's model stays
    ner = study._glue_config(micro_config("CoLA"), "CoNLL-2003", {"mode": "feature"})
    assert ner.task == "CoNLL-2003" and "features" in ner and ner.mode == "feature"


@pytest.mark.slow  # a pretraining point, then STS-B and SQuAD for it and the random init
def test_study_with_squad(env, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "finetune", "squad"))
    from squad_fixtures import v1_raw, write
    squad = pathlib.Path(env["glue_dir"]) / "SQuAD"
    squad.mkdir(exist_ok=True)
    write(squad / "train-v1.1.json", v1_raw())
    write(squad / "dev-v1.1.json", v1_raw())
    out, workdir = _run(env, "mask_mix", points=["mask_token_prob=0.8,random_token_prob=0.1"],
                        modes=["full"], tasks=["STS-B", "SQuAD"])
    for r in out["rows"]:
        assert 0 <= r["SQuAD f1"] <= 100 and "SQuAD exact_match" in r
    assert len(list(workdir.rglob("SQuAD/predictions.json"))) == 1  # the pretrained point's
