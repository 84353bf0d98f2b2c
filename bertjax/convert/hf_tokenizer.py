"""SentencePiece (unigram) tokenizers as Hugging Face `tokenizer.json` files, for export.

The SentencePiece model proto is rebuilt as a `tokenizers` pipeline: the model's own
normalisation table (Precompiled), whitespace clean-up, Metaspace ('▁') pre-tokenization and the
unigram model with the same pieces and scores. [PAD]/[UNK]/[CLS]/[SEP]/[MASK] become special
tokens and a post-processor adds [CLS] ... [SEP] (... [SEP]) as BERT's inputs have them.

Equivalence is checked, not assumed: `convert` encodes sample texts with both and refuses on any
difference. A literal "[MASK]" in raw text becomes the special token in both (bertjax's
Tokenizer.encode splits on the special strings the same way; tests/data/test_tokenizer.py).
BPE SentencePiece models are not converted (their merges are not stored in the model).
"""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

from bertjax.convert.table import ConversionError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
_UNIGRAM = 1  # TrainerSpec.ModelType
SAMPLES = (
    "The quick brown fox jumps over the lazy dog.",
    "  Leading and trailing   spaces,\ttabs\nand newlines  ",
    "Café naïve résumé ÉCOLE Straße ﬁnance ＡＢＣ１２３ ½",
    "Numbers 3.14159 and 1,000,000; e-mail: someone@example.com (really?)",
    "中文字符 日本語のテキスト 한국어 العربية Ελληνικά русский",
    "emoji 🙂👍🏽 and symbols ©®™ § ¶ • … — –",
    "unseenwordzzzqqq xylophonically",
    "",
)


def convert(model_bytes: bytes, where: str, samples: Sequence[str] = SAMPLES):
    """SentencePiece unigram model bytes -> a tokenizers.Tokenizer with identical ids."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors)

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    if proto.trainer_spec.model_type != _UNIGRAM:
        raise ConversionError(
            f"{where}: only unigram SentencePiece models convert to a Hugging Face tokenizer "
            f"(this one has model_type={proto.trainer_spec.model_type}); use --skip_tokenizer")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    ids = {p: i for i, (p, _) in enumerate(pieces)}
    missing = [t for t in SPECIAL_TOKENS if t not in ids]
    if missing:
        raise ConversionError(f"{where}: lacks the special tokens {missing}")
    tok = Tokenizer(models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id,
                                   byte_fallback=proto.trainer_spec.byte_fallback))
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip(left=True, right=True)]
    tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spec.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme=scheme, split=proto.trainer_spec.split_by_whitespace)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in SPECIAL_TOKENS])
    cls, sep = ("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep])

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model_bytes)
    for text in samples:
        ours = sp.encode(text, out_type=int)
        theirs = tok.encode(text, add_special_tokens=False).ids
        if ours != theirs:
            raise ConversionError(
                f"{where}: the Hugging Face version of this tokenizer disagrees with "
                f"SentencePiece on {text!r}: {theirs} vs {ours}; use --skip_tokenizer")
    return tok


def save(model_path: pathlib.Path, directory: pathlib.Path, model_max_length: int) -> None:
    """Writes tokenizer.json + tokenizer_config.json (AutoTokenizer loads them)."""
    tok = convert(model_path.read_bytes(), str(model_path))
    tok.save(str(directory / TOKENIZER_FILE))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
              "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
              "sep_token": "[SEP]", "mask_token": "[MASK]",
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
