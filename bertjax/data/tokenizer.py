"""SentencePiece tokenizer behind one small interface, with BERT's special tokens at fixed ids.

The ids are fixed so that a model config can rely on them: [PAD]=0 (padding rows are also
what an all-zero input means), [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. [CLS]/[SEP]/[MASK] are
SentencePiece *control* symbols, which SentencePiece itself never produces from raw text.

Special tokens typed in text. `encode("Paris is the [MASK] of France.")` gives the [MASK] id
where the literal "[MASK]" stands, as Hugging Face tokenizers do (researchers probe models that
way, and GLUE-style inputs may carry "[SEP]"). The five strings [PAD] [UNK] [CLS] [SEP] [MASK]
are matched exactly (case-sensitive, so "[mask]" is ordinary text, also for lower-casing
tokenizers); the text between them is encoded stretch by stretch, which is what the Hugging Face
export of a SentencePiece model (convert/hf_tokenizer.py) and BertTokenizer do too. Text without
them encodes exactly as before. The WordPiece tokenizer (wordpiece.py) shares this behaviour.

Corpus preparation passes `parse_specials=False`: a pretraining document that mentions
"[MASK]" (an article about BERT, say) is text, as in the original BERT's data creation, whose
tokenizer split it into '[', 'mask', ']'. Turning it into the real [MASK] id would put mask
tokens the loss never predicts, and [CLS]/[SEP]/[PAD] ids, into the middle of documents.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import pathlib
import tempfile
import time
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from bertjax.data import offsets
# The special-token strings live in specials.py (shared with wordpiece.py); tokenizer.PAD ...
# stay the names the rest of the code uses.
from bertjax.data.specials import CLS, MASK, PAD, SEP, UNK, encode_with_specials

SPECIAL_IDS = {PAD: 0, UNK: 1, CLS: 2, SEP: 3, MASK: 4}
MODEL_TYPES = ("unigram", "bpe")
# SentencePiece's whitespace marker: the first character of every word-initial piece.
WORD_START = "\u2581"


class Tokenizer(offsets.EncodesWithOffsets):
    """A loaded SentencePiece model. Cheap to pickle (the model is sent as bytes)."""

    _special_ids_by_token = SPECIAL_IDS  # what encode_with_offsets maps typed specials to

    def __init__(self, path: str | os.PathLike, model_bytes: bytes | None = None):
        self.path = pathlib.Path(path)
        if model_bytes is None:
            if not self.path.is_file():
                raise FileNotFoundError(
                    f"tokenizer model {str(self.path)!r} not found; expected a SentencePiece "
                    ".model file (train one with scripts/train_tokenizer.py)")
            model_bytes = self.path.read_bytes()
        self._model_bytes = model_bytes
        self._sp = _processor(model_bytes, self.path)
        self.vocab_size = self._sp.get_piece_size()
        self.pad_id = self._sp.pad_id()
        self.unk_id = self._sp.unk_id()
        self.cls_id = self._sp.piece_to_id(CLS)
        self.sep_id = self._sp.piece_to_id(SEP)
        self.mask_id = self._sp.piece_to_id(MASK)
        self.special_ids = {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}
        self.sha256 = hashlib.sha256(self._model_bytes).hexdigest()
        found = {PAD: self.pad_id, UNK: self.unk_id, CLS: self.cls_id, SEP: self.sep_id,
                 MASK: self.mask_id}
        if found != SPECIAL_IDS:
            raise ValueError(
                f"tokenizer {str(self.path)!r} has special ids {found}; expected {SPECIAL_IDS}. "
                "Train it with scripts/train_tokenizer.py, which fixes these ids.")

    def __getstate__(self):
        return {"path": str(self.path), "model": self._model_bytes}

    def __setstate__(self, state):
        # Re-derive everything from the bytes so a worker process needs no file access.
        self.__init__(state["path"], state["model"])

    def encode(self, text: str, parse_specials: bool = True) -> list[int]:
        """Ids of `text`; a literal [MASK], [CLS], ... becomes its special id unless
        parse_specials=False (see the module docstring)."""
        return self.encode_batch([text], parse_specials)[0]

    def encode_batch(self, texts: Sequence[str], parse_specials: bool = True) -> list[list[int]]:
        if parse_specials:
            return encode_with_specials(texts, self._encode_plain, SPECIAL_IDS)
        return self._encode_plain(texts)

    def _encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        # One thread: callers parallelise over processes, and per-call thread pools cost more
        # than they save on a document's worth of sentences.
        return self._sp.encode(list(texts), out_type=int, num_threads=1)

    def _encode_plain_with_offsets(self, texts: Sequence[str]):
        # SentencePiece tracks the alignment through its normaliser; given str input, its
        # offsets are code-point indices into that input.
        out = self._sp.encode(list(texts), out_type="offset_mapping", num_threads=1)
        return [(r["ids"], r["offsets"]) for r in out]

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def word_start_table(self) -> np.ndarray:
        """bool[vocab]: whether a piece begins a word (for whole-word masking).

        Special tokens count as word starts so that a word never spans one.
        """
        table = np.array([self._sp.id_to_piece(i).startswith(WORD_START)
                          for i in range(self.vocab_size)], dtype=bool)
        table[list(self.special_ids)] = True
        return table

    def identity(self) -> dict:
        """What a checkpoint or a prepared dataset records to tell tokenizers apart."""
        return {
            "kind": "sentencepiece",
            "path": self.path.name,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id, "unk_id": self.unk_id, "cls_id": self.cls_id,
            "sep_id": self.sep_id, "mask_id": self.mask_id,
        }

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def _processor(model_bytes: bytes, where) -> spm.SentencePieceProcessor:
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model_bytes)
    except Exception as e:  # sentencepiece raises bare RuntimeError/OSError with terse text
        raise ValueError(f"{str(where)!r} is not a valid SentencePiece model: {e}") from e
    return sp


def load(path: str | os.PathLike):
    """Loads a tokenizer; a relative path that does not exist is also tried from the repo root.

    A `vocab.txt` (or a directory holding one, e.g. an imported checkpoint) is a WordPiece
    vocabulary (bertjax.data.wordpiece); anything else a SentencePiece model."""
    from bertjax.data import wordpiece

    p = pathlib.Path(path)
    if not p.exists() and not p.is_absolute():
        repo_relative = pathlib.Path(__file__).resolve().parents[2] / p
        if repo_relative.exists():
            p = repo_relative
    if wordpiece.is_wordpiece_path(p):
        return wordpiece.load(p)
    return Tokenizer(p)


def check_matches_model(tok: Tokenizer, vocab_size: int) -> None:
    """Raises ValueError when the tokenizer cannot feed a model with `vocab_size` embeddings."""
    if tok.vocab_size != int(vocab_size):
        raise ValueError(
            f"tokenizer {tok.path.name} has vocab_size={tok.vocab_size} but model.vocab_size="
            f"{vocab_size}; set --config.model.vocab_size={tok.vocab_size} or use a tokenizer "
            f"trained with --vocab_size={vocab_size}")
    if not isinstance(tok, Tokenizer):
        return  # WordPiece vocabularies keep their own special ids ([CLS]=101, ...)
    found = {PAD: tok.pad_id, UNK: tok.unk_id, CLS: tok.cls_id, SEP: tok.sep_id,
             MASK: tok.mask_id}
    if found != SPECIAL_IDS:
        raise ValueError(f"tokenizer {tok.path.name} has special ids {found}; the model and the "
                         f"data pipeline expect {SPECIAL_IDS}")


def train(
    sentences: Iterable[str],
    model_prefix: str | os.PathLike,
    *,
    vocab_size: int = 30522,
    model_type: str = "unigram",
    lowercase: bool = False,
    character_coverage: float = 0.9995,
    input_sentence_size: int = 0,
    num_threads: int | None = None,
    seed_sentencepiece_size: int = 1_000_000,
) -> pathlib.Path:
    """Trains a SentencePiece model on `sentences` (one sentence per item); returns the .model path.

    Sentences are streamed to a temporary file first: SentencePiece then samples
    `input_sentence_size` of them uniformly (0 = use all), which needs the whole input.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r}: expected one of {MODEL_TYPES}")
    if vocab_size <= len(SPECIAL_IDS):
        raise ValueError(f"vocab_size={vocab_size}: expected more than {len(SPECIAL_IDS)} "
                         "(the special tokens alone take that many ids)")
    prefix = pathlib.Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text_file = pathlib.Path(tmp) / "sentences.txt"
        n = 0
        with open(text_file, "w", encoding="utf-8") as f:
            for s in sentences:
                s = s.strip()
                if s:
                    f.write(s.replace("\n", " ") + "\n")
                    n += 1
        if n == 0:
            raise ValueError("no sentences to train the tokenizer on (the corpus is empty)")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_file),
                model_prefix=str(prefix),
                model_type=model_type,
                vocab_size=vocab_size,
                character_coverage=character_coverage,
                normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
                pad_id=SPECIAL_IDS[PAD], pad_piece=PAD,
                unk_id=SPECIAL_IDS[UNK], unk_piece=UNK,
                bos_id=-1, eos_id=-1,
                control_symbols=[CLS, SEP, MASK],
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                seed_sentencepiece_size=seed_sentencepiece_size,
                num_threads=num_threads or os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as e:
            if "Vocabulary size too high" in str(e):
                raise ValueError(f"vocab_size={vocab_size} is too large for this corpus "
                                 f"({n} sentences); SentencePiece says: {e}") from e
            raise
    model = prefix.with_name(prefix.name + ".model")
    # The .vocab listing is derivable from the model; keeping one artifact avoids drift.
    prefix.with_name(prefix.name + ".vocab").unlink(missing_ok=True)
    Tokenizer(model)  # fail here, not at training time, if the special ids came out wrong
    return model


def write_card(model: pathlib.Path, *, corpus: str, settings: dict, command: str,
               stats: dict) -> pathlib.Path:
    """Writes `<name>.md` next to the model: what it was trained on and how to reproduce it."""
    tok = Tokenizer(model)
    card = model.with_suffix(".md")
    lines = [
        f"# {model.name}",
        "",
        f"SentencePiece {settings.get('model_type', 'unigram')} tokenizer for bertjax.",
        "",
        f"- corpus: `{corpus}`",
        f"- vocab_size: {tok.vocab_size}",
        f"- special ids: [PAD]={tok.pad_id} [UNK]={tok.unk_id} [CLS]={tok.cls_id} "
        f"[SEP]={tok.sep_id} [MASK]={tok.mask_id}",
        f"- sha256: `{tok.sha256}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- sentencepiece: {spm.__version__}",
        "",
        "## Settings",
        "",
        *[f"- {k}: {v}" for k, v in settings.items()],
        "",
        "## Training run",
        "",
        *[f"- {k}: {v}" for k, v in stats.items()],
        "",
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
    ]
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def train_from_corpus(
    corpus_spec: str,
    output: str | os.PathLike,
    *,
    corpus_format: str = "auto",
    vocab_size: int = 30522,
    model_type: str = "unigram",
    lowercase: bool = False,
    character_coverage: float = 0.9995,
    input_sentence_size: int = 0,
    max_corpus_bytes: int = 0,
    command: str = "",
) -> pathlib.Path:
    """Trains on a corpus spec (see corpus.open_corpus) and writes `<output>.model` + its card.

    `max_corpus_bytes` > 0 reads only about that much raw text (whole units, in order).
    """
    from bertjax.data import corpus as corpus_lib
    source = corpus_lib.open_corpus(corpus_spec, corpus_format)
    output = pathlib.Path(output)
    prefix = output.with_suffix("") if output.suffix == ".model" else output
    stats = corpus_lib.ReadStats()
    counts = {"documents": 0, "sentences": 0}

    def sentence_stream():
        for unit in source.units():
            if max_corpus_bytes and stats.bytes >= max_corpus_bytes:
                break
            for doc in source.read(unit, stats):
                counts["documents"] += 1
                for s in corpus_lib.sentences(doc, source.lines_are_sentences):
                    counts["sentences"] += 1
                    yield s

    settings = {"model_type": model_type, "vocab_size": vocab_size, "lowercase": lowercase,
                "normalization": "nmt_nfkc_cf" if lowercase else "nmt_nfkc",
                "character_coverage": character_coverage,
                "input_sentence_size": input_sentence_size or "all",
                "sentence_splitter": "none (bert layout)" if source.lines_are_sentences
                else "blingfire.text_to_sentences per paragraph"}
    t0 = time.perf_counter()
    model = train(sentence_stream(), prefix, vocab_size=vocab_size, model_type=model_type,
                  lowercase=lowercase, character_coverage=character_coverage,
                  input_sentence_size=input_sentence_size)
    run = {"corpus_bytes_read": stats.bytes, "documents": counts["documents"],
           "sentences": counts["sentences"],
           "invalid_utf8_lines": sum(stats.invalid_utf8.values()),
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    write_card(model, corpus=source.description, settings=settings, command=command, stats=run)
    return model
