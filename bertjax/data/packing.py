"""Sequence packing: several complete sequences per row, by best-fit decreasing.

`pack_rows` takes single-sequence rows (as data/pretraining.py assembles them, one NSP pair or
one MLM piece each) and packs them into as few rows of the same length as best-fit decreasing
finds, at most `max_per_row` sequences a row, so the shapes stay static. Each row then carries
position_ids (restarting at 0 per sequence) and sequence_ids (1, 2, ...; 0 = padding) for the
model's block-diagonal attention, and with NSP each sequence's [CLS] position, label and weight.
"""
from __future__ import annotations

import random

import numpy as np


def pack_rows(seqs: dict, r: random.Random, max_per_row: int, nsp: bool) -> dict:
    """Packs single-sequence rows (as _assemble makes them) into as few rows as best-fit
    decreasing finds, at most max_per_row sequences each; the packed rows are shuffled.

    Returns input_ids, segment_ids, input_mask, position_ids, sequence_ids [n, length]; with
    nsp, cls_positions, nsp_label (int32) and nsp_weights (float32, 0 = empty slot)
    [n, max_per_row], else nsp_label [n] zeros. Every sequence keeps its tokens, segment ids
    and label; positions restart at 0 and sequence ids count 1, 2, ... within a row.
    """
    n, length = seqs["input_ids"].shape
    lengths = seqs["input_mask"].sum(axis=1).tolist()
    # Bins by remaining space: the best fit is the first non-empty list at or above a length.
    by_space: list[list[int]] = [[] for _ in range(length + 1)]
    space, count = [], []
    row_of, offset_of, slot_of = [0] * n, [0] * n, [0] * n
    for i in sorted(range(n), key=lambda i: -lengths[i]):  # stable: ties keep shuffled order
        need = lengths[i]
        fit = next((s for s in range(need, length + 1) if by_space[s]), None)
        if fit is None:
            bin_ = len(space)
            space.append(length)
            count.append(0)
        else:
            bin_ = by_space[fit].pop()
        row_of[i], offset_of[i], slot_of[i] = bin_, length - space[bin_], count[bin_]
        space[bin_] -= need
        count[bin_] += 1
        if count[bin_] < max_per_row and space[bin_] > 0:
            by_space[space[bin_]].append(bin_)
    n_rows = len(space)
    perm = list(range(n_rows))
    r.shuffle(perm)
    row = np.array(perm, np.int64)[np.array(row_of, np.int64)] if n else np.zeros(0, np.int64)
    offset, slot = np.array(offset_of, np.int64), np.array(slot_of, np.int64)

    j = np.arange(length)[None, :]
    real = j < np.array(lengths, np.int64)[:, None]
    dest = ((row * length + offset)[:, None] + j)[real]  # flat positions in the packed batch
    out = {}
    for key, value in (("input_ids", seqs["input_ids"]), ("segment_ids", seqs["segment_ids"]),
                       ("input_mask", seqs["input_mask"]),
                       ("position_ids", np.broadcast_to(j, (n, length))),
                       ("sequence_ids", np.broadcast_to(slot[:, None] + 1, (n, length)))):
        packed = np.zeros(n_rows * length, np.int32)
        packed[dest] = value[real]
        out[key] = packed.reshape(n_rows, length)
    if nsp:
        for key, value, dtype in (("cls_positions", offset, np.int32),
                                  ("nsp_label", seqs["nsp_label"], np.int32),
                                  ("nsp_weights", np.ones(n), np.float32)):
            packed = np.zeros((n_rows, max_per_row), dtype)
            packed[row, slot] = value
            out[key] = packed
    else:
        out["nsp_label"] = np.zeros(n_rows, np.int32)
    return out
