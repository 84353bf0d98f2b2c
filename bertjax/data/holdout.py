"""Which documents preparation holds out for evaluation (bertjax/data/prepare.py).

A document is held out when a hash of its `holdout_key` (its group, e.g. a family of duplicates
in the built-in corpus, or else its corpus key) falls below `eval_fraction`: the choice does not
depend on worker count or file order, and a group is never split between train and eval.
"""
from __future__ import annotations

import hashlib

MIN_EVAL_DOCUMENTS = 2  # NotNext pairs need two documents; small corpora get at least this many


def unit_interval(key: str) -> float:
    """A key's stable position in [0, 1)."""
    h = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


def is_eval_document(key: str, eval_fraction: float) -> bool:
    return unit_interval(key) < eval_fraction


def eval_top_up(unit_stats: list[dict], eval_fraction: float) -> dict[int, list[int]]:
    """Training records (unit -> record indices) to move to eval when a small corpus left it with
    fewer than MIN_EVAL_DOCUMENTS: the ones with the lowest key hashes, as if the threshold had
    been a little higher. Only small corpora hit this (1% of ~200 documents may round to 0); a
    moved document's group-mates, if any, stay in train."""
    n_eval = sum(s["documents"]["eval"] for s in unit_stats)
    n_train = sum(s["documents"]["train"] for s in unit_stats)
    need = MIN_EVAL_DOCUMENTS - n_eval
    if eval_fraction <= 0 or need <= 0 or n_train < 2 * MIN_EVAL_DOCUMENTS:
        return {}
    candidates = sorted((u, unit, rec) for unit, s in enumerate(unit_stats)
                        for u, rec in s["lowest_train"])[:need]
    moved: dict[int, list[int]] = {}
    for _, unit, rec in candidates:
        moved.setdefault(unit, []).append(rec)
    return {unit: sorted(recs) for unit, recs in moved.items()}

