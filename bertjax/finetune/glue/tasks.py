"""GLUE task specs and readers.

A `TaskSpec` says, for one task, where its files are, which columns hold the two texts and the
label, which labels exist (None = regression), which metric selects models, and what the GLUE
submission files are called. Readers turn the standard GLUE TSV layout (as written by the usual
download script) into a `Split`: plain Python lists and numpy arrays, nothing tokenised yet.

Files are read with quoting disabled because GLUE text holds bare double quotes (MRPC, SST-2,
QNLI): with csv's default quoting a stray quote would swallow tabs and newlines silently. Every
row must then have exactly as many fields as the header. A row that does not is skipped and
counted in a training file (the public QQP train.tsv has a few such rows; the count and line
numbers go into TaskData.notes, hence results.json), and is an error naming the file and line in
a dev or test file (a skipped dev row would change the reported metric, a skipped test row the
submission).
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np

from bertjax.finetune.own_data import tfds_records

# The metric kinds of metrics.py; each task reports all metrics of its kind.
ACCURACY, F1_ACCURACY, MATTHEWS, CORRELATION = "accuracy", "f1_accuracy", "matthews", "correlation"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str                        # GLUE's name: CoLA, SST-2, ...
    text_a: str                      # column names (after the header, or `headerless_columns`)
    text_b: str | None               # None: a single-sentence task
    label: str
    labels: tuple[str, ...] | None   # label strings in model-output order; None = regression
    metric: str                      # one of the metric kinds above
    primary: str                     # the metric used for model selection and the GLUE average
    dev: Mapping[str, str]           # metric suffix -> file ('' for the single dev set)
    test: Mapping[str, str]          # submission name (without .tsv) -> file
    index: str = "index"             # test-file column written as the submission's `index`
    headerless_columns: tuple[str, ...] | None = None  # train/dev files without a header row
    large: bool = False              # >= 50k training examples: fewer seeds by default
    directory: str = ""              # folder under glue_dir; defaults to `name`
    label_range: tuple[float, float] | None = None  # regression: the scores the task defines

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def folder(self) -> str:
        return self.directory or self.name


_PAIR = dict(text_a="sentence1", text_b="sentence2", label="label")
_ENTAILMENT = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("CoLA", text_a="sentence", text_b=None, label="label", labels=("0", "1"),
             metric=MATTHEWS, primary="mcc", dev={"": "dev.tsv"}, test={"CoLA": "test.tsv"},
             headerless_columns=("source", "label", "original_label", "sentence")),
    TaskSpec("SST-2", text_a="sentence", text_b=None, label="label", labels=("0", "1"),
             metric=ACCURACY, primary="accuracy", dev={"": "dev.tsv"},
             test={"SST-2": "test.tsv"}, large=True),
    TaskSpec("MRPC", text_a="#1 String", text_b="#2 String", label="Quality",
             labels=("0", "1"), metric=F1_ACCURACY, primary="f1", dev={"": "dev.tsv"},
             test={"MRPC": "test.tsv"}),
    TaskSpec("STS-B", text_a="sentence1", text_b="sentence2", label="score", labels=None,
             metric=CORRELATION, primary="spearman",
             dev={"": "dev.tsv"}, test={"STS-B": "test.tsv"}, label_range=(0.0, 5.0)),
    TaskSpec("QQP", text_a="question1", text_b="question2", label="is_duplicate",
             labels=("0", "1"), metric=F1_ACCURACY, primary="f1", dev={"": "dev.tsv"},
             test={"QQP": "test.tsv"}, index="id", large=True),
    TaskSpec("MNLI", text_a="sentence1", text_b="sentence2", label="gold_label",
             labels=("contradiction", "entailment", "neutral"), metric=ACCURACY,
             primary="accuracy_m", dev={"m": "dev_matched.tsv", "mm": "dev_mismatched.tsv"},
             test={"MNLI-m": "test_matched.tsv", "MNLI-mm": "test_mismatched.tsv",
                   "AX": "../diagnostic/diagnostic.tsv"}, large=True),
    TaskSpec("QNLI", text_a="question", text_b="sentence", label="label", labels=_ENTAILMENT,
             metric=ACCURACY, primary="accuracy", dev={"": "dev.tsv"}, test={"QNLI": "test.tsv"},
             large=True),
    TaskSpec("RTE", **_PAIR, labels=_ENTAILMENT, metric=ACCURACY, primary="accuracy",
             dev={"": "dev.tsv"}, test={"RTE": "test.tsv"}),
    TaskSpec("WNLI", **_PAIR, labels=("0", "1"), metric=ACCURACY, primary="accuracy",
             dev={"": "dev.tsv"}, test={"WNLI": "test.tsv"}),
]}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        lower = {k.lower(): k for k in TASKS}
        if name.lower() in lower:
            return TASKS[lower[name.lower()]]
        raise ValueError(f"unknown GLUE task {name!r}; expected one of {list(TASKS)}")
    return TASKS[name]


@dataclasses.dataclass
class Split:
    """One file's examples. `labels` is int (class index) or float32 (regression) or None."""
    path: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray | None
    ids: list[str]                   # the `index` column (test files) or the line number
    skipped_lines: list[int] = dataclasses.field(default_factory=list)  # malformed rows skipped
    skipped_labels: list[int] = dataclasses.field(default_factory=list)  # bad labels skipped

    def __len__(self) -> int:
        return len(self.text_a)


class GlueFormatError(ValueError):
    pass


def read_split(spec: TaskSpec, path: str | os.PathLike, labelled: bool,
               skip_malformed: bool = False) -> Split:
    """Reads one TSV file of `spec`'s layout. Test files (labelled=False) carry no label.

    A row with the wrong number of fields, or whose label is not one of the task's (a
    regression score: not a number, or outside the task's range, STS-B 0-5), is an error naming
    the file and line, or with `skip_malformed` (training files) skipped and its line number
    kept in `Split.skipped_lines` / `Split.skipped_labels`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected the GLUE {spec.name} layout)")
    # utf-8-sig: MRPC's files as written by the download script start with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if labelled and spec.headerless_columns:
            header, first_line = list(spec.headerless_columns), 1
        else:
            header, first_line = next(rows, None), 2
            if header is None:
                raise GlueFormatError(f"{path}: empty file; expected a header row")
        needed = [spec.text_a] + ([spec.text_b] if spec.text_b else [])
        needed += [spec.label] if labelled else [spec.index]
        missing = [c for c in needed if c not in header]
        if missing:
            raise GlueFormatError(
                f"{path}:1: header {header} lacks column(s) {missing} of the GLUE {spec.name} "
                f"{'train/dev' if labelled else 'test'} layout")
        col = {name: header.index(name) for name in needed}
        text_a, text_b, labels, ids, skipped, bad_labels = [], [], [], [], [], []
        for line, row in enumerate(rows, start=first_line):
            if len(row) != len(header) and skip_malformed:
                skipped.append(line)
                continue
            if len(row) != len(header):
                raise GlueFormatError(
                    f"{path}:{line}: malformed row with {len(row)} tab-separated fields; the "
                    f"{spec.name} layout has {len(header)} ({header})")
            if labelled:
                try:
                    labels.append(_label_value(spec, path, line, row[col[spec.label]]))
                except GlueFormatError:
                    if not skip_malformed:
                        raise
                    bad_labels.append(line)
                    continue
                ids.append(str(line))
            else:
                ids.append(row[col[spec.index]])
            text_a.append(row[col[spec.text_a]])
            if spec.text_b:
                text_b.append(row[col[spec.text_b]])
    dtype = np.float32 if spec.is_regression else np.int32
    return Split(str(path), text_a, text_b if spec.text_b else None,
                 np.asarray(labels, dtype) if labelled else None, ids, skipped, bad_labels)


def _label_value(spec: TaskSpec, path, line: int, value: str) -> float | int:
    """One label string -> its class index, or its score for regression (checked in range)."""
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            raise GlueFormatError(
                f"{path}:{line}: label {value!r} in column {spec.label!r} is not a number "
                f"({spec.name} is a regression task)") from None
        lo, hi = spec.label_range or (-np.inf, np.inf)
        if not lo <= score <= hi:  # NaN fails too
            raise GlueFormatError(
                f"{path}:{line}: label {value!r} in column {spec.label!r} is outside "
                f"{spec.name}'s range [{lo:g}, {hi:g}]")
        return score
    if value not in spec.labels:
        raise GlueFormatError(
            f"{path}:{line}: label {value!r} in column {spec.label!r} is not one of "
            f"{list(spec.labels)}")
    return spec.labels.index(value)


@dataclasses.dataclass
class TaskData:
    spec: TaskSpec
    train: Split
    dev: dict[str, Split]            # metric suffix -> split
    test: dict[str, Split]           # submission name -> split (only those present)
    notes: list[str]                 # e.g. test files not found


def task_files_missing(spec: TaskSpec, glue_dir) -> list[str]:
    """The files fine-tuning needs (train and dev) that are absent, as paths."""
    folder = pathlib.Path(glue_dir) / spec.folder
    need = ["train.tsv", *spec.dev.values()]
    return [str(folder / f) for f in need if not (folder / f).is_file()]


def load_task(spec: TaskSpec, glue_dir) -> TaskData:
    """Reads train, dev and (whichever exist) test files of one task from the TSV layout."""
    missing = task_files_missing(spec, glue_dir)
    if missing:
        raise FileNotFoundError(f"GLUE {spec.name}: missing {missing}")
    folder = pathlib.Path(glue_dir) / spec.folder
    train = read_split(spec, folder / "train.tsv", labelled=True, skip_malformed=True)
    dev = {suffix: read_split(spec, folder / f, labelled=True) for suffix, f in spec.dev.items()}
    for split in [train, *dev.values()]:
        if not len(split):
            raise GlueFormatError(f"{split.path}: no examples (only a header, or only malformed "
                                  "rows); fine-tuning needs labelled rows")
    test, notes = {}, []
    if train.skipped_lines:
        notes.append(malformed_note(train))
    if train.skipped_labels:
        notes.append(bad_label_note(spec, train))
    for name, f in spec.test.items():
        p = folder / f
        if p.is_file():
            test[name] = read_split(spec, p, labelled=False)
        else:
            notes.append(f"no {name}.tsv submission: {p.resolve()} not found")
    return TaskData(spec, train, dev, test, notes)


def malformed_note(split: Split) -> str:
    lines = split.skipped_lines
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    return (f"{split.path}: skipped {len(lines)} malformed row(s) (wrong number of "
            f"tab-separated fields) at line(s) {shown}")


def bad_label_note(spec: TaskSpec, split: Split) -> str:
    lines = split.skipped_labels
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    expected = (f"a score in [{spec.label_range[0]:g}, {spec.label_range[1]:g}]"
                if spec.is_regression and spec.label_range else
                "a number" if spec.is_regression else f"one of {list(spec.labels)}")
    return (f"{split.path}: skipped {len(lines)} row(s) whose label is not {expected}, at "
            f"line(s) {shown}")


# --- TFDS (optional second source) -----------------------------------------------------------
# TFDS names the GLUE configs in lower case and its splits differently; its label features are
# ClassLabels whose names we map back onto our label strings, so both sources give equal Splits.
TFDS_CONFIG = {"CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "STS-B": "stsb", "QQP": "qqp",
               "MNLI": "mnli", "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli"}
TFDS_TEXT = {"CoLA": ("sentence", None), "SST-2": ("sentence", None),
             "MRPC": ("sentence1", "sentence2"), "STS-B": ("sentence1", "sentence2"),
             "QQP": ("question1", "question2"), "MNLI": ("premise", "hypothesis"),
             "QNLI": ("question", "sentence"), "RTE": ("sentence1", "sentence2"),
             "WNLI": ("sentence1", "sentence2")}
TFDS_SPLITS = {"MNLI": {"train": "train", "m": "validation_matched",
                        "mm": "validation_mismatched", "MNLI-m": "test_matched",
                        "MNLI-mm": "test_mismatched"}}


def split_from_records(spec: TaskSpec, records, label_names: Sequence[str] | None,
                       where: str, labelled: bool) -> Split:
    """TFDS-style example dicts ({'idx', text fields, 'label'}) -> Split. Pure; tested alone."""
    a_key, b_key = TFDS_TEXT[spec.name]
    text_a, text_b, labels, ids = [], [], [], []
    index = None if spec.is_regression else {l: i for i, l in enumerate(spec.labels)}
    for n, r in enumerate(records):
        dec = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)  # noqa: E731
        text_a.append(dec(r[a_key]))
        if b_key:
            text_b.append(dec(r[b_key]))
        ids.append(str(int(r["idx"])))
        if labelled:
            if spec.is_regression:
                labels.append(float(r["label"]))
            else:
                name = label_names[int(r["label"])] if label_names else str(int(r["label"]))
                if name not in index:
                    raise GlueFormatError(f"{where}[{n}]: label {name!r} is not one of "
                                          f"{list(spec.labels)}")
                labels.append(index[name])
    arr = None
    if labelled:
        arr = np.asarray(labels, np.float32 if spec.is_regression else np.int32)
    return Split(where, text_a, text_b if b_key else None, arr, ids)


def load_task_tfds(spec: TaskSpec, data_dir: str | None = None) -> TaskData:
    """The same TaskData from TFDS `glue/<config>`, prepared beforehand in data_dir (these
    machines cannot download); read without TensorFlow when prepared as array_record."""
    name = f"glue/{TFDS_CONFIG[spec.name]}"
    builder = tfds_records.builder(name, data_dir)
    # TFDS's ClassLabel index i is GLUE's label "i" for the 0/1 tasks (e.g. CoLA 1 =
    # 'acceptable'); only the tasks with word labels need their names mapped.
    names = None
    if spec.labels and spec.labels != ("0", "1"):
        names = list(builder.info.features["label"].names)
    splits = TFDS_SPLITS.get(spec.name, {"train": "train", "": "validation",
                                         spec.name: "test"})

    def read(key, labelled):
        ds = tfds_records.read_records(builder, splits[key])
        return split_from_records(spec, ds, names, f"{name}:{splits[key]}", labelled)

    dev = {k: read(k, True) for k in spec.dev}
    test = {k: read(k, False) for k in spec.test if k in splits}
    notes = [f"no {k}.tsv submission from TFDS" for k in spec.test if k not in splits]
    return TaskData(spec, read("train", True), dev, test, notes)
