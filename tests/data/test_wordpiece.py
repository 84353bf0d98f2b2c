"""WordPiece tokenizer: matches BERT's reference tokenization, and the tokenizer interface."""
import json
import pickle

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="WordPiece needs HF tokenizers (pip install "
                    "'bertjax[interop]')")
from bertjax.data import wordpiece  # noqa: E402

SPECIALS = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                               "[MASK]"]
WORDS = ("the a an of and to in is was hello world un ##able ##s ##ed ##ing , . ! ? ' \" - ( ) "
         "[ ] mask cafe naive resume 中 文 字 run ##ner ##n ##e ##r 3 ##. ##1 ##4 . 1 4 "
         "The Hello World Café École ##é e é").split()
TEXTS = [
    "Hello, world! The runner is unable.",
    "  Café   naïve résumé  ÉCOLE  ",          # accents: stripped only when lower-casing
    "中文字 and 中文",                            # CJK characters become words of their own
    "don't (un)able [MASK] [CLS]",             # punctuation splits (specials: parse_specials)
    "tab\there\nnewline\r\x00control\ufffd chars",
    "3.14 " + "a" * 101 + " unknownword",      # over 100 characters -> [UNK]
    "",
]


def _vocab(tmp_path, words=WORDS, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("\n".join(SPECIALS + list(dict.fromkeys(words))) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("lower", [True, False])
def test_matches_bert_reference_tokenization(tmp_path, lower):
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy",
                                 reason="the reference tokenizer comes with transformers")
    tok = wordpiece.load(_vocab(tmp_path), do_lower_case=lower)
    vocab = {t: i for i, t in enumerate(tok._tokens)}
    # transformers' Python port of Google's tokenization.py (BasicTokenizer + WordpieceTokenizer).
    basic = legacy.BasicTokenizer(do_lower_case=lower, never_split=None,
                                  tokenize_chinese_chars=True, strip_accents=None)
    pieces = legacy.WordpieceTokenizer(vocab=vocab, unk_token="[UNK]")
    # Google's tokenizer splits special tokens typed in text: parse_specials=False is that.
    for text in TEXTS:
        expected = [p for w in basic.tokenize(text) for p in pieces.tokenize(w)]
        assert tok.tokenize(text, parse_specials=False) == expected, text
        assert tok.encode(text, parse_specials=False) == [vocab[p] for p in expected], text
    assert tok.encode_batch(TEXTS, False) == [tok.encode(t, False) for t in TEXTS]
    # A few outcomes spelled out, so the comparison above is known to cover them.
    assert tok.tokenize("Café [MASK]", False) == (["cafe", "[", "mask", "]"] if lower
                                                  else ["Café", "[", "[UNK]", "]"])
    assert tok.tokenize("a" * 101) == ["[UNK]"] and tok.tokenize("中文") == ["中", "文"]


SPECIAL_TEXTS = ["Paris is the [MASK] of France.", "[CLS] hello world [SEP] the runner [SEP]",
                 "a[MASK]b", "Hello [mask] [ MASK ] [MASK", "[PAD][UNK][MASK]", "Café[SEP]naïve",
                 "  [MASK]  ", "[MASK]"]


@pytest.mark.parametrize("lower", [True, False])
def test_special_tokens_in_text_as_transformers_bert_tokenizer(tmp_path, lower):
    transformers = pytest.importorskip("transformers", reason="parity with BertTokenizer")
    path = _vocab(tmp_path, WORDS + ["Paris", "France", "paris", "france", "capital"])
    tok = wordpiece.load(path, do_lower_case=lower)
    hf = transformers.BertTokenizer(str(path), do_lower_case=lower)
    for text in SPECIAL_TEXTS + TEXTS:
        assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
        assert tok.tokenize(text) == hf.tokenize(text), text
    assert tok.encode_batch(SPECIAL_TEXTS) == [tok.encode(t) for t in SPECIAL_TEXTS]
    ids = tok.encode("Paris is the [MASK] of France.")
    words = ["paris", "is", "the", "[MASK]", "of", "france", "."] if lower else \
        ["Paris", "is", "the", "[MASK]", "of", "France", "."]
    assert ids == [tok._vocab[w] for w in words] and ids.count(tok.mask_id) == 1
    # Text without special tokens is unchanged; with parse_specials=False they are text.
    assert tok.encode("the runner is unable") == tok.encode("the runner is unable", False)
    assert tok.mask_id not in tok.encode("Paris is the [MASK] of France.", False)


def test_interface_and_identity(tmp_path):
    path = _vocab(tmp_path)
    tok = wordpiece.load(tmp_path)  # a directory holding vocab.txt
    assert tok.vocab_size == len(SPECIALS) + len(dict.fromkeys(WORDS))
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.special_ids == {0, 100, 101, 102, 103}
    ident = tok.identity()
    assert ident["kind"] == "wordpiece" and ident["path"] == "vocab.txt"
    assert ident["vocab_size"] == tok.vocab_size and len(ident["sha256"]) == 64
    json.dumps(ident)
    # The vocabulary has upper-case words, so it is inferred to be cased.
    assert tok.do_lower_case is False and tok.lower_case_inferred
    ids = tok.encode("Hello world unable")
    assert tok.decode([tok.cls_id, *ids, tok.sep_id, tok.pad_id]) == "Hello world unable"
    assert tok.decode([tok.unk_id]) == "[UNK]"
    starts = tok.word_start_table()
    assert starts.shape == (tok.vocab_size,) and starts[list(tok.special_ids)].all()
    assert not starts[tok.encode("unable")[1]] and starts[tok.encode("unable")[0]]
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.identity() == ident and clone.encode("Café World") == tok.encode("Café World")
    # Same bytes -> same identity; the save() copy reads back identically.
    (tmp_path / "copy").mkdir()
    tok.save(tmp_path / "copy")
    assert wordpiece.load(tmp_path / "copy").identity() == ident
    assert wordpiece.is_wordpiece_path(tmp_path) and wordpiece.is_wordpiece_path(path)
    assert not wordpiece.is_wordpiece_path(tmp_path / "x.model")


def test_lower_casing_sources(tmp_path):
    uncased = [w for w in WORDS if w == w.lower()]
    path = _vocab(tmp_path, uncased)
    assert wordpiece.load(path).do_lower_case is True          # inferred: no upper case
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tok = wordpiece.load(path)                                  # tokenizer_config.json wins
    assert tok.do_lower_case is False and not tok.lower_case_inferred
    assert tok.encode("Hello") == [tok.unk_id]
    assert wordpiece.load(path, do_lower_case=True).encode("Hello") == tok.encode("hello")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "yes"}))
    with pytest.raises(ValueError, match="do_lower_case='yes'"):
        wordpiece.load(path)


def test_bad_vocabularies(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        wordpiece.load(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[SEP\]', '\[MASK\]'\]"):
        wordpiece.load(bad)
    assert np.all(wordpiece.WordPieceTokenizer(_vocab(tmp_path)).word_start_table()[:5])


def test_tokenizer_load_dispatches_vocab_txt_to_wordpiece(tmp_path):
    from bertjax.data import tokenizer

    path = _vocab(tmp_path)
    for p in (path, tmp_path):  # the file, or a directory holding vocab.txt
        tok = tokenizer.load(p)
        assert isinstance(tok, wordpiece.WordPieceTokenizer)
        assert (tok.cls_id, tok.sep_id, tok.mask_id) == (101, 102, 103)
    tokenizer.check_matches_model(tok, tok.vocab_size)  # its own special ids are accepted
    with pytest.raises(ValueError, match=f"vocab_size={tok.vocab_size}"):
        tokenizer.check_matches_model(tok, tok.vocab_size + 1)
