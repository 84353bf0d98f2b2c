"""The left-to-right objective's batches (bertjax/data/ltr.py): every position's target is the
next token of its own sequence, nothing is masked, and the pipeline resumes exactly."""
import json

import numpy as np
import pytest

from bertjax.data import ltr, pretraining

CLS, SEP, MASK = 2, 3, 4


def test_next_token_targets_by_hand():
    batch = {"input_ids": np.array([[2, 11, 12, 3, 0, 0], [2, 21, 22, 23, 24, 3]], np.int32),
             "input_mask": np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.int32)}
    out = ltr.next_token_batch(batch)
    np.testing.assert_array_equal(out["masked_positions"], [list(range(6))] * 2)
    np.testing.assert_array_equal(out["masked_ids"], [[11, 12, 3, 0, 0, 0],
                                                      [21, 22, 23, 24, 3, 0]])
    np.testing.assert_array_equal(out["masked_weights"], [[1, 1, 1, 0, 0, 0],
                                                          [1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out["input_ids"], batch["input_ids"])  # nothing masked


def test_packed_targets_stop_at_every_sequence_boundary():
    batch = {"input_ids": np.array([[2, 11, 3, 2, 21, 22, 3, 0]], np.int32),
             "input_mask": np.array([[1] * 7 + [0]], np.int32),
             "sequence_ids": np.array([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32)}
    out = ltr.next_token_batch(batch)
    np.testing.assert_array_equal(out["masked_weights"], [[1, 1, 0, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(out["masked_ids"], [[11, 3, 0, 21, 22, 3, 0, 0]])


@pytest.mark.parametrize("packing", ["none", "sequences", "full_sentences"])
def test_pipeline_batches_predict_the_next_token_of_the_same_sequence(
        synthetic, data_config, packing):
    prepared, _ = synthetic
    cfg = data_config(nsp=False, packing=packing, max_seq_len=64)
    it = pretraining.make_iterator(cfg, prepared, global_batch_size=32, seed=0,
                                   max_seq_len=64, max_predictions_per_seq=64, objective="ltr")
    for _ in range(3):
        b = next(it)
        ids, mask = b["input_ids"], b["input_mask"] > 0
        assert b["masked_positions"].shape == ids.shape == (32, 64)
        assert not (ids == MASK).any()  # no masking
        expect = np.zeros_like(mask)
        expect[:, :-1] = mask[:, :-1] & mask[:, 1:]
        if packing == "sequences":
            seq = b["sequence_ids"]
            expect[:, :-1] &= seq[:, :-1] == seq[:, 1:]
            assert (seq.max(axis=1) > 1).any()  # some rows really are packed
        np.testing.assert_array_equal(b["masked_weights"] > 0, expect)
        w = expect[:, :-1]
        np.testing.assert_array_equal(b["masked_ids"][:, :-1][w], ids[:, 1:][w])
        assert not (b["masked_ids"] == CLS).any()  # no sequence's target is a [CLS]


def test_ltr_batches_are_deterministic_and_resume_exactly(synthetic, data_config):
    prepared, _ = synthetic
    cfg = data_config(nsp=False, packing="sequences")

    def make():
        return pretraining.make_iterator(cfg, prepared, global_batch_size=16, seed=5,
                                         max_predictions_per_seq=128, objective="ltr")
    a = [next(it) for it in [make()] for _ in range(4)]
    it = make()
    next(it), next(it)
    state = json.loads(json.dumps(it.get_state()))
    resumed = make()
    resumed.set_state(state)
    for x in a[2:]:
        y = next(resumed)
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
