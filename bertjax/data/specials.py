"""BERT's special tokens as typed in text, shared by both tokenizers (tokenizer.py for
SentencePiece, wordpiece.py for WordPiece): the five strings, and the batch encoder that maps
them to ids and encodes the text between them (tokenizer.py's docstring says why)."""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# The capturing group makes re.split keep the matched token: odd items are special tokens.
_SPECIAL_TEXT = re.compile("(" + "|".join(re.escape(t) for t in (PAD, UNK, CLS, SEP, MASK))
                           + ")")


def encode_with_specials(texts: Sequence[str],
                         encode_plain: Callable[[Sequence[str]], list[list[int]]],
                         special_ids: Mapping[str, int]) -> list[list[int]]:
    """Encodes `texts` with the special tokens typed in them mapped to `special_ids`; the text
    between special tokens goes to `encode_plain` (a batch encoder), each stretch on its own."""
    texts = list(texts)
    if not any("[" in t for t in texts):  # the common case costs one scan
        return encode_plain(texts)
    parts = [_SPECIAL_TEXT.split(t) for t in texts]
    encoded = iter(encode_plain([p for ps in parts for p in ps[0::2] if p]))
    out = []
    for ps in parts:
        ids = []
        for i, p in enumerate(ps):
            if i % 2:
                ids.append(special_ids[p])
            elif p:
                ids.extend(next(encoded))
        out.append(ids)
    return out
