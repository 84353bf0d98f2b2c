"""WordPiece tokenization (BERT's vocab.txt) behind the same interface as the SentencePiece one.

Used for imported Hugging Face / Google checkpoints, so that fine-tuning them tokenizes as the
original did. The pipeline is Hugging Face `tokenizers`' BERT one, which reimplements Google's
tokenization.py: clean text (drop control characters, normalise whitespace), space out CJK
characters, optionally lower-case and strip accents, split on whitespace and punctuation, then
greedy longest-match WordPiece with '##' continuations (words over 100 characters -> [UNK]).

As in transformers' BertTokenizer (and unlike Google's FullTokenizer), the special tokens
[PAD] [UNK] [CLS] [SEP] [MASK] typed literally in text (exact case, also when lower-casing) encode
to their ids: "Paris is the [MASK] of France." has one [MASK] id. Corpus preparation turns this
off (`parse_specials=False`), so a document mentioning "[MASK]" is the pieces '[', 'mask', ']' as
in BERT's own data creation. tokenizer.py's docstring has the reasons; the SentencePiece
tokenizer behaves the same way.

Ids are whatever vocab.txt says: for Google's vocabularies [PAD]=0, [UNK]=100, [CLS]=101,
[SEP]=102, [MASK]=103. A checkpoint records the tokenizer identity, so that is safe.

Paths: a vocab.txt file, or a directory holding one. Lower-casing comes from the argument, else a
`tokenizer_config.json` beside vocab.txt ({"do_lower_case": ...}, as Hugging Face writes it), else
is inferred from the vocabulary: an uncased vocabulary has no upper-case letters outside its
bracketed special tokens.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from bertjax.data import offsets
from bertjax.data import specials

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION = "##"
MAX_CHARS_PER_WORD = 100  # Google's WordpieceTokenizer: longer words become [UNK]


def vocab_path(path: str | os.PathLike) -> pathlib.Path:
    """A vocab.txt file or a directory containing one -> the vocab.txt path."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / VOCAB_FILE
    if not p.is_file():
        raise FileNotFoundError(f"WordPiece vocabulary {str(p)!r} not found; expected a "
                                f"{VOCAB_FILE} file or a directory holding one")
    return p


def is_wordpiece_path(path: str | os.PathLike) -> bool:
    """Whether `tokenizer.load` should hand this path to WordPiece (vs a SentencePiece .model)."""
    p = pathlib.Path(path)
    return (p.is_dir() and (p / VOCAB_FILE).is_file()) or (p.is_file() and p.suffix == ".txt")


def parse_vocab(data: bytes, where: str = VOCAB_FILE) -> list[str]:
    """One token per line, line i = id i (Google's load_vocab: each line is stripped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not UTF-8 text: {e}") from e
    tokens = [line.strip() for line in text.splitlines()]
    if not tokens:
        raise ValueError(f"{where} is empty; expected one WordPiece token per line")
    return tokens


def infer_lower_case(tokens: Sequence[str]) -> bool:
    """Uncased vocabularies hold no upper-case letter outside bracketed specials like [CLS]."""
    return not any(any(ch.isupper() for ch in t) for t in tokens
                   if not (t.startswith("[") and t.endswith("]")))


class WordPieceTokenizer(offsets.EncodesWithOffsets):
    """A BERT WordPiece vocabulary. Cheap to pickle (the vocabulary is sent as bytes)."""

    def __init__(self, path: str | os.PathLike, do_lower_case: bool | None = None,
                 vocab_bytes: bytes | None = None):
        if vocab_bytes is None:
            path = vocab_path(path)
            vocab_bytes = path.read_bytes()
            if do_lower_case is None:
                do_lower_case = _configured_lower_case(path.parent / CONFIG_FILE)
        self.path = pathlib.Path(path)
        self._vocab_bytes = vocab_bytes
        self._tokens = parse_vocab(vocab_bytes, str(self.path))
        self.lower_case_inferred = do_lower_case is None
        self.do_lower_case = (infer_lower_case(self._tokens) if do_lower_case is None
                              else bool(do_lower_case))
        # Google's load_vocab: with a repeated token, the later line wins.
        self._vocab = {t: i for i, t in enumerate(self._tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self._vocab]
        if missing:
            raise ValueError(f"{self.path} lacks the special tokens {missing}; a BERT vocabulary "
                             f"holds all of {list(SPECIAL_TOKENS)}")
        self.vocab_size = len(self._tokens)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self._vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}
        self._special_ids_by_token = {t: self._vocab[t] for t in SPECIAL_TOKENS}
        self._control_ids = self.special_ids - {self.unk_id}
        self.sha256 = hashlib.sha256(vocab_bytes).hexdigest()
        self._tok = _build(self._vocab, self.do_lower_case)

    def __getstate__(self):
        return {"path": str(self.path), "vocab": self._vocab_bytes, "lower": self.do_lower_case}

    def __setstate__(self, state):
        self.__init__(state["path"], state["lower"], state["vocab"])

    def encode(self, text: str, parse_specials: bool = True) -> list[int]:
        """Ids of `text`; a literal [MASK], [CLS], ... becomes its special id unless
        parse_specials=False."""
        return self.encode_batch([text], parse_specials)[0]

    def encode_batch(self, texts: Sequence[str], parse_specials: bool = True) -> list[list[int]]:
        if parse_specials:
            return specials.encode_with_specials(texts, self._encode_plain,
                                                      self._special_ids_by_token)
        return self._encode_plain(texts)

    def _encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _encode_plain_with_offsets(self, texts: Sequence[str]):
        # `tokenizers` aligns through lower-casing and accent stripping: offsets index `texts`.
        return [(e.ids, e.offsets)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def tokenize(self, text: str, parse_specials: bool = True) -> list[str]:
        return [self._tokens[i] for i in self.encode(text, parse_specials)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; [PAD], [CLS], [SEP] and [MASK] are dropped (as SentencePiece drops
        control symbols), [UNK] stays visible."""
        ids = [int(i) for i in ids if int(i) not in self._control_ids]
        return self._tok.decode(ids, skip_special_tokens=False)

    def id_to_piece(self, i: int) -> str:
        return self._tokens[int(i)]

    def word_start_table(self) -> np.ndarray:
        """bool[vocab]: whether a piece begins a word (not a '##' continuation), for whole-word
        masking. Special tokens count as word starts so that a word never spans one."""
        table = np.array([not t.startswith(CONTINUATION) for t in self._tokens], dtype=bool)
        table[list(self.special_ids)] = True
        return table

    def identity(self) -> dict:
        """What a checkpoint or a prepared dataset records to tell tokenizers apart."""
        return {
            "kind": "wordpiece",
            "path": self.path.name,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "do_lower_case": self.do_lower_case,
            "pad_id": self.pad_id, "unk_id": self.unk_id, "cls_id": self.cls_id,
            "sep_id": self.sep_id, "mask_id": self.mask_id,
        }

    def hf_tokenizer_config(self, model_max_length: int | None = None) -> dict:
        """tokenizer_config.json for a Hugging Face directory (BertTokenizer reads it)."""
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "tokenize_chinese_chars": True, "strip_accents": None,
                  "unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS,
                  "mask_token": MASK}
        if model_max_length:
            config["model_max_length"] = int(model_max_length)
        return config

    def save(self, directory: str | os.PathLike, model_max_length: int | None = None) -> None:
        """Writes vocab.txt (the exact bytes, so the identity's sha256 holds) and its config."""
        directory = pathlib.Path(directory)
        (directory / VOCAB_FILE).write_bytes(self._vocab_bytes)
        (directory / CONFIG_FILE).write_text(
            json.dumps(self.hf_tokenizer_config(model_max_length), indent=2) + "\n",
            encoding="utf-8")

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, "
                f"do_lower_case={self.do_lower_case})")


def _configured_lower_case(config_file: pathlib.Path) -> bool | None:
    if not config_file.is_file():
        return None
    try:
        value = json.loads(config_file.read_text(encoding="utf-8")).get("do_lower_case")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{config_file} is not a JSON object: {e}") from e
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{config_file}: do_lower_case={value!r}, expected true or false")
    return value


def _build(vocab: dict[str, int], lower_case: bool):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONTINUATION,
                                     max_input_chars_per_word=MAX_CHARS_PER_WORD))
    # strip_accents=None follows lowercase, as in BERT (uncased models also strip accents).
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION)
    return tok


def load(path: str | os.PathLike, do_lower_case: bool | None = None) -> WordPieceTokenizer:
    return WordPieceTokenizer(path, do_lower_case)
