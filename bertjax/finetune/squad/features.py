"""SQuAD examples -> model inputs, as run_squad.py builds them (its flag names are the arguments).

Each example becomes one or more windows `[CLS] question [SEP] context-window [SEP]`: the
question is cut to `max_query_length` tokens, and windows of at most max_seq_length -
len(question) - 3 context tokens slide over the whole paragraph `doc_stride` tokens at a time.
A token seen by several windows is scored (at decoding) only in the window where it has the
most context: run_squad.py's _check_is_max_context, min(left, right) + 0.01 * window length,
the first window winning ties.

Training targets come from the first reference answer: the tokens whose character spans overlap
its first and last character. A window that does not hold the whole answer, and every window of
an unanswerable (v2) question, has start = end = 0, the [CLS] position.

Positions are mapped back to text through `token_offsets`: the (start, end) characters of the
context each position came from (tokenizer.encode_with_offsets), -1 where the position is not a
context token ([CLS], the question, [SEP], padding), so that an answer is the exact substring
of the original context.

Questions are cut to max_query_length, so a question alone can never fill a window once
check_window_config passed; a max_query_length that leaves no room for context is refused there,
before anything is tokenised (build_features calls it first). Special tokens typed in a question
or context ("[SEP]") are text here (parse_specials=False), as run_squad.py's tokenizer has them:
a literal "[SEP]" in a paragraph must not become a segment boundary.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from bertjax.finetune.squad.reader import Example

MODEL_INPUTS = ("input_ids", "segment_ids", "input_mask", "start_positions", "end_positions")


def check_window_config(*, max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """Raises ValueError unless the window settings can cover every context (call it before
    tokenising: the message names the fields and the bound)."""
    for name, value in (("max_seq_length", max_seq_length), ("doc_stride", doc_stride),
                        ("max_query_length", max_query_length)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    room = max_seq_length - max_query_length - 3
    if room < 2:
        raise ValueError(
            f"max_query_length={max_query_length} leaves no room for the context in "
            f"max_seq_length={max_seq_length}: a question of {max_query_length} tokens plus "
            "[CLS] and two [SEP] fill the window; lower max_query_length or raise "
            "max_seq_length")
    if doc_stride >= room:
        raise ValueError(
            f"doc_stride={doc_stride} must be less than max_seq_length - max_query_length - 3 = "
            f"{max_seq_length} - {max_query_length} - 3 = {room} (the context tokens a window "
            "holds), so that consecutive windows overlap and every token gets a window where it "
            "has context on both sides; lower doc_stride or raise max_seq_length")


def windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the context windows, as run_squad.py's doc_spans."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def max_context(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """int[num_tokens]: the window in which each context token has the most context."""
    idx = np.arange(num_tokens)
    best, best_score = np.zeros(num_tokens, np.int64), np.full(num_tokens, -np.inf)
    for w, (start, length) in enumerate(spans):
        end = start + length - 1
        inside = (idx >= start) & (idx <= end)
        score = np.minimum(idx - start, end - idx) + 0.01 * length
        better = inside & (score > best_score)  # strict: the first window wins a tie
        best[better], best_score[better] = w, score[better]
    return best


def answer_tokens(spans: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """First and last token overlapping the characters [start, end) of the context (None when
    no token does, e.g. an answer of whitespace only). `spans` is int[num_tokens, 2]."""
    first = int(np.searchsorted(spans[:, 1], start, side="right"))
    last = int(np.searchsorted(spans[:, 0], end, side="left")) - 1
    return (first, last) if first <= last else None


@dataclasses.dataclass
class Features:
    """One row per window. The MODEL_INPUTS arrays feed the model; the rest is bookkeeping for
    decoding."""
    input_ids: np.ndarray            # int32 [N, max_seq_length]
    segment_ids: np.ndarray          # int32 [N, max_seq_length]: 0 question part, 1 context
    input_mask: np.ndarray           # int32 [N, max_seq_length]: 1 real token, 0 padding
    start_positions: np.ndarray      # int32 [N]: answer's first position, 0 = [CLS] = none
    end_positions: np.ndarray        # int32 [N]
    example_index: np.ndarray        # int32 [N]: the example this window belongs to
    token_offsets: np.ndarray        # int32 [N, max_seq_length, 2]: context chars, -1 outside
    token_is_max_context: np.ndarray  # bool [N, max_seq_length]

    def __len__(self) -> int:
        return len(self.input_ids)

    def model_inputs(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in MODEL_INPUTS}


def build_features(examples: Sequence[Example], tokenizer, *, max_seq_length: int = 384,
                   doc_stride: int = 128, max_query_length: int = 64) -> Features:
    """Windows of every example (in order) for `tokenizer` (either kind: it needs
    encode_batch, encode_batch_with_offsets, cls_id, sep_id, pad_id)."""
    check_window_config(max_seq_length=max_seq_length, doc_stride=doc_stride,
                        max_query_length=max_query_length)
    contexts = list(dict.fromkeys(e.context for e in examples))  # paragraphs repeat
    encoded = tokenizer.encode_batch_with_offsets(contexts, parse_specials=False)
    by_context = {c: (np.asarray(ids, np.int32), np.asarray(spans, np.int32).reshape(-1, 2))
                  for c, (ids, spans) in zip(contexts, encoded)}
    questions = tokenizer.encode_batch([e.question for e in examples], parse_specials=False)
    rows = []
    for i, (example, question) in enumerate(zip(examples, questions)):
        doc_ids, doc_spans = by_context[example.context]
        rows.extend(_windows_of(i, example, question[:max_query_length], doc_ids, doc_spans,
                                tokenizer, max_seq_length, doc_stride))
    return _stack(rows, max_seq_length, tokenizer.pad_id)


def _windows_of(index, example, query, doc_ids, doc_spans, tokenizer, max_seq_length,
                doc_stride):
    max_tokens = max_seq_length - len(query) - 3
    spans = windows(len(doc_ids), max_tokens, doc_stride)
    best = max_context(spans, len(doc_ids))
    target = None
    if not example.is_impossible and example.answers:
        answer = example.answers[0]
        target = answer_tokens(doc_spans, answer.start, answer.start + len(answer.text))
    offset = len(query) + 2  # [CLS] question [SEP]
    for w, (start, length) in enumerate(spans):
        ids = [tokenizer.cls_id, *query, tokenizer.sep_id, *doc_ids[start:start + length],
               tokenizer.sep_id]
        first = last = 0
        if target is not None and start <= target[0] and target[1] < start + length:
            first, last = target[0] - start + offset, target[1] - start + offset
        yield dict(index=index, ids=ids, offset=offset, context_len=length,
                   spans=doc_spans[start:start + length],
                   max_context=best[start:start + length] == w, start=first, end=last)


def _stack(rows, max_seq_length, pad_id) -> Features:
    n = len(rows)
    input_ids = np.full((n, max_seq_length), pad_id, np.int32)
    segment_ids = np.zeros((n, max_seq_length), np.int32)
    input_mask = np.zeros((n, max_seq_length), np.int32)
    token_offsets = np.full((n, max_seq_length, 2), -1, np.int32)
    is_max = np.zeros((n, max_seq_length), bool)
    for r, row in enumerate(rows):
        length, a, b = len(row["ids"]), row["offset"], row["offset"] + row["context_len"]
        input_ids[r, :length] = row["ids"]
        input_mask[r, :length] = 1
        segment_ids[r, a:length] = 1  # the context and its closing [SEP]
        token_offsets[r, a:b] = row["spans"]
        is_max[r, a:b] = row["max_context"]
    return Features(
        input_ids=input_ids, segment_ids=segment_ids, input_mask=input_mask,
        start_positions=np.array([row["start"] for row in rows], np.int32).reshape(n),
        end_positions=np.array([row["end"] for row in rows], np.int32).reshape(n),
        example_index=np.array([row["index"] for row in rows], np.int32).reshape(n),
        token_offsets=token_offsets, token_is_max_context=is_max)
