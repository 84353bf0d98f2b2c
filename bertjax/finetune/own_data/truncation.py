"""Which tokens of a long single text to keep (`truncation=head|tail|head_tail`).

  head       the first max_tokens tokens (BERT's truncation; the default)
  tail       the last max_tokens
  head_tail  the first `head_tokens` (128) and the last max_tokens - head_tokens: at
             max_seq_length 512, the first 128 and the last 382 = 512 - 130, the best of Sun et
             al. 2019 ("How to Fine-Tune BERT for Text Classification?", sec. 5.3.1) on IMDB.

max_tokens is max_seq_length - 2 ([CLS] text [SEP]). These modes are for one text; a sentence
pair keeps GLUE's longest-first truncation (glue.data.truncate_pair), and `check_truncation`
refuses the others for pairs (which end of which sentence to keep is not defined by them).
"""
from __future__ import annotations

from typing import Sequence

MODES = ("head", "tail", "head_tail")
HEAD_TOKENS = 128


def check_truncation(mode: str, max_seq_length: int, *, pair: bool = False,
                     head_tokens: int = HEAD_TOKENS) -> None:
    """ValueError naming the field, before anything is tokenised."""
    if mode not in MODES:
        raise ValueError(f"truncation={mode!r}: expected one of {MODES}")
    if pair and mode != "head":
        raise ValueError(f"truncation={mode!r} is for single texts; a sentence pair is "
                         "truncated longest-first (truncation='head')")
    if mode == "head_tail" and not 0 < head_tokens < max_seq_length - 2:
        raise ValueError(
            f"truncation='head_tail' keeps the first {head_tokens} tokens and the last "
            f"max_seq_length - 2 - {head_tokens}; max_seq_length={max_seq_length} leaves no "
            f"tail: raise max_seq_length above {head_tokens + 2} (Sun et al. use 512)")


def truncate(ids: Sequence[int], max_tokens: int, mode: str = "head",
             head_tokens: int = HEAD_TOKENS) -> list[int]:
    """The kept tokens of one text, in their order (all of them when they fit)."""
    ids = list(ids)
    if len(ids) <= max_tokens:
        return ids
    if mode == "head":
        return ids[:max_tokens]
    if mode == "tail":
        return ids[len(ids) - max_tokens:]
    if mode == "head_tail":
        if not 0 < head_tokens < max_tokens:
            raise ValueError(f"head_tokens={head_tokens}: expected 0 < head_tokens < "
                             f"max_tokens={max_tokens}")
        return ids[:head_tokens] + ids[len(ids) - (max_tokens - head_tokens):]
    raise ValueError(f"truncation={mode!r}: expected one of {MODES}")
