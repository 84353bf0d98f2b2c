"""SQuAD v1.1 / v2.0 files (the official JSON layout) -> examples.

Layout: {"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"?, "plausible_answers"?}]}]}]}.
A file is v2.0 when its questions carry "is_impossible"; the task must match (SQuAD reads v1.1,
SQuAD-v2 reads v2.0), else the error names the task to use.

Every reference answer is kept (the official dev files have up to 3 per question, and the score
is the max over them). An `answer_start` whose text is not at that offset in the context:
- training: the question is skipped and counted (`skipped_ids`), as run_squad.py skips answers
  it cannot recover from the document: its start/end targets would point at the wrong tokens;
- evaluation: kept, since the official scripts score against the reference *texts* only.
Only the first reference is the training target (the official train files have exactly one).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

TASK_V1, TASK_V2 = "SQuAD", "SQuAD-v2"


class SquadFormatError(ValueError):
    """A SQuAD file that does not follow the official layout (the message names the path)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset of `text` in the context (as the file says)


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    title: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # every reference; () for an unanswerable v2 question
    is_impossible: bool = False


@dataclasses.dataclass
class SquadFile:
    examples: list[Example]
    v2: bool
    version: str  # the file's own "version" field ("1.1", "v2.0", ...), "" when absent
    skipped_ids: list[str]  # training questions whose answer text is not at answer_start

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_ids)


def answer_found(context: str, answer: Answer) -> bool:
    """Whether the answer's text stands at its answer_start in the context."""
    return 0 <= answer.start and context[answer.start:answer.start + len(answer.text)] == (
        answer.text)


def read(path: str | os.PathLike, *, v2: bool, training: bool) -> SquadFile:
    """Reads one SQuAD file for task SQuAD (v2=False) or SQuAD-v2 (v2=True)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file {str(path)!r} not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SquadFormatError(f"{path}: not a JSON file ({e})") from e
    return parse(raw, where=str(path), v2=v2, training=training)


def parse(raw, *, where: str, v2: bool, training: bool) -> SquadFile:
    """The parsed JSON of a SQuAD file -> SquadFile; `where` names the file in errors."""
    def fail(at, msg):
        raise SquadFormatError(f"{where}: {at}: {msg}" if at else f"{where}: {msg}")

    data = _field(raw, "data", list, "", fail)
    version = raw.get("version", "")
    examples, seen = [], {}
    file_is_v2 = False
    for a, article in enumerate(data):
        at_article = f"data[{a}]"
        _expect(article, dict, at_article, fail)
        title = _field(article, "title", str, at_article, fail, default="")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, at_article, fail)):
            at_par = f"{at_article}.paragraphs[{p}]"
            _expect(paragraph, dict, at_par, fail)
            context = _field(paragraph, "context", str, at_par, fail)
            for q, qa in enumerate(_field(paragraph, "qas", list, at_par, fail)):
                at = f"{at_par}.qas[{q}]"
                example = _example(qa, title, context, at, fail)
                if "is_impossible" in qa:
                    file_is_v2 = True
                if example.id in seen:
                    fail(at, f"id {example.id!r} repeats the id of {seen[example.id]}; "
                             "question ids must be unique (predictions are keyed by id)")
                seen[example.id] = at
                examples.append(example)
    _check_version(file_is_v2, v2, where, version)
    for at, e in zip(seen.values(), examples):
        if not e.is_impossible and not e.answers:
            fail(at, "'answers' is empty; an answerable question needs at least one "
                     "reference answer" + ("" if v2 else " (SQuAD v1.1 has no unanswerable "
                                                        "questions)"))
    skipped = []
    if training:
        usable = [e.is_impossible or answer_found(e.context, e.answers[0]) for e in examples]
        skipped = [e.id for e, ok in zip(examples, usable) if not ok]
        examples = [e for e, ok in zip(examples, usable) if ok]
    return SquadFile(examples=examples, v2=v2, version=str(version), skipped_ids=skipped)


def _example(qa, title, context, at, fail) -> Example:
    _expect(qa, dict, at, fail)
    qid = _field(qa, "id", str, at, fail)
    question = _field(qa, "question", str, at, fail)
    impossible = _field(qa, "is_impossible", bool, at, fail, default=False)
    answers = []
    for i, ans in enumerate(_field(qa, "answers", list, at, fail)):
        at_ans = f"{at}.answers[{i}]"
        _expect(ans, dict, at_ans, fail)
        text = _field(ans, "text", str, at_ans, fail)
        start = _field(ans, "answer_start", int, at_ans, fail)
        answers.append(Answer(text=text, start=start))
    if impossible and answers:
        fail(at, f"'is_impossible' is true but 'answers' lists {len(answers)} answers; an "
                 "unanswerable question has \"answers\": [] (its guesses go in "
                 "'plausible_answers')")
    return Example(id=qid, title=title, question=question, context=context,
                   answers=tuple(answers), is_impossible=impossible)


def _check_version(file_is_v2: bool, task_is_v2: bool, where: str, version) -> None:
    if file_is_v2 == task_is_v2:
        return
    declared = f" (its version field says {version!r})" if version else ""
    if file_is_v2:
        raise SquadFormatError(
            f"{where} is a SQuAD v2.0 file: its questions have 'is_impossible'{declared}; "
            f"the {TASK_V1} task reads v1.1 files. Use task {TASK_V2} for it.")
    raise SquadFormatError(
        f"{where} is a SQuAD v1.1 file: no question has 'is_impossible'{declared}; the "
        f"{TASK_V2} task reads v2.0 files. Use task {TASK_V1} for it.")


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               bool: "true or false"}


def _expect(value, kind, at, fail):
    # bool is an int in Python; an answer_start of `true` is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        fail(at, f"expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r:.60}")


_MISSING = object()


def _field(obj, key, kind, at, fail, default=_MISSING):
    if not isinstance(obj, dict):
        fail(at, f"expected an object with {key!r}, got {type(obj).__name__}")
    if key not in obj:
        if default is not _MISSING:
            return default
        fail(at, f"missing {key!r}")
    _expect(obj[key], kind, f"{at}.{key}" if at else key, fail)
    return obj[key]
