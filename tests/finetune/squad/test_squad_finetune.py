"""SQuAD through the one fine-tuning core: the span loss, batching of windows, a grid run with
its predictions files, and scripts/finetune.py as users run it."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from squad_fixtures import WhitespaceTokenizer, v1_raw, v2_raw, write

from bertjax import checkpoint
from bertjax.data import tokenizer
from bertjax.finetune import grid, kinds
from bertjax.finetune.squad import features, kind as squad_kind, reader
from bertjax.models import bert
from configs import finetune as finetune_config

REPO = pathlib.Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"


def test_span_loss_by_hand():
    out = np.array([[[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [9.0, 9.0]],
                    [[0.5, 0.5], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]]], np.float32)
    batch = {"input_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]]),
             "start_positions": np.array([1, 0]), "end_positions": np.array([2, 2]),
             "weights": np.array([1.0, 0.0], np.float32)}
    # Row 0: position 3 is padding and must not enter the softmax; row 1 has weight 0.
    start = np.log(np.exp([1.0, 2.0, 0.0]).sum()) - 2.0
    end = np.log(np.exp([0.0, 1.0, 3.0]).sum()) - 3.0
    got = squad_kind.span_loss(jnp.asarray(out), batch, jnp.float32(1.0))
    np.testing.assert_allclose(float(got), (start + end) / 2, rtol=1e-6)
    # The divisor is the global batch's weight (several devices each hold a slice).
    got2 = squad_kind.span_loss(jnp.asarray(out), batch, jnp.float32(4.0))
    np.testing.assert_allclose(float(got2), (start + end) / 8, rtol=1e-6)


def test_windows_batch_pads_rows_and_cuts_to_the_bucket(tmp_path):
    f = reader.read(write(tmp_path / "d.json", v1_raw()), v2=False, training=True)
    feats = features.build_features(f.examples, WhitespaceTokenizer(), max_seq_length=24,
                                    doc_stride=4, max_query_length=8)
    w = squad_kind.Windows(feats)
    assert len(w) == len(feats) and (w.lengths == feats.input_mask.sum(1)).all()
    rows = np.array([1, 0])
    b = w.batch(rows, 4, 20)
    assert b["input_ids"].shape == (4, 20) and b["weights"].tolist() == [1, 1, 0, 0]
    np.testing.assert_array_equal(b["input_ids"][:2], feats.input_ids[rows, :20])
    np.testing.assert_array_equal(b["start_positions"][:2], feats.start_positions[rows])
    assert set(b) == set(squad_kind.MODEL_INPUTS)


def test_config_fields_and_task_names():
    c = finetune_config.get_config("squad,tiny")
    assert c.task == "SQuAD" and "source" not in c and c.predict_test is False
    assert (c.doc_stride, c.max_query_length, c.max_answer_length, c.n_best_size) == (
        32, 32, 30, 20)
    full = finetune_config.get_config("SQuAD-v2")
    assert (full.max_seq_length, full.doc_stride, full.max_query_length) == (384, 128, 64)
    assert kinds.find("squad-v2")[1].v2 and "SQuAD" in kinds.task_names()
    with pytest.raises(ValueError, match="Unknown task 'SQuAD3'.*SQuAD-v2"):
        finetune_config.get_config("SQuAD3")
    bad = finetune_config.get_config("SQuAD")
    bad.doc_stride = 400
    with pytest.raises(ValueError, match="doc_stride=400 must be less than"):
        grid.validate_config(bad)


def _repeat(raw, n):
    """The fixture's articles n times (ids made unique): enough rows for a few steps."""
    data = []
    for i in range(n):
        for a in json.loads(json.dumps(raw))["data"]:
            for p in a["paragraphs"]:
                for qa in p["qas"]:
                    qa["id"] = f"{qa['id']}_{i}"
            data.append(a)
    return dict(raw, data=data)


def _squad_dir(root, v2):
    task = "SQuAD-v2" if v2 else "SQuAD"
    d = root / task
    d.mkdir(parents=True)
    raw = v2_raw() if v2 else v1_raw()
    names = ("train-v2.0.json", "dev-v2.0.json") if v2 else ("train-v1.1.json", "dev-v1.1.json")
    train = _repeat(raw, 8)
    # One training answer not at its answer_start: skipped and counted, not trained on.
    train["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 3
    write(d / names[0], train)
    write(d / names[1], raw)
    return task


def _micro(task, **overrides):
    c = finetune_config.get_config(f"{task},tiny")
    c.model.update(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                   hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    c.tokenizer = str(TOKENIZER)
    c.update(dict(max_seq_length=48, buckets=(), doc_stride=8, max_query_length=16,
                  batch_sizes=(8,), eval_batch_size=8, log_every=1, max_steps=4,
                  learning_rates=(1e-3,)), **overrides)
    return c


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.slow
def test_grid_run_writes_official_predictions_and_scores(tmp_path, v2):
    task = _squad_dir(tmp_path / "data", v2)
    summary = grid.run(_micro(task), str(tmp_path / "data"), "", str(tmp_path / "w"))
    res = json.loads((tmp_path / "w" / task / "results.json").read_text())
    assert res["primary"] == "f1" and res["metric_scale"] == 100.0
    assert res["examples"]["dev_questions"] == (4 if v2 else 3)
    assert res["examples"]["train_questions"] == 8 * (4 if v2 else 3) - 1
    assert res["examples"]["skipped_train_questions"] == 1
    assert res["notes"]["skipped_train_questions"]["ids"] == ["q2_0"]
    preds = json.loads((tmp_path / "w" / task / "predictions.json").read_text())
    ids = {"q1", "q2", "q3"} | ({"q4"} if v2 else set())
    assert set(preds) == ids
    # The answers are substrings of their contexts (or "" for v2's no-answer).
    dev = reader.read(tmp_path / "data" / task / ("dev-v2.0.json" if v2 else "dev-v1.1.json"),
                      v2=v2, training=False)
    for e in dev.examples:
        assert preds[e.id] in e.context
    # The reported score is the official metric applied to the written file.
    from bertjax.finetune.squad import metric
    if v2:
        odds = json.loads((tmp_path / "w" / task / "null_odds.json").read_text())
        official = metric.evaluate_v2(dev.examples, preds, odds)
        assert res["metrics"]["exact"] == pytest.approx(official["exact"])
        assert {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(res["metrics"])
    else:
        official = metric.evaluate_v1(dev.examples, preds)
        assert res["metrics"]["exact_match"] == pytest.approx(official["exact_match"])
    assert res["metrics"]["f1"] == pytest.approx(official["f1"])
    assert summary["tasks"][task]["metrics"]["f1"] == pytest.approx(official["f1"])
    nbest = json.loads((tmp_path / "w" / task / "nbest_predictions.json").read_text())
    assert set(nbest) == ids and all(len(v) >= 1 for v in nbest.values())
    # Rerun: every run is cached, nothing trains again.
    again = grid.run(_micro(task), str(tmp_path / "data"), "", str(tmp_path / "w"))
    assert again["tasks"][task]["metrics"] == summary["tasks"][task]["metrics"]


def _checkpoint(path):
    tok = tokenizer.load(str(TOKENIZER))
    cfg = bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=tok.vocab_size, num_layers=1, hidden_size=32, num_heads=2,
        intermediate_size=64))
    ids = jnp.zeros((1, 8), jnp.int32)
    params = bert.BertForPreTraining(cfg).init(jax.random.PRNGKey(0), ids, ids, ids,
                                               ids[:, :2])["params"]
    checkpoint.save_pretrained(path, params, cfg, tok.identity(),
                               extra={"config": {"data": {"tokenizer": str(TOKENIZER)}}})


@pytest.mark.slow
@pytest.mark.parametrize("v2,from_checkpoint", [(False, False), (True, False), (False, True)])
def test_entry_point_from_another_directory(tmp_path, v2, from_checkpoint):
    task = _squad_dir(tmp_path / "data", v2)
    cmd = [sys.executable, str(REPO / "scripts" / "finetune.py"),
           f"--config={REPO / 'configs' / 'finetune.py'}:{task},tiny", "--data_dir=data",
           "--workdir=out", "--config.max_steps=3", "--config.max_seq_length=64",
           "--config.doc_stride=8", "--config.max_query_length=16",
           "--config.buckets=()", "--config.log_every=1",
           "--config.model.num_layers=1", "--config.model.hidden_size=32",
           "--config.model.num_heads=2", "--config.model.intermediate_size=64"]
    if from_checkpoint:
        _checkpoint(tmp_path / "ckpt")
        cmd.append("--init_checkpoint=ckpt")  # no --tokenizer: the checkpoint's own
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "EM/F1" in out.stdout
    assert (tmp_path / "out" / task / "predictions.json").is_file()
    res = json.loads((tmp_path / "out" / task / "results.json").read_text())
    assert res["init"] == ("random" if not from_checkpoint else res["init"])
    if from_checkpoint:
        assert res["init"] != "random"


def test_bilstm_span_head_table_5():
    """'+ BiLSTM': a randomly initialised BiLSTM between the encoder and the start/end layer."""
    from bertjax.finetune import transfer
    cfg = bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=50, num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32))
    ids = jnp.ones((2, 12), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [7]]), jnp.int32)
    model = transfer.build_span_model("full", cfg, head="bilstm", lstm_hidden=8)
    params = model.init(jax.random.PRNGKey(0), ids, ids * 0, mask)["params"]
    assert "span_tagger" in params and "span_classifier" not in params
    out = model.apply({"params": params}, ids, ids * 0, mask)
    assert out.shape == (2, 12, 2) and np.all(np.asarray(out)[1, 7:] == 0)
    bad = finetune_config.get_config("SQuAD,tiny")
    bad.head = "gru"
    with pytest.raises(ValueError, match="config.head='gru': expected one of"):
        grid.validate_config(bad)


@pytest.mark.slow  # compiles a train and an eval step (~30 s)
def test_finetune_benchmark_prints_only_json(tmp_path):
    path = write(tmp_path / "squad.json", _repeat(v1_raw(), 4))
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark_finetune.py"),
           f"--squad_file={path}", "--layers=1", "--hidden=32", "--heads=2", "--batch=2",
           "--steps=1", "--max_questions=6", "--config.max_seq_length=48",
           "--config.doc_stride=8", "--config.max_query_length=16", "--config.buckets=()"]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)  # stdout is the JSON document and nothing else
    assert result["seq"] == 48 and result["train_examples_per_s"] > 0
    assert 0 <= result["decode_share"] <= 1 and "f1" in result["dev_scores"]
