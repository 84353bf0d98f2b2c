"""Length-bucketed batching, shared by every task kind.

A kind's features (GLUE's `Encoded`, SQuAD's windows, CoNLL's sentences) need only `len()`,
`lengths` (real tokens per row) and `batch(rows, batch_size, length)`: each batch is padded to
the smallest configured bucket its rows fit (e.g. 64, 128), so the step functions compile once
per bucket and a batch of short rows costs what short rows should.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def bucket_lengths(buckets: Sequence[int], max_seq_length: int) -> tuple[int, ...]:
    """The configured buckets below max_seq_length, plus max_seq_length itself."""
    return tuple(sorted({int(b) for b in buckets if 0 < int(b) < max_seq_length}
                        | {int(max_seq_length)}))


def assign_buckets(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
    """Index of the smallest bucket that holds each length."""
    buckets = np.asarray(buckets)
    which = np.searchsorted(buckets, lengths, side="left")
    if lengths.size and which.max() >= len(buckets):
        raise ValueError(f"an example of length {lengths.max()} exceeds the largest bucket "
                         f"{buckets[-1]}")
    return which


def batch_plan(enc: Encoded, batch_size: int, buckets: Sequence[int],
               rng: np.random.Generator | None = None) -> list[tuple[np.ndarray, int]]:
    """(rows, bucket length) of every batch of one pass over `enc`.

    With `rng` (training): examples are shuffled within their bucket and the batches of all
    buckets are shuffled together; without (evaluation): in order, bucket by bucket. A bucket's
    last batch may be short; the features' batch() pads it with zero-weight rows, so no example
    is dropped.
    """
    which = assign_buckets(enc.lengths, buckets)
    plan = []
    for k, length in enumerate(buckets):
        rows = np.flatnonzero(which == k)
        if rng is not None:
            rows = rng.permutation(rows)
        plan += [(rows[i:i + batch_size], length) for i in range(0, len(rows), batch_size)]
    if rng is not None:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def steps_per_epoch(enc: Encoded, batch_size: int, buckets: Sequence[int]) -> int:
    which = assign_buckets(enc.lengths, buckets)
    counts = np.bincount(which, minlength=len(buckets))
    return int(sum(-(-c // batch_size) for c in counts))
