import csv
import json

import numpy as np

from bertjax import records


def test_write_json_atomic_and_numpy(tmp_path):
    p = records.write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": (1, 2),
                                                 "c": np.arange(2)})
    assert json.loads(p.read_text()) == {"a": 0.5, "b": [1, 2], "c": [0, 1]}
    assert not list(tmp_path.glob("*.tmp"))


def test_write_json_failure_keeps_old_file(tmp_path):
    p = records.write_json(tmp_path / "r.json", {"ok": 1})
    try:
        records.write_json(p, {"bad": object()})
    except TypeError:
        pass
    assert json.loads(p.read_text()) == {"ok": 1}


def test_write_table_md_and_csv_agree(tmp_path):
    md, cs = records.write_table(tmp_path / "summary", ["point", "loss"],
                                 [["a", 1.23456], ["b", None]], title="T")
    assert md.read_text().splitlines() == ["# T", "", "| point | loss |", "|---|---|",
                                           "| a | 1.2346 |", "| b | n/a |"]
    assert list(csv.reader(cs.open())) == [["point", "loss"], ["a", "1.23456"], ["b", ""]]
