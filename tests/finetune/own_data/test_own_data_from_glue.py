"""A GLUE task's files turned into custom CSV / JSON Lines / TSV files read into exactly the
examples the GLUE reader gives (texts, labels, ids), so `custom` on them is the same task."""
import csv
import json
import pathlib
import random

import numpy as np
import pytest

from bertjax.finetune.own_data import files
from bertjax.finetune.glue import tasks

WORDS = "the a film movie good bad plot actor was is it this that said rose fell yes no".split()


def _sentence(r):
    return " ".join(r.choice(WORDS) for _ in range(r.randint(2, 8)))


def write_glue(root: pathlib.Path, task: str, n: int, seed: int) -> pathlib.Path:
    """A GLUE-layout TSV (header, quoting off) for SST-2, MRPC, STS-B or RTE."""
    r = random.Random(seed)
    spec = tasks.get_task(task)
    if task == "SST-2":
        header, rows = ["sentence", "label"], [[_sentence(r), r.choice("01")] for _ in range(n)]
    elif task == "MRPC":   # a byte-order mark and bare double quotes, as the real files have
        header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        rows = [[r.choice("01"), str(i), str(i + 1), '"' + _sentence(r), _sentence(r) + ' "x']
                for i in range(n)]
    elif task == "STS-B":
        header = ["index", "genre", "sentence1", "sentence2", "score"]
        rows = [[str(i), "main", _sentence(r), _sentence(r), f"{r.uniform(0, 5):.3f}"]
                for i in range(n)]
    else:
        header = ["index", "sentence1", "sentence2", "label"]
        rows = [[str(i), _sentence(r), _sentence(r), r.choice(spec.labels)] for i in range(n)]
    path = root / task / f"{seed}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    bom = "\ufeff" if task == "MRPC" else ""
    path.write_text(bom + "".join("\t".join(x) + "\n" for x in [header, *rows]),
                    encoding="utf-8")
    return path


def glue_to_custom(tsv: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The GLUE file's rows (every column) rewritten as `out` (.csv or .jsonl)."""
    with open(tsv, encoding="utf-8-sig", newline="") as f:
        header, *rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if out.suffix == ".csv":
        with open(out, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    else:
        out.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows),
                       encoding="utf-8")
    return out


def assert_same(spec, glue_split, own_split, names):
    assert own_split.text_a == glue_split.text_a
    assert own_split.text_b == glue_split.text_b
    # ids are line numbers: JSON Lines has no header line, so its examples start on line 1.
    shift = 1 if own_split.path.endswith(".jsonl") else 0
    assert own_split.ids == [str(int(i) - shift) for i in glue_split.ids]
    if spec.is_regression:
        np.testing.assert_array_equal(own_split.labels, glue_split.labels)
    else:
        assert [names[i] for i in own_split.labels] == [spec.labels[i] for i in glue_split.labels]


def custom_columns(spec):
    return dict(text_columns=",".join(c for c in (spec.text_a, spec.text_b) if c),
                label_column=spec.label, regression=spec.is_regression)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
@pytest.mark.parametrize("task", ["SST-2", "MRPC", "STS-B", "RTE"])
def test_custom_files_from_glue_files_give_the_same_examples(tmp_path, task, suffix):
    spec = tasks.get_task(task)
    train_tsv, dev_tsv = write_glue(tmp_path, task, 30, 0), write_glue(tmp_path, task, 12, 1)
    glue_train = tasks.read_split(spec, train_tsv, labelled=True)
    glue_dev = tasks.read_split(spec, dev_tsv, labelled=True)
    if suffix == ".tsv":   # the GLUE file itself, read as a custom TSV
        own_train, own_dev = train_tsv, dev_tsv
    else:
        own_train = glue_to_custom(train_tsv, tmp_path / f"train{suffix}")
        own_dev = glue_to_custom(dev_tsv, tmp_path / f"dev{suffix}")
    # GLUE's label order fixed: the same class indices, hence the same head rows.
    fixed = files.load(own_train, own_dev, label_names=spec.labels, **custom_columns(spec))
    assert_same(spec, glue_train, fixed.train, fixed.label_names)
    assert_same(spec, glue_dev, fixed.dev, fixed.label_names)
    if not spec.is_regression:
        assert fixed.train.labels.tolist() == glue_train.labels.tolist()
        # First-seen order: other indices, the same labels.
        seen = files.load(own_train, own_dev, **custom_columns(spec))
        assert set(seen.label_names) == set(spec.labels)
        assert_same(spec, glue_dev, seen.dev, seen.label_names)


@pytest.mark.shared_data
@pytest.mark.parametrize("task", ["SST-2", "MRPC", "STS-B"])
def test_real_glue_files_as_custom_csv(shared_data, tmp_path, task):
    spec = tasks.get_task(task)
    folder = shared_data / "glue" / task
    glue = {s: tasks.read_split(spec, folder / f"{s}.tsv", labelled=True)
            for s in ("train", "dev")}
    csvs = {s: glue_to_custom(folder / f"{s}.tsv", tmp_path / f"{s}.csv") for s in glue}
    own = files.load(csvs["train"], csvs["dev"], label_names=spec.labels, **custom_columns(spec))
    assert len(own.train) == len(glue["train"]) and len(own.dev) == len(glue["dev"])
    assert_same(spec, glue["train"], own.train, own.label_names)
    assert_same(spec, glue["dev"], own.dev, own.label_names)
