"""CoNLL-2003 through the one fine-tuning core: the token loss at the label positions, batches,
the heads (linear, BiLSTM, Table 7's feature mode), a grid run writing predictions_dev.txt and
predictions_test.txt scored as seqeval scores those files, and scripts/finetune.py as users run
it."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ner_data import conll_dir, read_predictions
from ner_fixtures import PieceTokenizer
from seqeval.metrics import sequence_labeling as seqeval

from bertjax.finetune import grid, kinds, transfer
from bertjax.finetune.ner import features, kind as ner_kind
from bertjax.models import bert, heads
from configs import finetune as finetune_config

REPO = pathlib.Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"
MICRO = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
             hidden_dropout_rate=0.0, attention_dropout_rate=0.0)


def test_token_loss_counts_only_label_positions():
    tok = PieceTokenizer({"rejects": ["re", "jects"]})
    f = features.build_features([["EU", "rejects"], ["Bonn"]], [[1, 0], [2]], tok,
                                max_seq_length=8)
    b = ner_kind.Sentences(f).batch(np.array([0, 1]), 3, 6)
    # [CLS] EU re jects [SEP] / [CLS] Bonn [SEP]: labels at EU, re and Bonn only.
    assert b["labels"].tolist() == [[-1, 1, 0, -1, -1, -1], [-1, 2, -1, -1, -1, -1],
                                    [-1] * 6]
    assert b["weights"].sum() == 3 and b["input_mask"].sum() == 8
    assert set(b) == set(ner_kind.MODEL_INPUTS)
    out = np.random.default_rng(0).normal(size=(3, 6, 3)).astype(np.float32)
    logp = out - np.log(np.exp(out).sum(-1, keepdims=True))
    want = -(logp[0, 1, 1] + logp[0, 2, 0] + logp[1, 1, 2])
    got = ner_kind.token_loss(jnp.asarray(out), b, jnp.float32(3.0))
    np.testing.assert_allclose(float(got), want / 3, rtol=1e-5)
    # Changing the logits at an unlabelled position (a second piece, padding) changes nothing.
    out2 = out.copy()
    out2[0, 3] += 5.0
    out2[1, 4] -= 7.0
    out2[2] = 9.0
    got2 = ner_kind.token_loss(jnp.asarray(out2), b, jnp.float32(3.0))
    np.testing.assert_allclose(float(got2), float(got), rtol=1e-6)
    # Divided by the global batch's label count (several devices each hold a slice).
    got4 = ner_kind.token_loss(jnp.asarray(out), b, jnp.float32(6.0))
    np.testing.assert_allclose(float(got4), want / 6, rtol=1e-5)


def _model_params(model, length=6):
    ids = jnp.ones((2, length), jnp.int32)
    mask = jnp.ones((2, length), jnp.int32).at[1, 4:].set(0)
    params = model.init(jax.random.PRNGKey(0), ids, ids * 0, mask)["params"]
    return params, model.apply({"params": params}, ids, ids * 0, mask)


@pytest.mark.parametrize("mode,head,choice,trained", [
    ("full", "linear", "", {"bert", "classifier"}),
    ("full", "bilstm", "", {"bert", "tagger"}),
    ("feature", "linear", "sum_last_four", {"tagger"}),
    ("feature", "linear", "weighted_sum_all", {"tagger", "features"}),
])
def test_heads_shapes_and_what_trains(mode, head, choice, trained):
    cfg = bert.BertConfig.from_dict(bert.model_config("tiny", vocab_size=50, num_layers=4,
                                                      hidden_size=16, num_heads=2,
                                                      intermediate_size=32))
    c = finetune_config.get_config("CoNLL-2003,tiny")
    c.update(mode=mode, head=head, features=choice or c.features, lstm_hidden=8)
    spec = ner_kind.NerSpec("CoNLL-2003", tags=("O", "B-PER", "I-PER"))
    model = ner_kind.KIND.build_model(c, cfg, spec)
    params, out = _model_params(model)
    assert out.shape == (2, 6, 3) and out.dtype == jnp.float32
    assert float(jnp.abs(out[1, 4:]).max()) == 0.0  # padding positions
    pred = transfer.trainable_predicate(mode, cfg)
    train, frozen = transfer.split_params(params, pred)
    assert {k.split("/")[0] for k in train} == trained
    assert bool(frozen) == (mode == "feature")
    if head == "bilstm" or mode == "feature":
        # Two BiLSTM layers of lstm_hidden=8 units per direction.
        assert params["tagger"]["bilstm"]["layer_1"]["forward"]["cell"]["hi"]["kernel"].shape \
            == (8, 8)
        assert params["tagger"]["classifier"]["kernel"].shape == (16, 3)
    if choice == "weighted_sum_all":
        assert params["features"]["scalar_mix"]["scalar_weights"].shape == (4,)


def test_feature_choice_sets_the_bilstm_input_width():
    cfg = bert.BertConfig.from_dict(bert.model_config("tiny", vocab_size=50, num_layers=4,
                                                      hidden_size=16, num_heads=2,
                                                      intermediate_size=32))
    widths = {}
    for choice in ("last", "concat_last_four"):
        p, _ = _model_params(heads.FeatureTokenTagger(cfg, 3, choice, lstm_hidden=0))
        widths[choice] = p["tagger"]["bilstm"]["layer_0"]["forward"]["cell"]["ii"]["kernel"].shape
    # lstm_hidden=0: the encoder's hidden size (16) per direction.
    assert widths == {"last": (16, 16), "concat_last_four": (64, 16)}


def test_config_fields_and_bad_fields():
    c = finetune_config.get_config("conll-2003,tiny")
    assert c.task == "CoNLL-2003" and "source" not in c and c.predict_test
    assert (c.head, c.features, c.lstm_hidden, c.max_seq_length) == (
        "linear", "concat_last_four", 0, 64)
    assert "CoNLL-2003" in kinds.task_names()
    for key, value, message in [("head", "crf", "config.head='crf'"),
                                ("features", "top", "config.features='top'"),
                                ("stride", 70, "config.stride=70")]:
        bad = finetune_config.get_config("CoNLL-2003,tiny")
        bad[key] = value
        with pytest.raises(ValueError, match=message):
            grid.validate_config(bad)


def test_missing_dev_file_is_named_before_any_work(tmp_path):
    d = conll_dir(tmp_path / "data", n_test=0)
    (d / "eng.testa").unlink()
    with pytest.raises(FileNotFoundError, match=r"CoNLL-2003: missing \[.*eng.testa or "
                                                r"valid.txt'\]"):
        grid.run(_micro(), str(tmp_path / "data"), "", str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def _micro(**overrides):
    c = finetune_config.get_config("CoNLL-2003,tiny")
    c.model.update(MICRO)
    c.tokenizer = str(TOKENIZER)
    c.update(dict(max_seq_length=16, buckets=(), batch_sizes=(8,), eval_batch_size=8,
                  log_every=1, max_steps=6, learning_rates=(3e-3,), lstm_hidden=8),
             **overrides)
    return c


def _check_files_match(res, task_dir, data_dir, test=True):
    """The written files' seqeval scores are the reported ones; every word is there once."""
    from bertjax.finetune.ner import reader
    splits = [("dev", "eng.testa", res["metrics"])]
    if test:
        splits.append(("test", "eng.testb", res["test"]))
    for split, name, reported in splits:
        words, gold, pred = read_predictions(task_dir / f"predictions_{split}.txt")
        f = reader.read_file(data_dir / name)
        assert words == [list(s.words) for s in f.sentences]
        assert gold == f.tags()
        assert reported["f1"] == pytest.approx(seqeval.f1_score(gold, pred, zero_division=0))
        assert reported["precision"] == pytest.approx(seqeval.precision_score(gold, pred,
                                                                         zero_division=0))
        per = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
        for t in ("LOC", "ORG", "PER"):
            assert reported[f"{t}_f1"] == pytest.approx(per[t]["f1-score"] if t in per else 0)


@pytest.mark.slow
def test_grid_run_writes_conlleval_files_and_dev_and_test_scores(tmp_path):
    data = conll_dir(tmp_path / "data")
    # Enough steps (6 epochs of 66 rows) that the model predicts entities.
    c = _micro(epochs=6, max_steps=0, eval_every=18, learning_rates=(5e-3,))
    summary = grid.run(c, str(tmp_path / "data"), "", str(tmp_path / "w"))
    task_dir = tmp_path / "w" / "CoNLL-2003"
    res = json.loads((task_dir / "results.json").read_text())
    assert res["primary"] == "f1" and res["scheme"] == "IOB1"
    assert res["tags"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    # Every fifth sentence is long: more pieces than max_seq_length - 2 = 14, cut into windows.
    assert res["split_sentences"]["dev"] >= 2 and res["split_sentences"]["test"] >= 2
    assert res["examples"]["dev_rows"] > res["examples"]["dev_sentences"] == 12
    assert {"f1", "PER_f1", "LOC_recall", "ORG_support"} <= set(res["test"])
    assert res["metrics"]["f1"] == summary["tasks"]["CoNLL-2003"]["metrics"]["f1"]
    # The model has learnt to predict entities (so the comparison below is not 0 == 0).
    assert res["test"]["predicted_entities"] > 0 and res["test"]["correct_entities"] > 0
    _check_files_match(res, task_dir, data)
    # Rerun: every run cached, nothing trains again, the same scores.
    again = grid.run(c, str(tmp_path / "data"), "", str(tmp_path / "w"))
    assert again["tasks"]["CoNLL-2003"]["metrics"] == summary["tasks"]["CoNLL-2003"]["metrics"]


@pytest.mark.slow  # about a minute each on the shared 2-core CPU: the BiLSTM compiles slowly
@pytest.mark.parametrize("overrides", [
    dict(head="bilstm"),
    dict(mode="feature", features="sum_last_four", learning_rates=(1e-2,)),
    dict(mode="feature", features="weighted_sum_all", learning_rates=(1e-2,)),
])
def test_grid_run_other_heads_and_no_test_file(tmp_path, overrides):
    conll_dir(tmp_path / "data", n_train=24, n_dev=8, n_test=0)
    c = _micro(**overrides)
    c.model.num_layers = 4  # sum_last_four needs four layers
    grid.run(c, str(tmp_path / "data"), "", str(tmp_path / "w"))
    task_dir = tmp_path / "w" / "CoNLL-2003"
    res = json.loads((task_dir / "results.json").read_text())
    assert "test" not in res and not (task_dir / "predictions_test.txt").exists()
    assert any("no test file" in n for n in res["notes"])
    _check_files_match(res, task_dir, tmp_path / "data" / "CoNLL-2003", test=False)
    assert res["mode"] == c.mode
    losses = [json.loads(line) for line in
              (task_dir / "runs" / res["submission_run"] / "metrics.jsonl").read_text().split("\n")
              if line.strip()]
    train = [r for r in losses if "loss" in r]
    assert train and all(np.isfinite(r["loss"]) for r in train)


def _checkpoint(path):
    from bertjax import checkpoint
    from bertjax.data import tokenizer
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
@pytest.mark.parametrize("from_checkpoint", [False, True])
def test_entry_point_from_another_directory(tmp_path, from_checkpoint):
    conll_dir(tmp_path / "data")
    cmd = [sys.executable, str(REPO / "scripts" / "finetune.py"),
           f"--config={REPO / 'configs' / 'finetune.py'}:CoNLL-2003,tiny", "--data_dir=data",
           "--workdir=out", "--config.max_steps=3", "--config.max_seq_length=32",
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
    assert "CoNLL-2003" in out.stdout
    for name in ("predictions_dev.txt", "predictions_test.txt", "results.json"):
        assert (tmp_path / "out" / "CoNLL-2003" / name).is_file()
    res = json.loads((tmp_path / "out" / "CoNLL-2003" / "results.json").read_text())
    assert (res["init"] != "random") == from_checkpoint and "f1" in res["test"]


@pytest.mark.shared_data
def test_shared_conll2003_kind_oracle(shared_data, tmp_path):
    """The real dev set through the kind: prepared, batched as the core batches it, and gold
    one-hot outputs scored: F1 1.0 with every dev entity, and the written file holds every
    dev word."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "CoNLL-2003").symlink_to(shared_data / "conll2003")
    c = finetune_config.get_config("CoNLL-2003")
    c.tokenizer = str(TOKENIZER)
    from bertjax.data import tokenizer
    kind, spec = kinds.find("CoNLL-2003")
    data = kind.load(spec, str(data_dir), c)
    inputs = kind.prepare(c, spec, data, tokenizer.load(str(TOKENIZER)))
    dev = inputs.dev[""]
    out = np.zeros((len(dev), 128, len(inputs.spec.tags)), np.float32)
    for start in range(0, len(dev), 256):
        rows = np.arange(start, min(start + 256, len(dev)))
        b = dev.batch(rows, len(rows), 128)
        labels = np.where(b["weights"] > 0, b["labels"], 0)
        out[rows] = np.eye(len(inputs.spec.tags), dtype=np.float32)[labels]
    scores, kept = kind.evaluate(inputs.spec, inputs, {"": out})
    assert scores["f1"] == 1.0 and scores["gold_entities"] == 5942
    summary = kind.summary(inputs, data)
    assert summary["examples"]["dev_sentences"] == 3250
    assert summary["split_sentences"] == {"train": 1, "dev": 6} and summary["scheme"] == "IOB2"
    files = kind.write_artifacts(tmp_path, kept)
    words, gold, pred = read_predictions(tmp_path / files[0])
    assert sum(map(len, words)) == 51362 and gold == pred
