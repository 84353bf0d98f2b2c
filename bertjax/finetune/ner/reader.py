"""CoNLL-2003 column files -> sentences of (word, tag), and the tag set of a training file.

Layout: one token per line, whitespace-separated columns `word POS chunk NER` (the tag is the
last column, so 2-column `word TAG` files read too), a blank line between sentences, and
`-DOCSTART-` lines between documents. A `-DOCSTART-` line is a document boundary: it ends the
sentence before it and is not a token. Every token line must have as many columns as the file's
first token line (a shorter or longer line is a broken file, not a token to guess at).

Tags are IOB: `O`, `B-TYPE` or `I-TYPE`. Both IOB1 (the original distribution: an entity starts
with I-, and B- only separates two adjacent entities of one type) and IOB2 (every entity starts
with B-; ../shared/data/conll2003 is IOB2) are read as they are; `scheme()` tells them apart.

The tag set comes from the training file: `O` and, for every entity type the training file
has, both `B-TYPE` and `I-TYPE`. Both prefixes always, because in IOB1 a B- tag is rare and
a training file can lack `B-PER` while a dev file has one: that is the same entity type, and the
model must be able to emit it. A dev or test tag whose *type* the training file never had is an
error that lists them (a model cannot learn a type it never saw, and scoring would silently
count every such entity as missed).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Iterable, Sequence

DOCSTART = "-DOCSTART-"
OUTSIDE = "O"
_TAG = re.compile(r"^([BI])-(\S+)$")
# Split name -> the file names accepted for it, in order of preference: the original
# distribution's names, then the names of the common re-distributions (e.g. Hugging Face's).
FILE_NAMES = {"train": ("eng.train", "train.txt"), "dev": ("eng.testa", "valid.txt"),
              "test": ("eng.testb", "test.txt")}


class CoNLLFormatError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int          # the file line of its first token (1-based), for messages
    document: int      # the index of its document (count of -DOCSTART- lines before it)

    def __len__(self) -> int:
        return len(self.words)


@dataclasses.dataclass
class CoNLLFile:
    path: str
    sentences: list[Sentence]
    columns: int

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)

    def tags(self) -> list[list[str]]:
        return [list(s.tags) for s in self.sentences]


def check_tag(tag: str, where: str) -> str | None:
    """-> the entity type of an IOB tag (None for O); CoNLLFormatError otherwise."""
    if tag == OUTSIDE:
        return None
    m = _TAG.match(tag)
    if not m:
        raise CoNLLFormatError(
            f"{where}: tag {tag!r} is not an IOB tag; expected 'O', 'B-TYPE' or 'I-TYPE' "
            "(IOB1 or IOB2, as in CoNLL-2003) in the last column")
    return m.group(2)


def _lines(path: pathlib.Path) -> Iterable[tuple[int, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CoNLLFormatError(f"{path}:{number}: not UTF-8 text ({e})") from None


def read_file(path: str | os.PathLike) -> CoNLLFile:
    """Reads one column file; errors name the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a CoNLL-2003 column file)")
    sentences, words, tags = [], [], []
    columns = first_line = start = 0
    document = 0

    def flush():
        if words:
            sentences.append(Sentence(tuple(words), tuple(tags), start, document))
            words.clear()
            tags.clear()

    for number, text in _lines(path):
        fields = text.split()
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            document += 1 if sentences else 0  # a leading -DOCSTART- opens document 0
            continue
        if not columns:
            columns, first_line = len(fields), number
            if columns < 2:
                raise CoNLLFormatError(
                    f"{path}:{number}: one column ({text.strip()!r}); expected `word ... TAG` "
                    "columns (CoNLL-2003: word POS chunk NER, the tag last)")
        if len(fields) != columns:
            raise CoNLLFormatError(
                f"{path}:{number}: {len(fields)} columns, but the file's first line (line "
                f"{first_line}) has {columns}; every token line needs the same columns "
                "(CoNLL-2003: word POS chunk NER, the tag last)")
        check_tag(fields[-1], f"{path}:{number}")
        if not words:
            start = number
        words.append(fields[0])
        tags.append(fields[-1])
    flush()
    if not sentences:
        raise CoNLLFormatError(
            f"{path}: no sentences (an empty file, or only blank and {DOCSTART} lines); "
            "expected token lines `word POS chunk NER` with a blank line between sentences")
    return CoNLLFile(str(path), sentences, columns)


def entity_types(tags: Iterable[Sequence[str]]) -> list[str]:
    """Sorted entity types of tag sequences (validated earlier by read_file)."""
    return sorted({t[2:] for seq in tags for t in seq if t != OUTSIDE})


def tag_set(train: CoNLLFile) -> tuple[str, ...]:
    """The model's tags, in output order: O, then B-/I- of every training type, sorted."""
    return (OUTSIDE, *[f"{p}-{t}" for t in entity_types(train.tags()) for p in "BI"])


def check_tags_known(split: CoNLLFile, tags: Sequence[str]) -> None:
    """CoNLLFormatError listing every tag of `split` outside `tags` (with its first line)."""
    known, unknown = set(tags), {}
    for s in split.sentences:
        for i, t in enumerate(s.tags):
            if t not in known and t not in unknown:
                unknown[t] = s.line + i
    if unknown:
        listed = ", ".join(f"{t!r} (line {line})" for t, line in sorted(unknown.items()))
        raise CoNLLFormatError(
            f"{split.path}: tag(s) {listed} never occur in the training file, whose tag set is "
            f"{list(tags)}; the model cannot learn an entity type it never saw. Check that the "
            "files belong to one dataset (same entity types)")


def scheme(tags: Iterable[Sequence[str]]) -> str:
    """'IOB2' when every entity starts with B-, else 'IOB1' (an I- opening an entity)."""
    for seq in tags:
        previous = OUTSIDE
        for t in seq:
            if t.startswith("I-") and previous[2:] != t[2:]:
                return "IOB1"
            previous = t
    return "IOB2"


def find_files(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """split -> path for the files present (train and dev required, test optional)."""
    directory = pathlib.Path(directory)
    found = {}
    for split, names in FILE_NAMES.items():
        for name in names:
            if (directory / name).is_file():
                found[split] = directory / name
                break
    missing = [f"{split} ({' or '.join(FILE_NAMES[split])})" for split in ("train", "dev")
               if split not in found]
    if missing:
        raise FileNotFoundError(
            f"{directory}: missing the CoNLL-2003 {' and '.join(missing)} file(s); expected "
            "eng.train, eng.testa (dev), eng.testb (test) or train.txt, valid.txt, test.txt")
    return found


@dataclasses.dataclass
class CoNLLData:
    train: CoNLLFile
    dev: CoNLLFile
    test: CoNLLFile | None
    tags: tuple[str, ...]            # the model's tag set (tag_set of train)
    scheme: str                      # 'IOB1' | 'IOB2', of the training file
    notes: list[str]


def load(directory: str | os.PathLike) -> CoNLLData:
    """Reads train, dev and (when present) test of one CoNLL directory, checking every file
    before returning (nothing is tokenised yet)."""
    files = find_files(directory)
    train = read_file(files["train"])
    dev = read_file(files["dev"])
    test = read_file(files["test"]) if "test" in files else None
    tags = tag_set(train)
    for split in (dev, test):
        if split is not None:
            check_tags_known(split, tags)
    notes = [f"{train.path}: {len(train)} sentences, tags {scheme(train.tags())}"]
    if test is None:
        notes.append(f"no test file ({' or '.join(FILE_NAMES['test'])}) in {directory}: "
                     "dev scores only")
    return CoNLLData(train, dev, test, tags, scheme(train.tags()), notes)
