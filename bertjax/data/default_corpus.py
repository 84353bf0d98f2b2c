"""The built-in corpus (`data.corpus='default'`): CPython's pydoc topics, offline anywhere.

The topics repeat each other: `compound` holds the sections that `if`, `while`, `try` ... also
are, `typesseq` the table that `typesseq-mutable` is, `specialnames` most of
`attribute-access`. About a third of the text appears in two documents. Held out one by one,
an evaluation document would then mostly be text the model trained on (the README's tiny run
once showed 37% held-out MLM accuracy at step 200 against 13% in training). So every document
carries a `group`, the same for documents that share a paragraph, and the hold-out takes or
leaves a group whole (bertjax/data/prepare.py).
"""
from __future__ import annotations

import re
import sys
from typing import Iterator, Sequence

from bertjax.data import corpus

# Paragraphs of fewer words do not make two documents one family ("See also:", "Changed in
# version 3.8.", a one-line signature are shared by unrelated sections).
FAMILY_MIN_WORDS = 8


class DefaultCorpus(corpus.Corpus):
    """CPython's pydoc topics (the Language Reference chapters `help()` shows), ~0.45 MB.

    Each section (a heading underlined with *, = or -) is a document; indented blocks (grammar
    and code examples) are dropped, bullets are kept as paragraphs.
    """
    description = "default (CPython pydoc_data topics)"

    def fingerprint(self) -> dict:
        # "holdout" names the grouping, so that a preparation resumed across this change does
        # not mix documents split the old way (one by one) with the new.
        return {"description": self.description, "python": sys.version.split()[0],
                "holdout": f"families sharing a paragraph of >= {FAMILY_MIN_WORDS} words"}

    def units(self) -> list[corpus.Unit]:
        return [corpus.Unit(nbytes=sum(len(t.encode()) for t in _pydoc_topics().values()))]

    def read(self, unit: corpus.Unit, stats: corpus.ReadStats) -> Iterator[corpus.Document]:
        docs = []
        for name, text in sorted(_pydoc_topics().items()):
            stats.bytes += len(text.encode("utf-8"))
            for i, section in enumerate(_sections(text)):
                paragraphs = []
                for block in re.split(r"\n\s*\n", section):
                    if not block.strip() or block.startswith("   "):
                        continue
                    para = " ".join(block.split())
                    paragraphs.append(para[2:] if para.startswith("* ") else para)
                if paragraphs:
                    docs.append(corpus.Document(f"pydoc:{name}#{i}", paragraphs))
        for doc, group in zip(docs, duplicate_families(docs)):
            doc.group = group
            yield doc


def duplicate_families(docs: Sequence[corpus.Document],
                       min_words: int = FAMILY_MIN_WORDS) -> list[str]:
    """Per document, the smallest key of its family: the documents linked, directly or through
    others, by an identical paragraph of at least `min_words` words."""
    parent = list(range(len(docs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        for para in doc.lines:
            if len(para.split()) < min_words:
                continue
            j = first_seen.setdefault(para, i)
            parent[root(i)] = root(j)
    smallest: dict[int, str] = {}
    for i, doc in enumerate(docs):
        r = root(i)
        smallest[r] = min(smallest.get(r, doc.key), doc.key)
    return [smallest[root(i)] for i in range(len(docs))]


def _pydoc_topics() -> dict:
    try:
        from pydoc_data import topics
    except ImportError as e:  # some distributions strip it
        raise FileNotFoundError(
            "data.corpus='default' needs CPython's pydoc_data module, which this Python lacks; "
            "point data.corpus at a text file instead") from e
    return topics.topics


def _sections(text: str) -> list[str]:
    lines = text.split("\n")
    sections, current = [], []
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and re.fullmatch(r"([*=\-])\1{2,}", lines[i + 1].strip())
        if underline and current:
            sections.append("\n".join(current))
            current = []
        if re.fullmatch(r"([*=\-])\1{2,}", line.strip()):
            continue
        current.append(line)
    if current:
        sections.append("\n".join(current))
    return sections


corpus.register_kind("default", lambda spec, **_: DefaultCorpus())
