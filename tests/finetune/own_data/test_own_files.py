"""The `custom` task's files: CSV / TSV / JSON Lines, labels, and every bad input's message."""
import csv
import json

import numpy as np
import pytest

from bertjax.finetune.own_data import files


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_tsv(path, header, rows):
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header, *rows]),
                    encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [("a great film, really", "pos"), ('a "bad"\nfilm', "neg"), ("fine", "pos")]


def test_csv_quoting_and_first_seen_labels(tmp_path):
    p = write_csv(tmp_path / "train.csv", ["text", "label"], ROWS)
    d = files.load(p, p, text_columns="text", label_column="label")
    assert d.train.text_a == [r[0] for r in ROWS] and d.train.text_b is None
    assert d.label_names == ("pos", "neg") and d.train.labels.tolist() == [0, 1, 0]
    assert d.train.ids == ["2", "3", "5"]   # the line each record starts on
    assert d.test is None and "no test file" in d.notes
    assert not d.regression


def test_tsv_is_not_quoted_like_glue(tmp_path):
    p = write_tsv(tmp_path / "train.tsv", ["sentence1", "sentence2", "label"],
                  [['"He said', 'so"', 1], ["x", "y", 0]])
    d = files.load(p, p, text_columns="sentence1,sentence2", label_column="label")
    assert d.train.text_a == ['"He said', "x"] and d.train.text_b == ['so"', "y"]
    assert d.label_names == ("1", "0")


def test_jsonl_integer_labels_and_label_names(tmp_path):
    rows = [{"q": "why?", "a": "because", "y": 2}, {"q": "who", "a": "me", "y": 0},
            {"q": "x", "a": "y", "y": "2"}]
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    d = files.load(p, p, text_columns=["q", "a"], label_column="y")
    assert d.label_names == ("2", "0") and d.train.labels.tolist() == [0, 1, 0]
    fixed = files.load(p, p, text_columns="q,a", label_column="y", label_names=["0", "1", "2"])
    assert fixed.label_names == ("0", "1", "2") and fixed.train.labels.tolist() == [2, 0, 2]


def test_regression(tmp_path):
    p = write_csv(tmp_path / "train.csv", ["s1", "s2", "score"], [("a", "b", "4.2"),
                                                                   ("c", "d", "0")])
    d = files.load(p, p, text_columns="s1,s2", label_column="score", regression=True)
    assert d.regression and d.train.labels.dtype == np.float32
    np.testing.assert_allclose(d.train.labels, [4.2, 0.0], rtol=1e-6)


def test_test_file_with_and_without_labels(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], ROWS)
    labelled = write_jsonl(tmp_path / "test.jsonl", [{"text": "t", "label": "neg"}])
    d = files.load(train, train, labelled, text_columns="text", label_column="label")
    assert d.test.labels.tolist() == [1]
    bare = write_tsv(tmp_path / "test.tsv", ["id", "text"], [[7, "t"]])
    d = files.load(train, train, bare, text_columns="text", label_column="label")
    assert d.test.labels is None and d.test.text_a == ["t"]
    assert any("no 'label' column, test predictions only" in n for n in d.notes)


def test_missing_column_names_the_file_columns(tmp_path):
    p = write_csv(tmp_path / "train.csv", ["review", "stars"], [("a", "1"), ("b", "2")])
    with pytest.raises(files.OwnDataError) as e:
        files.load(p, p, text_columns="text", label_column="stars")
    assert "train.csv: no column(s) ['text']; the file has the columns ['review', 'stars']" \
        in str(e.value)
    j = write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(files.OwnDataError, match=r"dev.jsonl:2: no key\(s\) \['label'\]; "
                                                 r"this line has \['text'\]"):
        files.read_split(j, ["text"], "label")


@pytest.mark.parametrize("name,content", [("train.csv", ""), ("train.tsv", ""),
                                          ("train.jsonl", "\n\n")])
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(files.OwnDataError, match=rf"{name}: empty file"):
        files.read_split(tmp_path / name, ["text"], "label")


def test_header_only(tmp_path):
    p = write_csv(tmp_path / "dev.csv", ["text", "label"], [])
    with pytest.raises(files.OwnDataError, match=r"dev.csv: no examples \(only a header\)"):
        files.read_split(p, ["text"], "label")


@pytest.mark.parametrize("labels,bad", [(["1", "0.5"], "'0.5'"), (["1", "2.0"], "'2.0'"),
                                        (["a", "1e3"], "'1e3'"), ([1, 2.5], "2.5")])
def test_float_labels_under_classification(tmp_path, labels, bad):
    p = write_jsonl(tmp_path / "train.jsonl", [{"t": "x", "y": v} for v in labels])
    with pytest.raises(files.OwnDataError,
                       match=rf"train.jsonl:2: label {bad} in column 'y' is a floating-point "
                             r"number; .* set regression=True"):
        files.load(p, p, text_columns="t", label_column="y")


def test_dev_label_unknown_to_training(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], ROWS)
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], [("a", "pos"), ("b", "meh"),
                                                               ("c", "?")])
    with pytest.raises(files.OwnDataError,
                       match=r"dev.csv: label\(s\) 'meh' \(.*dev.csv:3\), '\?' \(.*dev.csv:4\) "
                             r"are not among the training labels \['pos', 'neg'\]"):
        files.load(train, dev, text_columns="text", label_column="label")


@pytest.mark.parametrize("rows,match", [
    ([{"t": "x", "y": "a"}, {"t": "x", "y": "a"}], "every label is 'a'"),
    ([{"t": 3, "y": "a"}], r"column 't' holds 3; expected a string"),
    ([{"t": "x", "y": None}], r"label None in column 'y'"),
    ([{"t": "x", "y": True}], r"label True in column 'y'"),
    ([{"t": "x", "y": " "}], r"empty label"),
])
def test_bad_values(tmp_path, rows, match):
    p = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(files.OwnDataError, match=match):
        files.load(p, p, text_columns="t", label_column="y")


def test_regression_label_not_a_number(tmp_path):
    p = write_csv(tmp_path / "train.csv", ["t", "y"], [("x", "1.5"), ("x", "high")])
    with pytest.raises(files.OwnDataError, match=r"train.csv:3: label 'high' in column 'y' is "
                                                 r"not a \(finite\) number"):
        files.load(p, p, text_columns="t", label_column="y", regression=True)


def test_malformed_rows(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("text\tlabel\na\t1\nb\tc\t1\n", encoding="utf-8")
    with pytest.raises(files.OwnDataError, match=r"train.tsv:3: 3 fields, but the header has 2"):
        files.read_split(p, ["text"], "label")
    j = tmp_path / "train.jsonl"
    j.write_text('{"text": "a"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(files.OwnDataError, match=r"train.jsonl:2: a JSON list"):
        files.read_split(j, ["text"], "label", labelled=False)
    j.write_text('{"text": "a"\n', encoding="utf-8")
    with pytest.raises(files.OwnDataError, match=r"train.jsonl:1: not a JSON object"):
        files.read_split(j, ["text"], "label")
    d = write_csv(tmp_path / "dup.csv", ["text", "text"], [("a", "b")])
    with pytest.raises(files.OwnDataError, match=r"dup.csv:1: column name\(s\) \['text'\]"):
        files.read_split(d, ["text"], "label")


@pytest.mark.parametrize("value", ["", "a,b,c", ",b", ["a", "b", "c"]])
def test_bad_text_columns(value):
    with pytest.raises(files.OwnDataError, match="text_columns="):
        files.parse_text_columns(value)


def test_unknown_suffix(tmp_path):
    (tmp_path / "train.xlsx").write_text("x", encoding="utf-8")
    with pytest.raises(files.OwnDataError, match=r"unknown file type '.xlsx'; expected a name "
                                                 r"ending in .csv, .tsv, .jsonl, .json"):
        files.read_split(tmp_path / "train.xlsx", ["text"], "label")
    with pytest.raises(FileNotFoundError, match="nope.csv: not found"):
        files.read_split(tmp_path / "nope.csv", ["text"], "label")
