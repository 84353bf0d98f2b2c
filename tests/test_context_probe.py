"""The context probe: what the corruptions change and keep, and the probe end to end on a
micro pretraining run."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pretrain_helpers import tiny_pretrain_config

from bertjax import context_probe, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = {0, 1, 2, 3, 4}   # [PAD] [UNK] [CLS] [SEP] [MASK]


def _batch():
    ids = np.array([[2, 10, 11, 4, 12, 3, 13, 14, 15, 3, 0, 0],
                    [2, 20, 4, 21, 22, 23, 3, 24, 1, 25, 3, 0]])
    mask = (ids != 0).astype(np.int32)
    mask[1, 11] = 0
    positions = np.array([[3, 7, 0], [2, 4, 0]])
    weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    return ids, mask, positions, weights


@pytest.mark.parametrize("variant", ["shuffled", "replaced"])
def test_corruption_changes_only_unpredicted_ordinary_tokens(variant):
    ids, mask, positions, weights = _batch()
    rng = np.random.default_rng(0)
    outs = [context_probe.corrupt(ids, mask, positions, weights, SPECIALS, 100, variant, rng)
            for _ in range(20)]
    for r in range(2):
        fixed = np.isin(ids[r], list(SPECIALS)) | (mask[r] == 0)
        fixed[positions[r][weights[r] > 0]] = True
        for out in outs:
            assert (out[r][fixed] == ids[r][fixed]).all()   # specials, padding, predictions
            if variant == "shuffled":   # the same bag of words in every row
                assert collections.Counter(out[r][~fixed]) == collections.Counter(ids[r][~fixed])
            else:
                assert not np.isin(out[r][~fixed], list(SPECIALS)).any()
        # the context does move (20 draws: some permutation/replacement differs)
        assert any((out[r][~fixed] != ids[r][~fixed]).any() for out in outs)
    assert (context_probe.corrupt(ids, mask, positions, weights, SPECIALS, 100, "intact", rng)
            == ids).all()
    with pytest.raises(ValueError, match="unknown variant 'reversed'"):
        context_probe.corrupt(ids, mask, positions, weights, SPECIALS, 100, "reversed", rng)


@pytest.mark.slow
def test_probe_end_to_end_on_a_micro_run(tmp_path, default_prepared):
    c = tiny_pretrain_config(default_prepared, **{
        "model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2,
        "model.intermediate_size": 64, "train.steps": 3, "train.eval_every": 3,
        "train.checkpoint_every": 3, "optim.warmup_steps": 30})
    workdir = tmp_path / "run"
    train.train_and_evaluate(c, str(workdir))
    out = context_probe.probe(str(workdir), batches=2, batch_size=8)
    assert out["step"] == 3
    # [MASK] positions only: fewer than all predictions (10% unchanged, 10% random), not none
    assert 0 < out["mask_positions"] < 2 * 8 * 5
    for v in context_probe.VARIANTS:
        assert np.isfinite(out[v]["mlm_loss"]) and 0.0 <= out[v]["mlm_accuracy"] <= 1.0
    # the corruption reaches the model: a random-ish model's loss moves when its context does
    assert out["replaced"]["mlm_loss"] != out["intact"]["mlm_loss"]
    assert out["context_nats"] == pytest.approx(
        out["shuffled"]["mlm_loss"] - out["intact"]["mlm_loss"])
    assert out["replaced_nats"] == pytest.approx(
        out["replaced"]["mlm_loss"] - out["intact"]["mlm_loss"])
    # every pretraining eval row carries the same measurement on the eval batches
    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3]
    row = evals[0]
    assert np.isfinite(row["mask_mlm_loss"]) and np.isfinite(row["shuffled_mask_mlm_loss"])
    assert row["shuffled_mask_mlm_loss"] != row["mask_mlm_loss"]   # the shuffle reaches it
    assert row["context_nats"] == pytest.approx(
        row["shuffled_mask_mlm_loss"] - row["mask_mlm_loss"])
    # "all" is every prediction (the eval's held-out MLM): more positions than [MASK] alone
    assert np.isfinite(out["all"]["mlm_loss"]) and out["mask_rate"] == c.data.mask_rate
    # another rate masks the same held-out rows more: at 0.5 there are many more [MASK] inputs
    more = context_probe.probe(str(workdir), batches=2, batch_size=8, mask_rate=0.5)
    assert more["mask_rate"] == 0.5 and more["mask_positions"] > 2 * out["mask_positions"]
    with pytest.raises(ValueError, match="mask_rate=1.5"):
        context_probe.probe(str(workdir), batches=1, batch_size=8, mask_rate=1.5)
    assert context_probe.run_escape_step(str(workdir), threshold=-100.0) == 3
    assert context_probe.run_escape_step(str(workdir), threshold=100.0) is None
    # the script prints the same probe as JSON and nothing else on stdout
    proc = subprocess.run([sys.executable, "scripts/context_probe.py", f"--workdir={workdir}",
                           "--batches=2", "--batch_size=8"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["intact"] == pytest.approx(out["intact"])


def test_mask_only_keeps_the_weights_at_mask_inputs():
    ids, mask, positions, weights = _batch()
    batch = {"input_ids": ids, "input_mask": mask, "masked_positions": positions,
             "masked_weights": weights}
    out = context_probe.mask_only(batch, mask_id=4)
    # row 0 predicts positions 3 ([MASK]) and 7 (14, left as is); row 1 positions 2 ([MASK])
    # and 4 (22); the padding slot stays 0
    np.testing.assert_array_equal(out["masked_weights"], [[1, 0, 0], [1, 0, 0]])
    assert out["masked_weights"].dtype == weights.dtype
    assert out["input_ids"] is ids and batch["masked_weights"] is weights   # nothing mutated


def test_eval_summary_on_hand_made_sums():
    intact = {"mlm_loss_sum": 30.0, "mlm_correct": 2.0, "mlm_count": 10.0}    # 3.0 nats
    shuffled = {"mlm_loss_sum": 42.0, "mlm_correct": 1.0, "mlm_count": 10.0}  # 4.2 nats
    out = context_probe.eval_summary(intact, shuffled)
    assert out == pytest.approx({"mask_mlm_loss": 3.0, "shuffled_mask_mlm_loss": 4.2,
                                 "context_nats": 1.2})


def test_escape_step_is_the_first_eval_at_or_over_the_threshold():
    rows = [{"step": 300, "context_nats": 0.7}, {"step": 100, "context_nats": 0.01},
            {"step": 200, "context_nats": 0.5}, {"step": 400, "context_nats": 0.2},
            {"step": 50, "mlm_loss": 7.0}]   # a row without the metric (an older run)
    assert context_probe.escape_step(rows) == 200          # 0.5 counts (>=), order not assumed
    assert context_probe.escape_step(rows, threshold=0.6) == 300
    assert context_probe.escape_step(rows, threshold=0.8) is None
    assert context_probe.escape_step([]) is None
    assert context_probe.ESCAPE_NATS == 0.5
