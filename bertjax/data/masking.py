"""BERT's dynamic masked-LM corruption of a batch (80% [MASK] / 10% random / 10% unchanged by
default), vectorised over the batch, and its Grain transform (a fresh mask every time a batch is
produced, so every epoch sees new masks).
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from bertjax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class MaskingOptions:
    mask_rate: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_predictions: int = 20
    whole_word: bool = False

    def __post_init__(self):
        def bad(key, value, expected):
            raise ValueError(f"data.{key}={value!r}: expected {expected}")
        if not 0.0 < self.mask_rate <= 1.0:
            bad("mask_rate", self.mask_rate, "a rate in (0, 1]")
        for key in ("mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, getattr(self, key), "a probability in [0, 1]")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            bad("random_token_prob", self.random_token_prob,
                f"at most 1 - mask_token_prob = {1.0 - self.mask_token_prob:g} (the rest of the "
                "selected tokens stay unchanged)")
        if self.max_predictions < 1:
            bad("max_predictions_per_seq", self.max_predictions, "a positive integer")


@dataclasses.dataclass(frozen=True, eq=False)
class Vocab:
    """What masking needs to know about the tokenizer, as arrays (cheap to send to workers)."""
    size: int
    mask_id: int
    special_ids: tuple[int, ...]
    word_start: np.ndarray  # bool[size]

    @classmethod
    def from_tokenizer(cls, tok: tokenizer_lib.Tokenizer) -> "Vocab":
        return cls(tok.vocab_size, tok.mask_id, tuple(sorted(tok.special_ids)),
                   tok.word_start_table())

    @property
    def ordinary_ids(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.size, dtype=np.int32), np.array(self.special_ids))


def mask_batch(batch: dict, rng: np.random.Generator, vocab: Vocab, opts: MaskingOptions,
               ordinary_ids: np.ndarray | None = None) -> dict:
    """BERT's masked-LM corruption, vectorised over a batch.

    Per row, round(rate * maskable) positions (stochastically rounded, so the rate holds in
    expectation also for short rows; at least 1, at most max_predictions) are drawn among
    non-special tokens; of those, mask_token_prob become [MASK], random_token_prob a random
    non-special token, the rest stay. Whole-word mode draws words, not pieces, and stops at the
    first word that does not fit. masked_positions are sorted; padding slots have weight 0.
    """
    ids = batch["input_ids"]
    b, length = ids.shape
    p = opts.max_predictions
    if ordinary_ids is None:
        ordinary_ids = vocab.ordinary_ids
    maskable = ~np.isin(ids, vocab.special_ids) & (batch["input_mask"] > 0)
    n_maskable = maskable.sum(axis=1)
    expected = n_maskable * opts.mask_rate
    n_predict = np.floor(expected + rng.random(b)).astype(np.int64)
    n_predict = np.clip(n_predict, np.minimum(1, n_maskable), np.minimum(p, n_maskable))

    keys = rng.random((b, length))
    if opts.whole_word:
        starts = vocab.word_start[ids] | ~maskable
        starts[:, 1:] |= ~maskable[:, :-1]  # e.g. B truncated mid-word starts a new word
        starts[:, 0] = True
        word = np.cumsum(starts, axis=1) - 1  # word number of every token within its row
        # One random key per word (keys of word number w = keys[:, w]); sorting by (key, position)
        # in integers keeps every word's tokens adjacent and in reading order.
        word_key = (np.take_along_axis(keys, word, axis=1) * 2**31).astype(np.int64)
        sort_key = np.where(maskable, word_key, 2**31) * length + np.arange(length)
        order = np.argsort(sort_key, axis=1)
        sorted_word = np.take_along_axis(word, order, axis=1)
        # A token is taken if its whole word ends within the first n_predict sorted tokens.
        take = _last_index_of_run(sorted_word) < n_predict[:, None]
        chosen_sorted = np.where(take, order, length)
    else:
        order = np.argsort(np.where(maskable, keys, 2.0), axis=1)
        rank = np.arange(length)[None, :]
        chosen_sorted = np.where(rank < n_predict[:, None], order, length)
    if length < p:  # more prediction slots than tokens: pad with "not chosen"
        chosen_sorted = np.pad(chosen_sorted, ((0, 0), (0, p - length)), constant_values=length)
    positions = np.sort(chosen_sorted, axis=1)[:, :p]  # chosen first (ascending), then `length`
    valid = positions < length
    positions = np.where(valid, positions, 0)

    rows = np.arange(b)[:, None]
    original = ids[rows, positions]
    u = rng.random((b, p))
    to_mask = valid & (u < opts.mask_token_prob)
    to_random = valid & ~to_mask & (u < opts.mask_token_prob + opts.random_token_prob)
    random_ids = ordinary_ids[rng.integers(0, len(ordinary_ids), size=(b, p))]
    new = np.where(to_mask, vocab.mask_id, np.where(to_random, random_ids, original))
    masked_ids = ids.copy()
    # Padding slots write position 0 ([CLS]) with its own value: harmless.
    masked_ids[rows, positions] = np.where(valid, new, original)
    out = dict(batch)
    out["input_ids"] = masked_ids.astype(np.int32)
    out["masked_positions"] = positions.astype(np.int32)
    out["masked_ids"] = np.where(valid, original, 0).astype(np.int32)
    out["masked_weights"] = valid.astype(np.float32)
    return out


def _last_index_of_run(x: np.ndarray) -> np.ndarray:
    """For each element of each row, the index of the last element of its run of equal values
    (runs are contiguous because tokens were sorted by word key)."""
    b, n = x.shape
    is_end = np.ones_like(x, dtype=bool)
    is_end[:, :-1] = x[:, 1:] != x[:, :-1]
    idx = np.where(is_end, np.arange(n)[None, :], n)
    # Reverse cumulative minimum: the nearest run end at or after each position.
    return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]


class MaskTransform(grain.transforms.RandomMap):
    """mask_batch as a Grain transform (a fresh mask every time a batch is produced)."""

    def __init__(self, vocab: Vocab, opts: MaskingOptions):
        self.vocab, self.opts = vocab, opts
        self.ordinary_ids = vocab.ordinary_ids

    def random_map(self, element, rng: np.random.Generator):
        return mask_batch(element, rng, self.vocab, self.opts, self.ordinary_ids)
