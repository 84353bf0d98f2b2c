"""`custom` and `IMDB` through the fine-tuning core: grid runs on CSV / JSON Lines files and the
aclImdb layout (labels from the train file, labelled test sets scored into results.json, head /
tail / head_tail truncation), a custom CSV made from GLUE files giving exactly GLUE's dev metric,
and config errors."""
import json
import pathlib
import shutil

import numpy as np
import pytest
from test_imdb import write_layout
from test_own_data_from_glue import glue_to_custom, write_glue

from bertjax.data import tokenizer
from bertjax.finetune import grid, kinds
from bertjax.finetune.glue import tasks
from bertjax.finetune.own_data import kind as own_kind
from configs import finetune as finetune_config

REPO = pathlib.Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"
MICRO = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
             hidden_dropout_rate=0.0, attention_dropout_rate=0.0)


def _micro(task, **overrides):
    c = finetune_config.get_config(f"{task},tiny")
    c.model.update(MICRO)
    c.tokenizer = str(TOKENIZER)
    c.update(dict(max_seq_length=32, buckets=(), batch_sizes=(8,), eval_batch_size=8,
                  log_every=1, max_steps=4, learning_rates=(1e-3,)), **overrides)
    return c


@pytest.mark.slow
def test_custom_csv_gives_exactly_glue_dev_metric(tmp_path):
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    for split, seed, n in (("train", 0, 40), ("dev", 1, 16)):
        shutil.copyfile(write_glue(tmp_path / "src", "SST-2", n, seed), glue / f"{split}.tsv")
        glue_to_custom(glue / f"{split}.tsv", tmp_path / f"{split}.csv")
    ref = grid.run(_micro("SST-2", predict_test=False), str(tmp_path / "glue"), "",
                   str(tmp_path / "w_glue"))["tasks"]["SST-2"]
    c = _micro("custom", train_file="train.csv", dev_file="dev.csv", text_columns="sentence",
               label_column="label", label_names="0,1", predict_test=False)
    own = grid.run(c, str(tmp_path), "", str(tmp_path / "w_own"))["tasks"]["custom"]
    assert own["metrics"]["accuracy"] == ref["metrics"]["accuracy"]
    assert "macro_f1" in own["metrics"]
    res = json.loads((tmp_path / "w_own" / "custom" / "results.json").read_text())
    assert res["labels"] == ["0", "1"] and res["task_type"] == "classification"


def _pairs(path, n, seed, regression=False):
    r = np.random.default_rng(seed)
    words = "good bad fine awful great poor".split()
    rows = []
    for i in range(n):
        a, b = " ".join(r.choice(words, 4)), " ".join(r.choice(words, 3))
        label = float(r.uniform(0, 5)) if regression else ["yes", "no", "maybe"][i % 3]
        rows.append({"premise": a, "hypothesis": b, "gold": label})
    path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return path.name


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.slow
def test_custom_jsonl_pair_with_labelled_test(tmp_path, regression):
    names = {s: _pairs(tmp_path / f"{s}.jsonl", n, i, regression)
             for i, (s, n) in enumerate([("train", 24), ("dev", 9), ("test", 9)])}
    c = _micro("custom", train_file=names["train"], dev_file=names["dev"],
               test_file=names["test"], text_columns="premise,hypothesis",
               label_column="gold", regression=regression)
    grid.run(c, str(tmp_path), "", str(tmp_path / "w"))
    res = json.loads((tmp_path / "w" / "custom" / "results.json").read_text())
    if regression:
        assert res["primary"] == "spearman" and res["labels"] is None
        assert {"pearson", "spearman"} <= set(res["test"])
    else:
        assert res["primary"] == "accuracy"
        assert res["labels"] == ["yes", "no", "maybe"]   # first-seen order of the train file
        assert {"accuracy", "macro_f1"} <= set(res["test"])
        # The reported test accuracy is that of the written predictions.
        sub = (tmp_path / "w" / "submission" / "custom.tsv").read_text().splitlines()[1:]
        pred = [line.split("\t")[1] for line in sub]
        gold = [json.loads(x)["gold"] for x in (tmp_path / "test.jsonl").read_text().splitlines()]
        assert res["test"]["accuracy"] == pytest.approx(np.mean([p == g for p, g in
                                                                 zip(pred, gold)]))


def test_imdb_layout_held_out_dev_and_test_accuracy(tmp_path):
    write_layout(tmp_path, n=10)
    grid.run(_micro("IMDB", truncation="head_tail", max_seq_length=140),
             str(tmp_path), "", str(tmp_path / "w"))
    res = json.loads((tmp_path / "w" / "IMDB" / "results.json").read_text())
    assert res["labels"] == ["neg", "pos"] and "accuracy" in res["test"]
    assert any("held out as dev" in n for n in res["notes"])
    assert res["examples"] == {"train": 18, "dev": 2, "test_IMDB": 20}


def test_truncation_modes_keep_the_right_tokens():
    tok = tokenizer.load(str(TOKENIZER))
    text = " ".join(f"w{i}" for i in range(400))
    split = tasks.Split("x", [text], None, np.array([0]), ["1"])
    ids = tok.encode_batch([text])[0]
    got = {m: own_kind.encode_truncated(split, tok, 200, m) for m in ("head", "tail",
                                                                      "head_tail")}
    body = {m: e.tokens[1:-1].tolist() for m, e in got.items()}
    assert body["head"] == ids[:198] and body["tail"] == ids[-198:]
    assert body["head_tail"] == ids[:128] + ids[-70:]
    assert all(e.truncated == 1 and len(e.tokens) == 200 for e in got.values())


def test_config_fields_and_errors():
    c = finetune_config.get_config("custom")
    assert (c.truncation, c.text_columns, c.regression) == ("head", "text", False)
    assert {"custom", "IMDB", "CoNLL-2003"} <= set(kinds.task_names())
    with pytest.raises(ValueError, match="config.train_file is empty"):
        grid.validate_config(c)
    c.update(train_file="t.csv", dev_file="d.csv", text_columns="a,b", truncation="tail")
    with pytest.raises(ValueError, match="truncation='tail' is for single texts"):
        grid.validate_config(c)
    with pytest.raises(ValueError, match="unknown task 'imbd'.*'IMDB'"):
        kinds.find("imbd")


@pytest.mark.slow
def test_custom_entry_point_from_another_directory(tmp_path):
    """As a user runs it: relative file names under --data_dir=., random init."""
    import os
    import subprocess
    import sys
    names = {s: _pairs(tmp_path / f"{s}.jsonl", n, i)
             for i, (s, n) in enumerate([("train", 24), ("dev", 9), ("test", 9)])}
    cmd = [sys.executable, str(REPO / "scripts" / "finetune.py"),
           f"--config={REPO / 'configs' / 'finetune.py'}:custom,tiny", "--data_dir=.",
           "--workdir=out", f"--config.train_file={names['train']}",
           f"--config.dev_file={names['dev']}", f"--config.test_file={names['test']}",
           "--config.text_columns=premise,hypothesis", "--config.label_column=gold",
           "--config.max_steps=3", "--config.max_seq_length=32", "--config.buckets=()",
           "--config.model.num_layers=1", "--config.model.hidden_size=32",
           "--config.model.num_heads=2", "--config.model.intermediate_size=64"]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "custom" / "results.json").read_text())
    assert res["labels"] == ["yes", "no", "maybe"] and "accuracy" in res["test"]
    assert (tmp_path / "out" / "submission" / "custom.tsv").is_file()


def test_imdb_from_tfds_through_the_grid(tmp_path):
    """source='tfds': TFDS's real imdb_reviews calls on mock data (nothing downloaded)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        grid.run(_micro("IMDB", source="tfds"), "/nonexistent/tfds", "", str(tmp_path / "w"))
    res = json.loads((tmp_path / "w" / "IMDB" / "results.json").read_text())
    assert res["examples"] == {"train": 18, "dev": 2, "test_IMDB": 20}
    assert "accuracy" in res["test"] and res["labels"] == ["neg", "pos"]
