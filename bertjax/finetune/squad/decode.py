"""Start/end logits of every window -> answers, as run_squad.py's write_predictions does.

Per window: the n_best_size highest start logits and end logits over all positions (stable:
lower position first among equals), and every pair of them with both tokens in the context,
end >= start, at most max_answer_length tokens, and a start token in the window where it has
the most context (features.max_context). Over all windows of an example the pairs are ranked by
start + end logit; walking down that list, the first n_best_size distinct answer texts make the
n-best list, each with its probability (softmax over the n-best scores). The answer text is the
exact substring of the original context from the first token's first character to the last
token's last character (never a detokenised string).

v2: the null score is the minimum over the example's windows of the [CLS] start + end logit; the
empty answer joins the ranking with it (after pairs of equal score) and is added to the n-best
list when it did not make it. The prediction is empty when null score - best non-null score >
null_score_diff_threshold; that difference is the question's entry in null_odds.json, which the
official evaluate-v2.0.py reads as --na-prob-file to find the best threshold. An example with no
valid non-empty span at all predicts "" (run_squad.py writes a placeholder "empty" there), and
its null odds are +inf.

The pair search is vectorised over all windows at once; Python only walks each example's short,
already sorted candidate list.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Sequence

import numpy as np

from bertjax.finetune.squad.features import Features
from bertjax.finetune.squad.reader import Example

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


@dataclasses.dataclass
class Decoded:
    predictions: dict[str, str]        # question id -> answer text ("" = no answer, v2)
    nbest: dict[str, list[dict]]       # id -> [{text, probability, start_logit, end_logit}]
    null_odds: dict[str, float]        # id -> null score - best non-null score (v2; else {})


def decode(examples: Sequence[Example], features: Features, start_logits, end_logits, *,
           n_best_size: int = 20, max_answer_length: int = 30, v2: bool = False,
           null_score_diff_threshold: float = 0.0) -> Decoded:
    """Answers for `examples` from the logits of their windows (`features`, row for row)."""
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    shape = features.input_ids.shape
    if start_logits.shape != shape or end_logits.shape != shape:
        raise ValueError(f"logits of shape {start_logits.shape} / {end_logits.shape}; expected "
                         f"{shape}, one row per window of the features")
    if np.any(np.diff(features.example_index) < 0) or (
            len(features) and features.example_index[-1] >= len(examples)):
        raise ValueError("features must be the windows of `examples`, in build_features order")
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(f"n_best_size={n_best_size}, max_answer_length={max_answer_length}: "
                         "expected positive integers")
    cand = _candidates(features, start_logits, end_logits, n_best_size, max_answer_length)
    bounds = np.searchsorted(cand["example"], np.arange(len(examples) + 1))
    windows = np.searchsorted(features.example_index, np.arange(len(examples) + 1))
    null = start_logits[:, 0] + end_logits[:, 0]
    out = Decoded({}, {}, {})
    for i, example in enumerate(examples):
        lo, hi = bounds[i], bounds[i + 1]
        null_entry = None
        if v2 and windows[i] < windows[i + 1]:
            w = windows[i] + int(np.argmin(null[windows[i]:windows[i + 1]]))
            null_entry = _entry("", float(start_logits[w, 0]), float(end_logits[w, 0]))
        nbest = _nbest(example.context, cand, lo, hi, null_entry, n_best_size)
        best = next((e for e in nbest if e["text"]), None)
        text = best["text"] if best else ""
        if null_entry is not None:
            diff = (null_entry["start_logit"] + null_entry["end_logit"]
                    - (best["start_logit"] + best["end_logit"]) if best else float("inf"))
            out.null_odds[example.id] = diff
            if diff > null_score_diff_threshold:
                text = ""
        out.predictions[example.id] = text
        out.nbest[example.id] = nbest
    return out


def _candidates(features, start_logits, end_logits, n, max_answer_length) -> dict:
    """Every valid (window, start, end) pair with its scores, sorted by example and then by
    descending start + end logit (ties in run_squad.py's enumeration order)."""
    n = min(n, start_logits.shape[1])
    starts = np.argsort(-start_logits, axis=1, kind="stable")[:, :n]  # [N, n]
    ends = np.argsort(-end_logits, axis=1, kind="stable")[:, :n]
    offsets = features.token_offsets
    in_context = offsets[..., 0] >= 0
    start_ok = np.take_along_axis(in_context & features.token_is_max_context, starts, 1)
    end_ok = np.take_along_axis(in_context, ends, 1)
    s, e = starts[:, :, None], ends[:, None, :]
    char_start = np.take_along_axis(offsets[..., 0], starts, 1)[:, :, None]
    char_end = np.take_along_axis(offsets[..., 1], ends, 1)[:, None, :]
    valid = (start_ok[:, :, None] & end_ok[:, None, :] & (e >= s)
             & (e - s + 1 <= max_answer_length) & (char_end > char_start))
    w, i, j = np.nonzero(valid)  # C order: window, then start rank, then end rank
    s_logit = start_logits[w, starts[w, i]]
    e_logit = end_logits[w, ends[w, j]]
    example = features.example_index[w]
    score = s_logit.astype(np.float64) + e_logit  # as the walk below adds them
    order = np.lexsort((-score, example))  # stable: ties keep that order
    return {"example": example[order], "start_logit": s_logit[order],
            "end_logit": e_logit[order], "char_start": char_start[w, i, 0][order],
            "char_end": char_end[w, 0, j][order]}


def _entry(text, start_logit, end_logit):
    return {"text": text, "probability": 0.0, "start_logit": start_logit, "end_logit": end_logit}


def _nbest(context, cand, lo, hi, null_entry, n_best_size) -> list[dict]:
    nbest, seen = [], set()
    null_score = (null_entry["start_logit"] + null_entry["end_logit"]
                  if null_entry is not None else -np.inf)
    for k in range(lo, hi):
        if len(nbest) >= n_best_size:
            break
        s_logit, e_logit = float(cand["start_logit"][k]), float(cand["end_logit"][k])
        if null_entry is not None and "" not in seen and s_logit + e_logit < null_score:
            nbest.append(null_entry)  # the null ranks here: after pairs of equal score
            seen.add("")
            if len(nbest) >= n_best_size:
                break
        text = context[cand["char_start"][k]:cand["char_end"][k]]
        if text not in seen:
            seen.add(text)
            nbest.append(_entry(text, s_logit, e_logit))
    if null_entry is not None and "" not in seen:
        nbest.append(null_entry)
    if nbest:
        scores = np.array([x["start_logit"] + x["end_logit"] for x in nbest], np.float64)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        nbest = [dict(x, probability=float(p)) for x, p in zip(nbest, probs)]
    return nbest


def write_predictions(directory: str | os.PathLike, decoded: Decoded, v2: bool
                      ) -> dict[str, pathlib.Path]:
    """Writes predictions.json ({id: text}: the file evaluate-v1.1.py / evaluate-v2.0.py read),
    nbest_predictions.json and, for v2, null_odds.json (evaluate-v2.0.py's --na-prob-file)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"predictions": (PREDICTIONS_FILE, decoded.predictions),
             "nbest": (NBEST_FILE, decoded.nbest)}
    if v2:
        files["null_odds"] = (NULL_ODDS_FILE, decoded.null_odds)
    written = {}
    for key, (name, obj) in files.items():
        path = directory / name
        tmp = path.with_name(path.name + ".tmp")  # a crash never leaves half a file
        tmp.write_text(json.dumps(obj, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        written[key] = path
    return written
