"""Against the real GLUE files in ../shared/data (skipped when absent)."""
import csv
import json
import pathlib

import pytest

from bertjax.finetune import grid

from bertjax.finetune.glue import tasks
from glue_fixtures import micro_config

REPO = pathlib.Path(__file__).resolve().parents[3]
TOKENIZER = REPO / "tokenizers" / "enwiki_30522_unigram.model"

# Row counts from ../shared/data/README.md (the official GLUE counts).
COUNTS = {"CoLA": (8551, 1043, 1063), "SST-2": (67349, 872, 1821), "MRPC": (3668, 408, 1725),
          "WNLI": (635, 71, 146)}


@pytest.mark.shared_data
def test_real_glue_files_read_with_the_official_row_counts(shared_data):
    glue = shared_data / "glue"
    for name, (n_train, n_dev, n_test) in COUNTS.items():
        td = tasks.load_task(tasks.get_task(name), glue)
        assert (len(td.train), len(td.dev[""]), len(td.test[name])) == (n_train, n_dev, n_test)
    qnli = tasks.get_task("QNLI")
    assert len(tasks.read_split(qnli, glue / "QNLI" / "dev.tsv", labelled=True)) == 5463
    assert len(tasks.read_split(qnli, glue / "QNLI" / "test.tsv", labelled=False)) == 5463
    ax = tasks.read_split(tasks.get_task("MNLI"), glue / "diagnostic" / "diagnostic.tsv", False)
    assert len(ax) == 1104 and ax.ids[:2] == ["0", "1"]
    for name in ("RTE", "STS-B"):  # format samples: header + 25 rows per split
        td = tasks.load_task(tasks.get_task(name), shared_data / "glue_samples")
        assert (len(td.train), len(td.dev[""]), len(td.test[name])) == (25, 25, 25)
    stsb = tasks.load_task(tasks.get_task("STS-B"), shared_data / "glue_samples")
    assert stsb.dev[""].labels[:2].tolist() == [5.0, 4.75]


@pytest.mark.shared_data
@pytest.mark.slow
def test_fine_tunes_on_real_wnli_and_writes_a_full_submission(shared_data, tmp_path):
    config = micro_config("WNLI", max_steps=30, learning_rates=(1e-3,), eval_every=10,
                          max_seq_length=128, buckets=(64,), predict_test=True)
    summary = grid.run(config, str(shared_data / "glue"), "", str(tmp_path / "wd"),
                           str(TOKENIZER))
    results = json.loads((tmp_path / "wd" / "WNLI" / "results.json").read_text())
    assert results["examples"] == {"train": 635, "dev": 71, "test_WNLI": 146}
    assert results["tokenizer"]["vocab_size"] == 30522 and results["runs"][0]["steps"] == 30
    assert 0.0 <= summary["tasks"]["WNLI"]["metrics"]["accuracy"] <= 1.0
    with open(tmp_path / "wd" / "submission" / "WNLI.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "prediction"] and len(rows) == 147
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(146)]
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
