"""Your own labelled text as CSV, TSV or JSON Lines (the `custom` task) -> GLUE-shaped Splits.

The format follows the file name: `.csv` is RFC 4180 CSV (the csv module's default dialect:
comma-separated, fields with commas, quotes or newlines inside double quotes, as spreadsheets
and pandas write it); `.tsv` is tab-separated *without* quoting, GLUE's convention (a bare
double quote is text, so a GLUE TSV file reads exactly as the GLUE reader reads it); `.jsonl`
(or `.json`) holds one JSON object per line. CSV and TSV files start with a header row naming
the columns; in JSON Lines the keys are the columns.

`text_columns` names one text column (single-sentence task) or two (a pair, `[CLS] a [SEP] b
[SEP]`); `label_column` the label. Classification when the labels are strings or integers:
the label set is the training file's labels in first-seen order (or `label_names`, to fix the
order), and a dev/test label outside it is an error that lists them. Regression
(`regression=True`) reads the labels as numbers. A label like "0.5" or 2.5 under
classification is an error (it looks like a regression target), never a class named "0.5".
The test file is optional; its labels are used when it has the label column.

Every bad row is an error naming the file and line: an example silently dropped from dev or
test would change the reported metric.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
from typing import Any, Iterator, Sequence

import numpy as np

from bertjax.finetune.glue.tasks import Split

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_FLOAT = re.compile(r"^\s*[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+)\s*$")


class OwnDataError(ValueError):
    pass


@dataclasses.dataclass
class OwnData:
    train: Split
    dev: Split
    test: Split | None
    label_names: tuple[str, ...] | None     # class index -> label; None = regression
    notes: list[str]

    @property
    def regression(self) -> bool:
        return self.label_names is None


def parse_text_columns(text_columns: str | Sequence[str]) -> tuple[str, ...]:
    """'a' or 'a,b' (or a sequence of names) -> one or two column names."""
    names = text_columns.split(",") if isinstance(text_columns, str) else list(text_columns)
    names = tuple(n.strip() for n in names)
    if not 1 <= len(names) <= 2 or not all(names):
        raise OwnDataError(f"text_columns={text_columns!r}: expected one column name or two "
                           "separated by a comma (a sentence pair), e.g. 'text' or 'premise,"
                           "hypothesis'")
    return names


def file_format(path: str | os.PathLike) -> str:
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OwnDataError(f"{path}: unknown file type {suffix or '(none)'!r}; expected a name "
                           f"ending in {', '.join(FORMATS)} (CSV, TSV or JSON Lines)")
    return FORMATS[suffix]


def read_rows(path: str | os.PathLike) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """-> (the file's columns, (line, {column: value}) per example). CSV/TSV values are
    strings; JSON values keep their JSON type."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    kind = file_format(path)
    if kind == "jsonl":
        rows = list(_json_rows(path))
        if not rows:
            raise OwnDataError(f"{path}: empty file; expected one JSON object per line")
        return list(rows[0][1]), iter(rows)
    # utf-8-sig: spreadsheet exports (and GLUE's MRPC) start with a byte-order mark.
    f = open(path, encoding="utf-8-sig", newline="")
    reader = (csv.reader(f) if kind == "csv"
              else csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = next(reader, None)
    if header is None:
        f.close()
        raise OwnDataError(f"{path}: empty file; expected a header row naming the columns")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        f.close()
        raise OwnDataError(f"{path}:1: column name(s) {duplicated} appear twice in the header")
    return header, _table_rows(path, f, reader, header)


def _table_rows(path, f, reader, header) -> Iterator[tuple[int, dict]]:
    with f:
        start = reader.line_num + 1
        for row in reader:
            if len(row) != len(header):
                raise OwnDataError(
                    f"{path}:{start}: {len(row)} fields, but the header has {len(header)} "
                    f"({header})" + (" (a TSV file is not quoted: a tab inside a text "
                                     "splits it)" if path.suffix.lower() == ".tsv" else ""))
            yield start, dict(zip(header, row))
            start = reader.line_num + 1


def _json_rows(path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise OwnDataError(f"{path}:{number}: not a JSON object ({e.msg}); JSON Lines "
                                   "holds one object per line") from None
            if not isinstance(row, dict):
                raise OwnDataError(f"{path}:{number}: a JSON {type(row).__name__}, expected an "
                                   "object {\"column\": value, ...} per line")
            yield number, row


def _text(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    raise OwnDataError(f"{where}: column {column!r} holds {value!r}; expected a string")


def label_string(value: Any, where: str, column: str) -> str:
    """A classification label as a string; floats (2.5, "0.5", "1e3") are refused."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise OwnDataError(f"{where}: label {value!r} in column {column!r}; expected a string "
                           "or an integer class label")
    if isinstance(value, float) or (isinstance(value, str) and _FLOAT.match(value)):
        raise OwnDataError(
            f"{where}: label {value!r} in column {column!r} is a floating-point number; "
            "classification takes string or integer labels. For a regression task set "
            "regression=True")
    if isinstance(value, str) and not value.strip():
        raise OwnDataError(f"{where}: empty label in column {column!r}")
    return str(value)


def label_number(value: Any, where: str, column: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise OwnDataError(f"{where}: label {value!r} in column {column!r} is not a (finite) "
                           "number; a regression task needs numeric labels")
    return x


def read_split(path: str | os.PathLike, text_columns: Sequence[str], label_column: str, *,
               labelled: bool | None = True, regression: bool = False
               ) -> tuple[Split, list[tuple[str, str]] | None]:
    """One file -> (Split with labels None, raw labels as (where, label string)) for
    classification; regression Splits come with their float32 labels and None. `labelled`
    None: labelled iff the file has the label column (test files)."""
    path = pathlib.Path(path)
    header, rows = read_rows(path)
    if labelled is None:
        labelled = label_column in header
    needed = list(text_columns) + ([label_column] if labelled else [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise OwnDataError(f"{path}: no column(s) {missing}; the file has the columns "
                           f"{header}. Set text_columns and label_column to its names")
    texts = [[] for _ in text_columns]
    raw, ids = [], []
    for line, row in rows:
        where = f"{path}:{line}"
        absent = [c for c in needed if c not in row]
        if absent:
            raise OwnDataError(f"{where}: no key(s) {absent}; this line has {sorted(row)}")
        for t, c in zip(texts, text_columns):
            t.append(_text(row[c], where, c))
        if labelled:
            raw.append((where, row[label_column]))
        ids.append(str(line))
    if not ids:
        raise OwnDataError(f"{path}: no examples (only a header); expected labelled rows")
    labels = None
    if labelled and regression:
        labels = np.array([label_number(v, w, label_column) for w, v in raw], np.float32)
    split = Split(str(path), texts[0], texts[1] if len(texts) == 2 else None, labels, ids)
    if labelled and not regression:
        return split, [(w, label_string(v, w, label_column)) for w, v in raw]
    return split, None


def label_index(split: Split, raw: Sequence[tuple[str, str]], names: Sequence[str]) -> Split:
    """The split with its labels as indices into `names`; unknown labels listed in an error."""
    index = {n: i for i, n in enumerate(names)}
    unknown = {}
    for where, label in raw:
        if label not in index:
            unknown.setdefault(label, where)
    if unknown:
        listed = ", ".join(f"{k!r} ({w})" for k, w in unknown.items())
        raise OwnDataError(f"{split.path}: label(s) {listed} are not among the training "
                           f"labels {list(names)}")
    return dataclasses.replace(split, labels=np.array([index[l] for _, l in raw], np.int32))


def load(train_file, dev_file, test_file=None, *, text_columns: str | Sequence[str],
         label_column: str, regression: bool = False,
         label_names: Sequence[str] | None = None) -> OwnData:
    """Reads every file (checking all of them) before anything is tokenised."""
    columns = parse_text_columns(text_columns)
    read = lambda p, labelled: read_split(p, columns, label_column, labelled=labelled,  # noqa: E731
                                          regression=regression)
    (train, train_raw), (dev, dev_raw) = read(train_file, True), read(dev_file, True)
    test, test_raw = read(test_file, None) if test_file else (None, None)
    notes = []
    if regression:
        names = None
    else:
        first_seen = tuple(dict.fromkeys(label for _, label in train_raw))
        names = tuple(str(n) for n in label_names) if label_names else first_seen
        if len(names) < 2 and not label_names:
            raise OwnDataError(f"{train.path}: every label is {names[0]!r}; classification "
                               "needs at least two classes in the training file")
        train = label_index(train, train_raw, names)
        dev = label_index(dev, dev_raw, names)
        if test_raw is not None:
            test = label_index(test, test_raw, names)
        notes.append(f"labels (class index order): {list(names)}")
    if test is None:
        notes.append("no test file")
    elif test.labels is None:
        notes.append(f"{test.path}: no {label_column!r} column, test predictions only")
    return OwnData(train, dev, test, names, notes)
