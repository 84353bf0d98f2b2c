import numpy as np
import pytest
from glue_fixtures import SIZES, write_task

from bertjax.finetune.glue import tasks


def test_every_task_layout_reads_with_its_row_counts_and_labels(glue_dir):
    root, counts = glue_dir
    for name in tasks.TASK_NAMES:
        spec = tasks.get_task(name)
        td = tasks.load_task(spec, root)
        n_train, n_dev, n_test = SIZES[name]
        assert len(td.train) == n_train, name
        assert [len(s) for s in td.dev.values()] == [n_dev] * len(spec.dev), name
        expect_test = {k: n_test for k in spec.test}
        if name == "MNLI":
            expect_test["AX"] = n_test + 3
        assert {k: len(v) for k, v in td.test.items()} == expect_test, name
        assert td.notes == []
        assert (td.train.text_b is None) == (spec.text_b is None)
        assert all(t for t in td.train.text_a), name
        if spec.is_regression:
            assert td.train.labels.dtype == np.float32
            assert 0 <= td.train.labels.min() and td.train.labels.max() <= 5
        else:
            assert td.train.labels.dtype == np.int32
            assert set(td.train.labels) <= set(range(spec.num_labels))
        for split in td.test.values():
            assert split.labels is None
            assert split.ids == [str(i) for i in range(len(split))], name


def test_reader_keeps_columns_and_values_exactly(tmp_path):
    write_task(tmp_path, "MRPC")
    spec = tasks.get_task("MRPC")
    lines = (tmp_path / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    split = tasks.read_split(spec, tmp_path / "MRPC" / "train.tsv", labelled=True)
    first = lines[1].split("\t")
    assert first[3].startswith('"')  # a bare quote, which csv's default quoting would eat
    assert (split.text_a[0], split.text_b[0], split.labels[0]) == (first[3], first[4],
                                                                     int(first[0]))
    write_task(tmp_path, "CoLA")  # headerless: the first line is data
    cola = tasks.read_split(tasks.get_task("CoLA"), tmp_path / "CoLA" / "train.tsv", True)
    row = (tmp_path / "CoLA" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert (cola.text_a[0], cola.labels[0], cola.ids[0]) == (row[3], int(row[1]), "1")
    mnli = tasks.load_task(tasks.get_task("MNLI"), _mnli(tmp_path))
    dev = (tmp_path / "MNLI" / "dev_mismatched.tsv").read_text().splitlines()
    assert len(dev[0].split("\t")) == 16
    last = dev[1].split("\t")
    assert tasks.get_task("MNLI").labels[mnli.dev["mm"].labels[0]] == last[-1]
    assert mnli.dev["mm"].text_b[0] == last[9]


def _mnli(root):
    write_task(root, "MNLI")
    return root


def test_malformed_row_is_an_error_naming_file_and_line(tmp_path):
    write_task(tmp_path, "QQP")
    path = tmp_path / "QQP" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[4] = lines[4] + "\textra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(tasks.GlueFormatError, match=r"QQP/dev.tsv:5: malformed row with 7"):
        tasks.load_task(tasks.get_task("QQP"), tmp_path)


def test_bad_label_and_missing_column_are_errors_naming_the_file(tmp_path):
    write_task(tmp_path, "RTE")
    path = tmp_path / "RTE" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(tasks.GlueFormatError, match=r"RTE/train.tsv:4: label 'maybe'"):
        tasks.read_split(tasks.get_task("RTE"), path, labelled=True)
    write_task(tmp_path, "STS-B")
    path = tmp_path / "STS-B" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tfive"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(tasks.GlueFormatError, match=r"STS-B/dev.tsv:3: label 'five' in column "
                                                    r"'score' is not a number"):
        tasks.read_split(tasks.get_task("STS-B"), path, labelled=True)
    with pytest.raises(tasks.GlueFormatError, match=r"test.tsv:1: header .* lacks column\(s\) "
                                                    r"\['score'\]"):
        tasks.read_split(tasks.get_task("STS-B"), tmp_path / "STS-B" / "test.tsv", True)


def test_missing_files_are_reported_and_test_files_optional(tmp_path):
    write_task(tmp_path, "WNLI")
    (tmp_path / "WNLI" / "test.tsv").unlink()
    td = tasks.load_task(tasks.get_task("WNLI"), tmp_path)
    assert td.test == {} and "no WNLI.tsv submission" in td.notes[0]
    (tmp_path / "WNLI" / "train.tsv").unlink()
    assert tasks.task_files_missing(tasks.get_task("WNLI"), tmp_path) == [
        str(tmp_path / "WNLI" / "train.tsv")]
    with pytest.raises(FileNotFoundError, match="WNLI: missing"):
        tasks.load_task(tasks.get_task("WNLI"), tmp_path)


def test_task_lookup():
    assert tasks.get_task("sst-2").name == "SST-2"
    assert tasks.get_task("STS-B").is_regression and tasks.get_task("STS-B").num_labels == 1
    assert tasks.get_task("MNLI").num_labels == 3
    with pytest.raises(ValueError, match="unknown GLUE task 'SST'"):
        tasks.get_task("SST")


def test_tfds_records_map_onto_the_same_labels():
    # TFDS glue/mnli orders its ClassLabel names differently from our label tuple.
    spec = tasks.get_task("MNLI")
    recs = [{"idx": 7, "premise": b"A man sleeps.", "hypothesis": b"A man is awake.",
             "label": 2}, {"idx": 8, "premise": b"p", "hypothesis": b"h", "label": 0}]
    s = tasks.split_from_records(spec, recs, ["entailment", "neutral", "contradiction"],
                                 "tfds", labelled=True)
    assert [spec.labels[i] for i in s.labels] == ["contradiction", "entailment"]
    assert s.text_a[0] == "A man sleeps." and s.ids == ["7", "8"]
    cola = tasks.split_from_records(tasks.get_task("CoLA"), [{"idx": 0, "sentence": "x",
                                                              "label": 1}], None, "t", True)
    assert cola.labels.tolist() == [1] and cola.text_b is None
