"""Character offsets of tokens into the ORIGINAL text, shared by both tokenizers.

Extractive QA returns an answer as a substring of the context, so every token needs the span of
the original characters it came from, whatever the normaliser did to them (NFKC, lower-casing,
accent stripping, whitespace collapsing). SentencePiece and Hugging Face `tokenizers` both track
that alignment; this module turns their raw spans into spans an answer can be cut from:

- Blank characters (whitespace, and control/format characters such as a zero-width space) are
  trimmed from both ends of a span: SentencePiece puts the whitespace before a word into the
  word-initial piece, and an answer starting there would begin with it. A piece that is all
  blank (a lone '\u2581') gets the empty span at its end.
- Non-blank characters that no token covers (a combining accent the normaliser stripped, a
  control character it dropped) join the token before them, or the token after them when they
  come first, so that an answer ending on that token keeps the character.

Spans are (start, end), Python string indices (code points), end exclusive, start <= end, and
starts and ends never decrease from token to token. Special tokens typed in the text (see
tokenizer.py) get the span of their literal, e.g. "[MASK]".
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, Mapping, Sequence

Span = tuple[int, int]
Encoded = tuple[list[int], list[Span]]


def _blank(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


@functools.lru_cache(maxsize=8)
def _special_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(re.escape(t) for t in tokens))


class EncodesWithOffsets:
    """The offsets half of a tokenizer's interface. A tokenizer class mixes it in and provides
    `_encode_plain_with_offsets(texts) -> [(ids, raw spans)]` (no special-token parsing) and
    `_special_ids_by_token` ({"[MASK]": id, ...})."""

    def encode_with_offsets(self, text: str, parse_specials: bool = True) -> Encoded:
        """(ids, spans): ids as encode() gives them, and for each the (start, end) characters
        of `text` it came from (see the module docstring)."""
        return self.encode_batch_with_offsets([text], parse_specials)[0]

    def encode_batch_with_offsets(self, texts: Sequence[str], parse_specials: bool = True
                                  ) -> list[Encoded]:
        return encode_batch_with_offsets(texts, self._encode_plain_with_offsets,
                                         self._special_ids_by_token, parse_specials)


def encode_batch_with_offsets(
        texts: Sequence[str],
        encode_plain: Callable[[Sequence[str]], list[Encoded]],
        special_ids: Mapping[str, int],
        parse_specials: bool) -> list[Encoded]:
    """(ids, spans) for each text. `encode_plain` encodes a batch of texts without special-token
    parsing and returns raw (ids, spans) into each of them; the text between typed special tokens
    is encoded stretch by stretch, as encode_with_specials does for ids alone."""
    texts = list(texts)
    if not parse_specials or not any("[" in t for t in texts):
        raw = encode_plain(texts)
    else:
        raw = _encode_around_specials(texts, encode_plain, special_ids)
    return [(list(ids), tidy_spans(text, spans)) for text, (ids, spans) in zip(texts, raw)]


def _encode_around_specials(texts, encode_plain, special_ids) -> list[Encoded]:
    pattern = _special_pattern(tuple(special_ids))
    # Per text: a list of (kind, start, end); kind is a special token or None for plain text.
    layouts, stretches = [], []
    for text in texts:
        layout, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                layout.append((None, pos, m.start()))
            layout.append((m.group(), m.start(), m.end()))
            pos = m.end()
        if pos < len(text):
            layout.append((None, pos, len(text)))
        layouts.append(layout)
        stretches.extend(text[s:e] for kind, s, e in layout if kind is None)
    encoded = iter(encode_plain(stretches))
    out = []
    for layout in layouts:
        ids, spans = [], []
        for kind, s, e in layout:
            if kind is not None:
                ids.append(special_ids[kind])
                spans.append((s, e))
            else:
                stretch_ids, stretch_spans = next(encoded)
                ids.extend(stretch_ids)
                spans.extend((s + a, s + b) for a, b in stretch_spans)
        out.append((ids, spans))
    return out


def tidy_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    """Raw tokenizer spans -> spans without blank edges, with uncovered non-blank characters
    given to a neighbour (see the module docstring)."""
    out = []
    for s, e in spans:
        s, e = int(s), int(e)
        while s < e and _blank(text[s]):
            s += 1
        while e > s and _blank(text[e - 1]):
            e -= 1
        out.append((s, e))  # an all-blank span became the empty span where the blanks end
    # An all-blank piece must not end past its successor's start (spans stay monotonic).
    for i in range(len(out) - 2, -1, -1):
        if out[i][0] == out[i][1] > out[i + 1][0]:
            out[i] = (out[i + 1][0],) * 2
    for i, (s, e) in enumerate(out):
        nxt = out[i + 1][0] if i + 1 < len(out) else len(text)
        while e < nxt and not _blank(text[e]):  # uncovered characters right after the token
            e += 1
        prev = out[i - 1][1] if i else 0
        while s > prev and not _blank(text[s - 1]):  # ... and those left right before it
            s -= 1
        out[i] = (s, e)
    return out
