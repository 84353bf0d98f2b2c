"""The studies in the BERT paper's shape (issue 20): pretraining_tasks (Table 5), steps (Figure
5), and the paper's own rows beside the measured ones."""
import json
import os
import sys

import pytest

from bertjax import checkpoint, paper_tables, study, study_steps, sweep
from configs import pretrain

sys.path.insert(0, os.path.dirname(__file__))
from test_study import _pretrain_config, _run, env  # noqa: E402,F401  (the shared fixture)

LTR_NAME = "objective=ltr,causal=True,nsp=False"


def test_ltr_point_is_the_ltr_preset():
    base, ltr = pretrain.get_config("tiny,cpu_demo"), pretrain.get_config("tiny,cpu_demo,ltr")
    for key, value in pretrain.LTR_POINT.items():
        node_b, node_l = base, ltr
        for part in key.split(".")[:-1]:
            node_b, node_l = node_b[part], node_l[part]
        leaf = key.split(".")[-1]
        assert node_l[leaf] == value and node_b[leaf] != value, key
    assert sweep.apply_overrides(base, pretrain.LTR_POINT).to_dict() == ltr.to_dict()


def test_reference_rows_take_the_study_column_names():
    rows, source = paper_tables.reference_rows("pretraining_tasks", ["full"])
    assert "Table 5" in source and len(rows) == 4
    assert rows[2] == {"point": "paper: LTR & No NSP", "init": paper_tables.PAPER_INIT,
                       "MNLI accuracy_m": 82.1, "QNLI accuracy": 84.3, "MRPC accuracy": 77.5,
                       "SST-2 accuracy": 92.1, "SQuAD f1": 77.8}
    # mask_mix with both modes: prefixed; with fine-tuning only, the feature-based column is
    # still the paper's own (prefixed, so it never lands in the fine-tuning column).
    both, _ = paper_tables.reference_rows("mask_mix", ["full", "feature"])
    assert both[0] == {"point": "paper: MASK/SAME/RND 80/10/10", "init": paper_tables.PAPER_INIT,
                       "full:MNLI accuracy_m": 84.2, "full:CoNLL-2003 f1": 95.4,
                       "feature:CoNLL-2003 f1": 94.9}
    full, _ = paper_tables.reference_rows("mask_mix", ["full"])
    assert set(full[1]) - {"point", "init"} == {"MNLI accuracy_m", "CoNLL-2003 f1",
                                                "feature:CoNLL-2003 f1"}
    sizes, _ = paper_tables.reference_rows("size", ["full"])
    assert sizes[-1]["num_layers"] == 24 and sizes[-1]["mlm_perplexity"] == 3.23
    assert sizes[-1]["init"] == paper_tables.PAPER_INIT_SIZES
    assert paper_tables.reference_rows("transfer", ["full"]) == ([], "")


def test_table_rows_mark_what_was_not_run_never_zero():
    measured = [{"point": "base", "init": "pretrained", "SST-2 accuracy": 80.0,
                 "STS-B spearman": None}]
    ref, _ = paper_tables.reference_rows("pretraining_tasks", ["full"])
    header, table = paper_tables.table_rows(measured, ref)
    row = dict(zip(header, table[0]))
    assert row["SST-2 accuracy"] == 80.0 and row["STS-B spearman"] is None  # measured, empty
    assert row["MNLI accuracy_m"] == paper_tables.NOT_RUN == row["SQuAD f1"]
    paper = dict(zip(header, table[1]))
    assert paper["STS-B spearman"] is None and paper["SST-2 accuracy"] == 92.7


@pytest.mark.slow  # ~2 min: three pretraining points and five fine-tunings of micro shapes
def test_pretraining_tasks_study_with_the_papers_rows(env):
    out, workdir = _run(env, "pretraining_tasks")
    rows = out["rows"]
    assert [r["point"] for r in rows[:3]] == ["base", "nsp=False", LTR_NAME]
    # A random-init baseline per model shape: bidirectional, and causal (the LTR point's).
    assert rows[3]["point"] == f"{LTR_NAME} + BiLSTM"  # the LTR point, head=bilstm
    assert [r["init"] for r in rows] == ["pretrained"] * 4 + ["random"] * 2
    assert len({r["point"] for r in rows[4:]}) == 2
    base, mlm_only, ltr = rows[:3]
    assert base["nsp_accuracy"] is not None and mlm_only["nsp_accuracy"] is None
    assert ltr["mlm_loss"] is None and 0 < ltr["ltr_loss"] < 20 and ltr["ltr_perplexity"] > 1
    for r in rows:
        assert -100 <= r["avg"] <= 100 and "STS-B spearman" in r
    meta = checkpoint.load_pretrained(workdir / LTR_NAME)[3]
    assert meta["objective"] == "ltr" and meta["model"]["causal"] is True
    assert [r["point"] for r in out["reference_rows"]][2] == "paper: LTR & No NSP"
    md = (workdir / "study.md").read_text()
    assert "Table 5" in md and paper_tables.PAPER_INIT in md
    measured_line = next(line for line in md.splitlines() if line.startswith("| base |"))
    assert paper_tables.NOT_RUN in measured_line  # MNLI, QNLI, ... were not run here
    paper_line = next(line for line in md.splitlines() if "paper: LTR & No NSP" in line)
    assert "77.5" in paper_line and "77.8" in paper_line
    saved = json.loads((workdir / "study.json").read_text())
    assert saved["reference_rows"] == out["reference_rows"] and len(saved["rows"]) == 6


@pytest.mark.slow
def test_checkpoint_rows_start_from_each_kept_step(env, tmp_path):
    """Each kept checkpoint is fine-tuned from its own step folder, whose parameters are that
    step's (the fine-tuning itself is the slow test below)."""
    cfg = _pretrain_config(env["prepared"], **{"train.steps": 4, "train.checkpoint_every": 2,
                                               "train.eval_every": 2,
                                               "train.keep_checkpoints": 10})
    env["train"](cfg, str(tmp_path / "base"))
    seen = []

    def glue_columns(init, workdir, label):
        seen.append((init, workdir.name, label))
        return {"avg": float(len(seen))}

    progress = study._Progress({"pretraining": 1, "fine-tuning": 0})
    rows = study_steps.checkpoint_rows([("base", {}, cfg)], tmp_path, [], progress,
                                       glue_columns, runs_per_init=3, baseline_runs=2)
    ckpts = tmp_path / "base" / "checkpoints"
    assert seen == [(str(ckpts / "2"), "step_2", "base @ step 2"),
                    (str(ckpts / "4"), "step_4", "base @ step 4")]
    assert [(r["step"], r["avg"]) for r in rows] == [(2, 1.0), (4, 2.0)]
    assert progress.total["fine-tuning"] == 2 * 3 + 2
    assert all(0 < r["mlm_loss"] < 20 for r in rows)  # the evaluations logged at steps 2, 4
    assert rows[0]["mlm_loss"] != rows[1]["mlm_loss"]
    p2, *_ = checkpoint.load_pretrained(ckpts / "2")
    p4, *_ = checkpoint.load_pretrained(tmp_path / "base")  # the latest
    p4b, *_ = checkpoint.load_pretrained(ckpts / "4")
    leaf = lambda p: p["bert"]["embeddings"]["word_embeddings"]["embedding"]  # noqa: E731
    assert (leaf(p4) == leaf(p4b)).all() and not (leaf(p2) == leaf(p4)).all()
    with pytest.raises(ValueError, match=r"--steps \[6\]: point base kept no checkpoint"):
        study_steps.checkpoint_rows([("base", {}, cfg)], tmp_path, [6], progress,
                                    glue_columns, runs_per_init=1, baseline_runs=0)


@pytest.mark.slow  # two points x two checkpoints + two baselines (MLM, causal) fine-tuned
def test_steps_study_fine_tunes_every_kept_checkpoint(env):
    over = {"train.steps": 4, "train.checkpoint_every": 2, "train.eval_every": 2}
    out, workdir = _run(env, "steps", **over)
    rows = out["rows"]
    pre = [(r["point"], r["step"]) for r in rows if r["init"] == "pretrained"]
    assert pre == [("base", 2), ("base", 4), (LTR_NAME, 2), (LTR_NAME, 4)]
    # A random-init baseline per shape: bidirectional, and causal for the LTR line.
    assert [r["init"] for r in rows].count("random") == 2
    assert out["config"]["train"]["keep_checkpoints"] >= 4  # the study keeps them all
    for point, step in pre:
        res = json.loads((workdir / point / f"step_{step}" / "glue_full" / "STS-B" /
                          "results.json").read_text())
        assert res["init"].endswith(f"{point}/checkpoints/{step}")
    r2 = next(r for r in rows if r["point"] == "base" and r["step"] == 2)
    assert 0 < r2["mlm_loss"] < 20  # the held-out evaluation logged at step 2
    for ext in ("png", "svg"):
        assert (workdir / f"downstream.{ext}").stat().st_size > 1000
    assert out["reference_rows"] == []  # Figure 5 gives no numbers to transcribe

    # --steps: a subset of the kept ones (all cached now); one not kept is refused.
    s = pretrain.get_study("steps")
    cfg = _pretrain_config(env["prepared"], **over)
    again = study.run_study("steps", s, cfg, env["glue"], env["glue_dir"], str(workdir),
                            ["STS-B"], steps=[4], baselines_dir=str(env["root"] / "random_init"),
                            train_fn=lambda *a: pytest.fail("pretraining ran again"))
    assert [(r["point"], r["step"]) for r in again["rows"][:2]] == [("base", 4), (LTR_NAME, 4)]
    assert again["rows"][0]["avg"] == next(r["avg"] for r in rows
                                           if r["point"] == "base" and r["step"] == 4)


@pytest.mark.parametrize("name, steps, message", [
    ("steps", [3], r"--steps \[3\]: no checkpoint is kept there"),
    ("steps", [6], r"--steps \[6\]: no checkpoint"),
    ("nsp", [2], r"--steps \[2\]: only a per-checkpoint study"),
])
def test_bad_steps_are_refused_before_pretraining(env, tmp_path, name, steps, message):
    cfg = _pretrain_config(env["prepared"], **{"train.steps": 4, "train.checkpoint_every": 2})
    with pytest.raises(ValueError, match=message):
        study.run_study(name, pretrain.get_study(name), cfg, env["glue"], env["glue_dir"],
                        str(tmp_path / "s"), ["STS-B"], steps=steps,
                        train_fn=lambda *a: pytest.fail("pretraining started"))
    assert not (tmp_path / "s").exists()
