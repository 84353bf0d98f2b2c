"""A packed pretraining run end to end (tiny, built-in corpus): trains, logs real-token
throughput beside the padded figures, and resumes into the same packed stream."""
import json
import os

import numpy as np
import pytest
from pretrain_helpers import tiny_pretrain_config

from bertjax import train


def _config(prepared_dir, **overrides):
    # seq 64, up to 4 sequences a row: the fill asserted below is a property of this shape.
    return tiny_pretrain_config(prepared_dir, **{
        "data.max_seq_len": 64, "data.max_predictions_per_seq": 10,
        "data.packing": "sequences", "data.max_sequences_per_row": 4, "train.batch_size": 16,
        "train.steps": 20, "train.log_every": 10, "train.eval_every": 20, "train.eval_steps": 2,
        "train.checkpoint_every": 10, "optim.learning_rate": 2e-3, "optim.warmup_steps": 5,
        **overrides})


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    return [r for r in rows if r["split"] == "train" and "loss" in r]


@pytest.mark.slow  # ~1 min on an idle 2-core CPU (two runs)
def test_packed_nsp_run_trains_logs_real_tokens_and_resumes(tmp_path, default_prepared):
    prepared = default_prepared
    workdir = str(tmp_path / "run")
    result = train.train_and_evaluate(_config(prepared), workdir)
    assert result.step == 20
    rows = _rows(workdir)
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[-1]["mlm_loss"] < rows[0]["mlm_loss"] and np.isfinite(rows[-1]["nsp_loss"])
    last = rows[-1]
    # Packed rows are nearly full; real tokens/s is the padded figure times the fill.
    assert 0.9 < last["fill"] <= 1.0
    assert abs(last["real_tokens_per_s"] - last["tokens_per_s"] * last["fill"]) < 1e-6 * (
        last["tokens_per_s"])
    assert last["mfu_real"] is None and last["mfu"] is None  # CPU: no peak in the table

    # Resuming from step 10 continues the packed stream exactly: same losses at step 20.
    import shutil
    shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))
    again = train.train_and_evaluate(_config(prepared), workdir)
    assert again.step == 20
    assert again.last_train["loss"] == rows[-1]["loss"]
