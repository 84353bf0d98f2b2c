"""The official SQuAD scores: evaluate-v1.1.py and evaluate-v2.0.py, reimplemented.

Both normalise an answer the same way: lower case, drop ASCII punctuation (string.punctuation),
drop the articles a/an/the, collapse whitespace. EM is equality of normalised texts; F1 is over
the bags of normalised tokens; a question scores the max over its references. Scores are printed
in 0-100. Where the two scripts differ, each version follows its own script:

- v1.1: F1 is 0 when no token is shared, even if both sides normalise to nothing (a
  punctuation-only reference against an empty prediction: EM 1, F1 0). A question without a
  prediction scores 0 and still counts in the total.
- v2.0: references that normalise to nothing are dropped, and a question left without any (the
  unanswerable ones) has the single reference "": only an empty prediction scores, EM and F1 1.
  F1 of two empty token lists is 1, of one empty list 0. HasAns/NoAns split by whether the file
  lists answers. With null_odds (run_squad's score differences, the script's --na-prob-file),
  a question whose odds exceed na_prob_thresh (default 1.0, as the script) counts as answered
  "no answer" in exact/f1, and best_exact/best_f1 with their thresholds come from the script's
  find_best_thresh over the raw scores. The script needs a prediction for every question (it
  fails otherwise); here that is a ValueError naming the missing ids.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Mapping, Sequence

from bertjax.finetune.squad.reader import Example

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_v1(prediction: str, reference: str) -> float:
    return _f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def f1_v2(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    return _f1(pred, ref)


def _f1(pred: list[str], ref: list[str]) -> float:
    same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def evaluate_v1(examples: Sequence[Example], predictions: Mapping[str, str]) -> dict:
    """{'exact_match', 'f1'} as evaluate-v1.1.py prints them."""
    em = f1 = 0.0
    for e in examples:
        if e.id not in predictions:
            continue  # the script: "Unanswered question ... will receive score 0"
        refs = [a.text for a in e.answers]
        em += max(exact_match(predictions[e.id], r) for r in refs)
        f1 += max(f1_v1(predictions[e.id], r) for r in refs)
    total = len(examples)
    if not total:
        raise ValueError("no questions to score")
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


def raw_scores_v2(examples: Sequence[Example], predictions: Mapping[str, str]
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question EM and F1 (0-1) before any no-answer threshold (get_raw_scores)."""
    if not examples:
        raise ValueError("no questions to score")
    missing = [e.id for e in examples if e.id not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction (e.g. {missing[:3]}); "
                         "SQuAD v2.0 scoring needs one for every question")
    exact, f1 = {}, {}
    for e in examples:
        refs = [a.text for a in e.answers if normalize_answer(a.text)] or [""]
        pred = predictions[e.id]
        exact[e.id] = max(exact_match(pred, r) for r in refs)
        f1[e.id] = max(f1_v2(pred, r) for r in refs)
    return exact, f1


def find_best_thresh(predictions, scores, na_probs, has_answer) -> tuple[float, float]:
    """(best score in 0-100, its threshold): evaluate-v2.0.py's find_best_thresh. Walking the
    questions by increasing odds, answering up to each one and abstaining after it."""
    best = current = float(sum(1 for q in has_answer if not has_answer[q]))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate_v2(examples: Sequence[Example], predictions: Mapping[str, str],
                null_odds: Mapping[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict:
    """The dict evaluate-v2.0.py prints: exact, f1, total, HasAns_*, NoAns_* and, with
    null_odds, best_exact, best_exact_thresh, best_f1, best_f1_thresh."""
    exact_raw, f1_raw = raw_scores_v2(examples, predictions)
    has_answer = {e.id: bool(e.answers) for e in examples}
    if null_odds is None:
        na_probs = {q: 0.0 for q in predictions}
    else:
        missing = [q for q in has_answer if q not in null_odds]
        if missing:
            raise ValueError(f"null_odds lacks {len(missing)} questions (e.g. {missing[:3]})")
        na_probs = dict(null_odds)

    def thresholded(raw):
        return {q: float(not has_answer[q]) if na_probs[q] > na_prob_thresh else s
                for q, s in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out = _summary(exact, f1, list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [q for q, has in has_answer.items() if has == wanted]
        if ids:
            out.update({f"{prefix}_{k}": v for k, v in _summary(exact, f1, ids).items()})
    if null_odds is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(
            predictions, exact_raw, na_probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(
            predictions, f1_raw, na_probs, has_answer)
    return out


def _summary(exact, f1, ids) -> dict:
    return {"exact": 100.0 * sum(exact[q] for q in ids) / len(ids),
            "f1": 100.0 * sum(f1[q] for q in ids) / len(ids), "total": len(ids)}
