"""Bad GLUE data: missing task directory or file, a foreign header, malformed rows (skipped and
counted in train, an error naming file:line in dev/test), labels outside the task's set, an empty
dev split. Errors come before any model is built; results already written stay."""
import json
import random

import pytest
from bad_input_helpers import checksums, sentence

from bertjax.finetune import grid

from bertjax.finetune.glue import tasks
from configs import glue as glue_config

RTE = tasks.get_task("RTE")
HEADER = ["index", "sentence1", "sentence2", "label"]
LABELS = ("entailment", "not_entailment")


def write_rte(root, n_train=40, n_dev=16, n_test=8, seed=0):
    """<root>/RTE/{train,dev,test}.tsv in GLUE's layout."""
    r = random.Random(seed)
    d = root / "RTE"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = [[str(i), sentence(r), sentence(r), r.choice(LABELS)] for i in range(n)]
        (d / name).write_text("\n".join("\t".join(x) for x in [HEADER] + rows) + "\n")
    rows = [[str(i), sentence(r), sentence(r)] for i in range(n_test)]
    (d / "test.tsv").write_text("\n".join("\t".join(x) for x in [HEADER[:3]] + rows) + "\n")
    return d


def _edit_line(path, line: int, fn):
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def micro(**overrides):
    """configs/glue.py's tiny preset, shrunk so that a run compiles in seconds."""
    c = glue_config.get_config("RTE,tiny")
    c.model.update(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32,
                   hidden_dropout_rate=0.0, attention_dropout_rate=0.0)
    c.update(dict(max_seq_length=32, buckets=(), batch_sizes=(16,), eval_batch_size=16,
                  num_seeds=1, predict_test=False, log_every=1000))
    c.update(overrides)
    return c


def test_missing_task_directory_fails_before_anything_is_written(tmp_path, small_tokenizers):
    (tmp_path / "glue").mkdir()
    with pytest.raises(FileNotFoundError, match=r"GLUE RTE: missing \[.*RTE/train.tsv', "
                                                r"'.*RTE/dev.tsv'\] under the data directory "
                                                r"\(--data_dir, or its old name --glue_dir\)"):
        grid.run(micro(), str(tmp_path / "glue"), "", str(tmp_path / "run"),
                     str(small_tokenizers[0]))
    assert not (tmp_path / "run").exists()


def test_missing_dev_file(tmp_path):
    write_rte(tmp_path)
    (tmp_path / "RTE" / "dev.tsv").unlink()
    assert tasks.task_files_missing(RTE, tmp_path) == [str(tmp_path / "RTE" / "dev.tsv")]
    with pytest.raises(FileNotFoundError, match=r"GLUE RTE: missing \['.*RTE/dev.tsv'\]"):
        tasks.load_task(RTE, tmp_path)


def test_header_that_is_not_the_tasks(tmp_path):
    d = write_rte(tmp_path)
    (d / "dev.tsv").write_text("sentence\tlabel\nA film.\t1\n")  # SST-2's header
    with pytest.raises(tasks.GlueFormatError, match=r"RTE/dev.tsv:1: header \['sentence', "
                                                    r"'label'\] lacks column\(s\) \['sentence1', "
                                                    r"'sentence2'\] of the GLUE RTE"):
        tasks.load_task(RTE, tmp_path)


def _malformed_train(root):
    d = write_rte(root)
    _edit_line(d / "train.tsv", 5, lambda s: s.rsplit("\t", 1)[0])     # a field missing
    _edit_line(d / "train.tsv", 9, lambda s: s + "\textra")             # one too many
    return f"{d / 'train.tsv'}: skipped 2 malformed row(s) (wrong number of tab-separated " \
           "fields) at line(s) 5, 9"


def test_malformed_train_rows_are_skipped_and_counted(tmp_path):
    """The public QQP train.tsv has rows with a missing or extra field: skipped in train, with
    the count and lines in TaskData.notes (which fine-tuning writes into results.json)."""
    note = _malformed_train(tmp_path)
    td = tasks.load_task(RTE, tmp_path)
    assert len(td.train) == 38 and td.train.skipped_lines == [5, 9]
    assert note in td.notes


@pytest.mark.slow  # compiles a fine-tuning run (~20 s on a busy 2-core machine)
def test_malformed_train_rows_show_in_results_json(tmp_path, small_tokenizers):
    note = _malformed_train(tmp_path / "glue")
    summary = grid.run(micro(max_train_examples=0, max_steps=1), str(tmp_path / "glue"), "",
                           str(tmp_path / "run"), str(small_tokenizers[0]))
    results = json.loads((tmp_path / "run" / "RTE" / "results.json").read_text())
    assert note in results["notes"] and results["examples"]["train"] == 38
    assert summary["tasks"]


@pytest.mark.parametrize("name, line", [("dev.tsv", 7), ("test.tsv", 3)])
def test_malformed_dev_or_test_row_is_an_error_naming_file_and_line(tmp_path, name, line):
    d = write_rte(tmp_path)
    _edit_line(d / name, line, lambda s: s + "\textra")
    with pytest.raises(tasks.GlueFormatError, match=rf"RTE/{name}:{line}: malformed row with "
                                                    rf"\d tab-separated fields; the RTE layout "
                                                    rf"has \d"):
        tasks.load_task(RTE, tmp_path)


def test_label_outside_the_tasks_set(tmp_path):
    """Training rows with a label the task does not have are skipped and counted (as malformed
    rows are); in a dev file it is an error naming the file and line."""
    d = write_rte(tmp_path)
    _edit_line(d / "train.tsv", 4, lambda s: s.rsplit("\t", 1)[0] + "\tcontradiction")
    data = tasks.load_task(RTE, tmp_path)
    assert data.train.skipped_labels == [4] and len(data.train) == 39
    assert any("skipped 1 row(s) whose label is not one of ['entailment', 'not_entailment'], "
               "at line(s) 4" in n for n in data.notes)
    _edit_line(d / "dev.tsv", 3, lambda s: s.rsplit("\t", 1)[0] + "\tcontradiction")
    with pytest.raises(tasks.GlueFormatError, match=r"RTE/dev.tsv:3: label 'contradiction' in "
                                                    r"column 'label' is not one of "
                                                    r"\['entailment', 'not_entailment'\]"):
        tasks.load_task(RTE, tmp_path)


@pytest.mark.parametrize("score", ["7.5", "-0.5", "nan"])
def test_sts_b_score_outside_0_to_5(tmp_path, score):
    d = tmp_path / "STS-B"
    d.mkdir()
    r = random.Random(0)
    for name in ("train.tsv", "dev.tsv"):
        rows = [f"{i}\t{sentence(r)}\t{sentence(r)}\t{r.uniform(0, 5):.2f}" for i in range(6)]
        (d / name).write_text("index\tsentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")
    _edit_line(d / "train.tsv", 2, lambda s: s.rsplit("\t", 1)[0] + f"\t{score}")
    data = tasks.load_task(tasks.get_task("STS-B"), tmp_path)
    assert data.train.skipped_labels == [2]
    assert 0 <= data.train.labels.min() and data.train.labels.max() <= 5
    assert any("skipped 1 row(s) whose label is not a score in [0, 5], at line(s) 2" in n
               for n in data.notes)
    _edit_line(d / "dev.tsv", 3, lambda s: s.rsplit("\t", 1)[0] + f"\t{score}")
    with pytest.raises(tasks.GlueFormatError, match=rf"STS-B/dev.tsv:3: label '{score}' in "
                                                    r"column 'score' is outside STS-B's range "
                                                    r"\[0, 5\]"):
        tasks.load_task(tasks.get_task("STS-B"), tmp_path)


def test_empty_dev_split_fails_before_the_model_and_keeps_earlier_results(tmp_path,
                                                                          small_tokenizers):
    root = tmp_path / "glue"
    write_rte(root)
    run_dir = tmp_path / "run"
    (run_dir / "CoLA").mkdir(parents=True)  # results of an earlier run in the same workdir
    (run_dir / "CoLA" / "results.json").write_text('{"task": "CoLA"}')
    before = checksums(run_dir)
    (root / "RTE" / "dev.tsv").write_text("\t".join(HEADER) + "\n")
    with pytest.raises(tasks.GlueFormatError, match=r"RTE/dev.tsv: no examples \(only a header, "
                                                    r"or only malformed rows\)"):
        grid.run(micro(), str(root), "", str(run_dir), str(small_tokenizers[0]))
    assert checksums(run_dir) == before
