"""Entity-level precision / recall / F1 (CoNLL-2003's official score), and the conlleval file.

An entity counts as found only when its type and both boundaries match a gold entity; precision
= correct / predicted entities, recall = correct / gold entities, F1 their harmonic mean, micro-
averaged over all entities for the overall score and per type. Values are fractions in [0, 1]
(tables multiply by 100), 0 where a ratio has no denominator.

Computed by seqeval in its *default* mode, not `mode='strict'`: the default is conlleval's chunk
logic (the script that scored CoNLL-2003 and the papers' numbers, BERT's 92.4 included): an
entity starts at every B-, and at an I- that follows O or another type; it ends before O,
before a B-, and before a tag of another type. So:
  - IOB1 and IOB2 files score the same (the same entities written either way give the same
    numbers), which the original IOB1 distribution needs;
  - a predicted I-X without a B-X (argmax predictions break IOB2 often) opens an entity, as in
    conlleval, instead of being dropped.
Strict mode with scheme=IOB2 drops every entity that starts with I-, so on IOB1 data it
discards most entities (IOB1 starts nearly all of them with I-), and on predictions it
forgives nothing conlleval forgives: its numbers are not comparable to the published ones.
Sentences are passed separately, so an entity at the end of one sentence never runs into the
next.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Sequence

from seqeval.metrics import sequence_labeling as seqeval


def _check(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")


def _entities(tags: Sequence[Sequence[str]]) -> set[tuple[int, str, int, int]]:
    return {(i, t, a, b) for i, seq in enumerate(tags)
            for t, a, b in seqeval.get_entities(list(seq))}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                  ) -> dict[str, float | int]:
    """Tag strings per sentence -> {precision, recall, f1, gold_entities, predicted_entities,
    correct_entities, and TYPE_precision, TYPE_recall, TYPE_f1, TYPE_support per entity type
    in gold or predictions}."""
    _check(gold, pred)
    gold, pred = [list(s) for s in gold], [list(s) for s in pred]
    g, p = _entities(gold), _entities(pred)
    out: dict[str, float | int] = {"gold_entities": len(g), "predicted_entities": len(p),
                                   "correct_entities": len(g & p)}
    if not g and not p:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, **out}
    precision, recall, f1, _ = seqeval.precision_recall_fscore_support(
        gold, pred, average="micro", zero_division=0)
    out.update(precision=float(precision), recall=float(recall), f1=float(f1))
    types = sorted({e[1] for e in g | p})
    per = seqeval.precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    # seqeval orders the per-type rows by sorted type name, as `types` is.
    for k, t in enumerate(types):
        out.update({f"{t}_precision": float(per[0][k]), f"{t}_recall": float(per[1][k]),
                    f"{t}_f1": float(per[2][k]), f"{t}_support": int(per[3][k])})
    return out


def write_predictions(path: str | os.PathLike, words: Sequence[Sequence[str]],
                      gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                      ) -> pathlib.Path:
    """`word gold pred` per line, a blank line after each sentence: the input conlleval reads
    (`conlleval < predictions_dev.txt`). Written to a temporary file, then renamed."""
    _check(gold, pred)
    _check(words, gold)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                     prefix=f".{path.name}.", suffix=".tmp") as f:
        try:
            for ws, gs, ps in zip(words, gold, pred):
                for w, g, p in zip(ws, gs, ps):
                    if not w or len(w.split()) != 1:
                        raise ValueError(f"word {w!r}: a column file's word must be one "
                                         "non-empty run of non-whitespace characters")
                    f.write(f"{w} {g} {p}\n")
                f.write("\n")
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(f.name, path)
    return path
