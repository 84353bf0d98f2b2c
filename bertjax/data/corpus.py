"""Text corpora as streams of documents, cut into independent work units for parallel reading.

A corpus spec is one of
  'default'                       English text shipped with CPython (pydoc_data), offline anywhere;
  a path, directory or glob       local files, `.gz` read transparently, in one of the formats
                                  'bert' (one sentence per line, blank line between documents),
                                  'wikiextractor' (<doc ...> ... </doc>, one paragraph per line) or
                                  'files' (one document per file, blank lines between paragraphs);
                                  'auto' picks 'wikiextractor' when the first line is a <doc> tag,
                                  otherwise 'bert' (one-document-per-file must be asked for);
  'tfds:NAME[/CONFIG][:SPLIT]'    a TFDS text dataset (its 'text' feature), e.g. 'tfds:c4/en',
                                  already prepared in the TFDS data dir (never downloaded here).

Local files must be UTF-8 text: binary files, files in a legacy encoding and unreadable .gz files
are refused before any work (judged from each file's first SNIFF_BYTES); a stray invalid line
later on keeps its valid text and is counted in ReadStats.invalid_utf8.

Each document carries a key that does not depend on how the corpus was cut into units (file and
byte offset, TFDS index, ...), so anything derived from it, like the evaluation hold-out, is
stable across machines and worker counts.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import glob
import gzip
import mmap
import os
import pathlib
import re
import zlib
from typing import Callable, Iterator

FORMATS = ("auto", "bert", "wikiextractor", "files")
# Work unit size: small enough to balance 2..64 workers, large enough to amortise a unit's setup.
UNIT_BYTES = 8 << 20
_GLOB_CHARS = re.compile(r"[*?\[]")
# How much of each file is looked at before preparation starts (binary, encoding, gzip checks).
SNIFF_BYTES = 64 << 10
# A blank line between documents, with LF or CRLF line endings.
_BLANK_LINE = re.compile(rb"\n\r?\n")
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@dataclasses.dataclass
class Document:
    key: str
    lines: list[str]  # sentences if the corpus says `lines_are_sentences`, else paragraphs;
                      # may be empty (readers pass empty documents on, preparation counts them)
    group: str = ""   # documents of one group are held out together (e.g. duplicates of each
                      # other, see default_corpus.py); "" = the document alone

    @property
    def holdout_key(self) -> str:
        """What the evaluation hold-out hashes (bertjax/data/prepare.py)."""
        return self.group or self.key


@dataclasses.dataclass(frozen=True)
class Unit:
    """A picklable slice of a corpus: byte ranges of files, or an index range of a TFDS split."""
    segments: tuple = ()       # ((path, start, end), ...); end=None means to the end of the file
    tfds_range: tuple = ()     # (start, stop)
    nbytes: int = 0            # approximate, for progress and throughput


@dataclasses.dataclass
class ReadStats:
    """What reading saw besides documents: invalid UTF-8 lines per file, raw bytes."""
    bytes: int = 0
    invalid_utf8: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def merge(self, other: "ReadStats") -> None:
        self.bytes += other.bytes
        self.invalid_utf8.update(other.invalid_utf8)


class Corpus(abc.ABC):
    """Base: `units()` plans the work, `read(unit, stats)` streams one unit's documents."""
    lines_are_sentences = False
    description = ""

    @abc.abstractmethod
    def units(self) -> list[Unit]:
        """The corpus cut into units that can be read independently, in a fixed order."""

    @abc.abstractmethod
    def read(self, unit: Unit, stats: ReadStats) -> Iterator[Document]:
        """The documents of one unit, in order; adds what it saw to `stats`."""

    def documents(self, stats: ReadStats | None = None) -> Iterator[Document]:
        stats = stats if stats is not None else ReadStats()
        for unit in self.units():
            yield from self.read(unit, stats)

    def fingerprint(self) -> dict:
        """Identifies the input (names, sizes, mtimes): a resumed preparation sees a change."""
        return {"description": self.description}


def open_corpus(spec: str, corpus_format: str = "auto", *, tfds_data_dir: str = "",
                unit_bytes: int = UNIT_BYTES) -> Corpus:
    """Resolves a corpus spec (see the module docstring); raises before any expensive work."""
    check_format(corpus_format)
    if not spec:
        raise ValueError("data.corpus is empty: expected 'default', a path/glob or 'tfds:NAME'")
    for prefix, opener in _KINDS.items():
        if spec == prefix or (prefix.endswith(":") and spec.startswith(prefix)):
            return opener(spec[len(prefix):], tfds_data_dir=tfds_data_dir, unit_bytes=unit_bytes)
    return FileCorpus(spec, corpus_format, unit_bytes=unit_bytes)


# Corpus kinds named by their spec rather than a path, registered by the modules that implement
# them (default_corpus.py: 'default'; tfds_corpus.py: 'tfds:' + name), which the package's
# __init__ imports: this module, their interface, never imports them back.
_KINDS: dict[str, Callable[..., Corpus]] = {}


def register_kind(prefix: str, opener: Callable[..., Corpus]) -> None:
    """`spec == prefix`, or for a prefix ending in ':' any spec starting with it, opens as
    `opener(rest_of_spec, tfds_data_dir=..., unit_bytes=...)`."""
    _KINDS[prefix] = opener


def check_format(corpus_format: str) -> None:
    if corpus_format not in FORMATS:
        raise ValueError(f"data.corpus_format={corpus_format!r}: expected one of {FORMATS}")


# --------------------------------------------------------------------------------------------
# Local files.

def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def decode_text(raw: bytes, path: str, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # As BERT's convert_to_unicode: keep the valid text of the line, but count it.
        stats.invalid_utf8[path] += 1
        return raw.decode("utf-8", "ignore")


def _list_files(spec: str) -> tuple[list[str], str]:
    """Sorted files named by a file, directory or glob, and the root their keys are relative to."""
    p = pathlib.Path(spec).expanduser()
    if _GLOB_CHARS.search(spec):
        files = sorted(f for f in glob.glob(str(p), recursive=True) if os.path.isfile(f))
        root = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
    elif p.is_dir():
        files = sorted(str(f) for f in p.rglob("*")
                       if f.is_file() and not any(part.startswith(".") for part in
                                                  f.relative_to(p).parts))
        root = str(p)
    elif p.is_file():
        files, root = [str(p)], str(p.parent)
    else:
        raise FileNotFoundError(
            f"data.corpus={spec!r}: no such file or directory; expected 'default', a file, a "
            "directory, a glob or 'tfds:NAME'")
    if not files:
        raise FileNotFoundError(f"data.corpus={spec!r} matches no files")
    return files, root


def _head(path: str) -> bytes:
    """The first SNIFF_BYTES of a file (decompressed for .gz)."""
    try:
        with _open_binary(path) as f:
            return f.read(SNIFF_BYTES)
    except _GZIP_ERRORS as e:
        raise ValueError(f"{path}: not a readable gzip file ({e}); expected gzip-compressed "
                         "text, since the name ends in .gz") from None


def _check_text(path: str, head: bytes) -> None:
    """Refuses, before any work, files that are not UTF-8 text: binary files (NUL bytes) and
    files in a legacy single-byte encoding. Judged from the head of the file only; stray
    invalid bytes later on are counted while reading (as BERT's convert_to_unicode, the valid
    text of such a line is kept) and reported in the preparation stats."""
    nul = head.find(b"\0")
    if nul >= 0:
        raise ValueError(
            f"{path}: NUL byte at offset {nul}: a binary file (or UTF-16 text); expected UTF-8 "
            "text. Remove it from data.corpus (or convert UTF-16 with iconv -f utf-16 -t utf-8)")
    lines = head.split(b"\n")
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut mid-character
    non_ascii, bad = 0, []
    for i, line in enumerate(lines, start=1):
        if not line.isascii():
            non_ascii += 1
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                if _looks_single_byte(line):
                    bad.append((i, line[e.start]))
    # Latin-1/cp1252 text fails to decode on (nearly) every line with an accent, and its high
    # bytes read as letters inside words; UTF-8 text with a few corrupt lines decodes on most
    # of its non-ASCII lines, and corrupt bytes do not read as words.
    if bad and 2 * len(bad) > non_ascii:
        line, byte = bad[0]
        raise ValueError(
            f"{path}:{line}: byte 0x{byte:02x} is not UTF-8 ({len(bad)} of the {non_ascii} "
            f"non-ASCII lines in the first {len(head)} bytes fail to decode): the file looks "
            "like a legacy single-byte encoding (latin-1/cp1252); expected UTF-8. Convert it, e.g. "
            f"iconv -f cp1252 -t utf-8 {os.path.basename(path)}")


_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_CP1252_PUNCTUATION = set("\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb\u00b0")


def _looks_single_byte(line: bytes) -> bool:
    """Whether every run of high bytes reads, in cp1252, as letters (or typographic punctuation)
    touching an ASCII letter: 'caf\xe9', 'Gr\xf6\xdfe', 'don\x92t'."""
    for m in _HIGH_RUN.finditer(line):
        chars = m.group().decode("cp1252", errors="replace")
        if not all(c.isalpha() or c in _CP1252_PUNCTUATION for c in chars):
            return False
        before, after = line[m.start() - 1:m.start()], line[m.end():m.end() + 1]
        if not (before.isalpha() or after.isalpha()):
            return False
    return True


def _sniff_format(head: bytes) -> str:
    for raw in head.split(b"\n"):
        line = raw.strip()
        if line:
            return "wikiextractor" if line.startswith(b"<doc ") or line == b"<doc>" else "bert"
    return "bert"


class FileCorpus(Corpus):

    def __init__(self, spec: str, corpus_format: str = "auto", *, unit_bytes: int = UNIT_BYTES):
        self.files, self.root = _list_files(spec)
        heads = {}
        for path in self.files:
            heads[path] = _head(path)
            _check_text(path, heads[path])
        if not any(heads.values()):
            raise ValueError(f"data.corpus={spec!r}: {len(self.files)} file(s), all empty "
                             f"(e.g. {self.files[0]}); expected text")
        if corpus_format == "auto":
            corpus_format = _sniff_format(heads[self.files[0]])
        self.format = corpus_format
        self.lines_are_sentences = corpus_format == "bert"
        self.unit_bytes = unit_bytes
        self.description = f"{spec} ({corpus_format}, {len(self.files)} files)"

    def fingerprint(self) -> dict:
        files = [(os.path.relpath(f, self.root), os.path.getsize(f), int(os.path.getmtime(f)))
                 for f in self.files]
        return {"description": self.description, "format": self.format, "files": files}

    def units(self) -> list[Unit]:
        units, pending, pending_bytes = [], [], 0

        def flush():
            nonlocal pending, pending_bytes
            if pending:
                units.append(Unit(segments=tuple(pending), nbytes=pending_bytes))
            pending, pending_bytes = [], 0

        for path in self.files:
            size = os.path.getsize(path)
            if self.format == "files" or path.endswith(".gz") or size <= self.unit_bytes:
                pending.append((path, 0, None))
                pending_bytes += size
                if pending_bytes >= self.unit_bytes:
                    flush()
                continue
            flush()
            for start, end in _split_points(path, size, self.unit_bytes, self.format):
                units.append(Unit(segments=((path, start, end),), nbytes=end - start))
        flush()
        return units

    def read(self, unit: Unit, stats: ReadStats) -> Iterator[Document]:
        for path, start, end in unit.segments:
            rel = os.path.relpath(path, self.root)
            if self.format == "files":
                yield from _read_whole_file(path, rel, stats)
            else:
                lines = _lines(path, start, end, stats)
                if self.format == "wikiextractor":
                    yield from _wikiextractor_docs(lines, rel)
                else:
                    yield from _bert_docs(lines, rel)


def _split_points(path: str, size: int, unit_bytes: int, corpus_format: str):
    """Cuts a large file into byte ranges that each start exactly at a document."""
    boundary = re.compile(rb"\n<doc " if corpus_format == "wikiextractor" else _BLANK_LINE)
    cuts = [0]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        target = unit_bytes
        while target < size:
            found = boundary.search(m, target)
            if found is None:
                break
            cut = found.start() + 1 if corpus_format == "wikiextractor" else found.end()
            cuts.append(cut)
            target = cut + unit_bytes
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _lines(path: str, start: int, end: int | None, stats: ReadStats):
    """Yields (byte offset, decoded line without newline) for [start, end) of a file."""
    with _open_binary(path) as f:
        if start:
            f.seek(start)
        pos = start
        try:
            for raw in f:
                if end is not None and pos >= end:
                    break
                stats.bytes += len(raw)
                yield pos, decode_text(raw, path, stats).rstrip("\r\n")
                pos += len(raw)
        except _GZIP_ERRORS as e:
            raise _gzip_error(path, pos, e) from None


def _gzip_error(path: str, pos: int, e: Exception) -> ValueError:
    # A truncated download is usually a mistake to fix, not text to train on: stop, naming it.
    return ValueError(f"{path}: truncated or corrupt gzip file ({type(e).__name__}: {e}) after "
                      f"{pos} decompressed bytes; expected a complete .gz file. Re-download or "
                      "re-compress it, then run again")


def _bert_docs(lines, rel: str) -> Iterator[Document]:
    doc, key = [], None
    for pos, line in lines:
        line = line.strip()
        if not line:
            if doc:
                yield Document(key, doc)
            doc, key = [], None
            continue
        if key is None:
            key = f"{rel}:{pos}"
        doc.append(line)
    if doc:
        yield Document(key, doc)


def _wikiextractor_docs(lines, rel: str) -> Iterator[Document]:
    doc, key, skip_title = None, None, False
    for pos, line in lines:
        stripped = line.strip()
        if stripped.startswith("<doc ") or stripped == "<doc>":
            doc, key, skip_title = [], f"{rel}:{pos}", True
        elif stripped == "</doc>":
            if doc is not None:
                yield Document(key, doc)
            doc = None
        elif doc is not None and stripped:
            if skip_title:  # WikiExtractor repeats the title as the first line, not a sentence
                skip_title = False
                continue
            doc.append(stripped)
    if doc:  # a truncated file: keep what was there
        yield Document(key, doc)


def _paragraphs(text: str) -> list[str]:
    """Blank-line-separated blocks, each joined into one line (hard-wrapped text is common)."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def _read_whole_file(path: str, rel: str, stats: ReadStats) -> Iterator[Document]:
    with _open_binary(path) as f:
        try:
            raw = f.read()
        except _GZIP_ERRORS as e:
            raise _gzip_error(path, 0, e) from None
    stats.bytes += len(raw)
    text = "\n".join(decode_text(line, path, stats) for line in raw.split(b"\n"))
    yield Document(rel, _paragraphs(text))  # empty ones too: preparation counts them


# --------------------------------------------------------------------------------------------
# Sentences.

def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph, by Bling Fire's sentence breaker (a maintained model, fast C).

    Called per paragraph so that a paragraph end always ends a sentence.
    """
    import blingfire
    return [s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip()]


def sentences(doc: Document, lines_are_sentences: bool) -> list[str]:
    if lines_are_sentences:
        return doc.lines
    return [s for para in doc.lines for s in split_sentences(para)]
