"""Preparation statistics (bertjax/data/prepare.py): what each work unit counts while it
tokenizes, and their sum, which the prepared dataset records as its `stats` metadata."""
from __future__ import annotations


def unit_counts(splits) -> dict:
    """A work unit's counters, all zero; the unit adds the bytes, CPU time and hold-out
    candidates when it finishes."""
    return {"documents": {s: 0 for s in splits}, "sentences": 0, "tokens": 0,
            "empty_documents": 0, "long_sentences_cut": 0, "split_seconds": 0.0,
            "tokenize_seconds": 0.0}


def summarise(unit_stats: list[dict], wall: float, lines_are_sentences: bool) -> dict:
    """The dataset's `stats` metadata: the units' counts summed, with per-core rates."""
    invalid: dict = {}
    for s in unit_stats:
        for path, n in s["invalid_utf8"].items():
            invalid[path] = invalid.get(path, 0) + n
    nbytes = sum(s["bytes"] for s in unit_stats)
    split_s = sum(s["split_seconds"] for s in unit_stats)
    cpu_s = sum(s["cpu_seconds"] for s in unit_stats)
    return {
        "documents": sum(s["documents"]["train"] + s["documents"]["eval"] for s in unit_stats),
        "train_documents": sum(s["documents"]["train"] for s in unit_stats),
        "eval_documents": sum(s["documents"]["eval"] for s in unit_stats),
        "sentences": sum(s["sentences"] for s in unit_stats),
        "tokens": sum(s["tokens"] for s in unit_stats),
        "empty_documents": sum(s["empty_documents"] for s in unit_stats),
        "long_sentences_cut": sum(s.get("long_sentences_cut", 0) for s in unit_stats),
        "bytes": nbytes,
        "units": len(unit_stats),
        "invalid_utf8_lines": invalid,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu_s, 3),
        # Per-core rates: work done divided by the CPU time the workers spent on it.
        "mb_per_s_per_core": round(nbytes / 1e6 / cpu_s, 3) if cpu_s else None,
        "sentence_split_mb_per_s": (round(nbytes / 1e6 / split_s, 3)
                                    if split_s and not lines_are_sentences else None),
    }
