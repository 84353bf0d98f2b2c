"""The left-to-right objective's batches: every position predicts the token after it.

The rows are the pipeline's unmasked rows (bertjax/data/pretraining.py: [CLS] A [SEP], no NSP,
optionally packed), and the targets ride in the masked-LM head's keys, so one model and one
loss serve both objectives: masked_positions = 0 .. length-1, masked_ids = the next token,
masked_weights = 1 where a next token of the same sequence exists (never across padding or a
packed-sequence boundary; the last real token of a sequence predicts nothing). Nothing is
masked: the causal attention (model.causal) is what hides the future.
"""
from __future__ import annotations

import grain
import numpy as np


def next_token_batch(batch: dict) -> dict:
    """Adds masked_positions, masked_ids (int32) and masked_weights (float32) [b, length]."""
    ids = np.asarray(batch["input_ids"])
    b, length = ids.shape
    real = np.asarray(batch["input_mask"]) > 0
    has_next = np.zeros((b, length), bool)
    has_next[:, :-1] = real[:, :-1] & real[:, 1:]
    if "sequence_ids" in batch:  # packed rows: the next token must be of the same sequence
        seq = np.asarray(batch["sequence_ids"])
        has_next[:, :-1] &= seq[:, :-1] == seq[:, 1:]
    targets = np.zeros((b, length), np.int32)
    targets[:, :-1] = ids[:, 1:]
    out = dict(batch)
    out["masked_positions"] = np.broadcast_to(np.arange(length, dtype=np.int32),
                                              (b, length)).copy()
    out["masked_ids"] = np.where(has_next, targets, 0).astype(np.int32)
    out["masked_weights"] = has_next.astype(np.float32)
    return out


class NextTokenTransform(grain.transforms.RandomMap):
    """next_token_batch as a Grain transform. It draws nothing; a RandomMap all the same, so
    that both objectives' pipelines have the same steps (and iterator states of one shape)."""

    def random_map(self, element, rng: np.random.Generator):
        return next_token_batch(element)
