"""Result files: atomic JSON and the md/csv tables that sweeps, GLUE and studies write.

One writer for each, so every results file in a workdir is written the same way: a crash
never leaves half a file (write to a temporary name, then rename), and every table exists as
Markdown (to read) and CSV (to load).
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np


def _json_default(x):
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, set)):
        return list(x)
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> pathlib.Path:
    """Writes `obj` as JSON to `path` atomically (temporary file + rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent, default=_json_default), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(stem: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence],
                title: str = "") -> tuple[pathlib.Path, pathlib.Path]:
    """<stem>.md and <stem>.csv holding the same rows (each written atomically)."""
    stem = pathlib.Path(stem)
    md, csv_path = stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".csv")
    text = (f"# {title}\n\n" if title else "") + markdown_table(header, rows)
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, md)
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([list(header)] + [list(r) for r in rows])
    os.replace(tmp, csv_path)
    return md, csv_path
