import functools
import hashlib
import pickle

import pytest

from bertjax.data import corpus, tokenizer


def test_committed_tokenizer_has_bert_special_ids(committed_tokenizer):
    tok = committed_tokenizer
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == {0, 1, 2, 3, 4}
    ident = tok.identity()
    assert ident["path"] == "enwiki_30522_unigram.model"
    assert ident["sha256"] == hashlib.sha256(tok.path.read_bytes()).hexdigest()
    assert ident["vocab_size"] == 30522 and ident["mask_id"] == 4
    assert tok.path.with_suffix(".md").is_file()  # the card


def test_committed_tokenizer_is_a_real_english_vocabulary(committed_tokenizer):
    tok = committed_tokenizer
    text = "The city is the capital of the country and its largest port."
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) <= 14  # common English words are single pieces
    assert not set(ids) & tok.special_ids


def test_pickles_without_the_file(committed_tokenizer, tmp_path):
    copy = tmp_path / "t.model"
    copy.write_bytes(committed_tokenizer.path.read_bytes())
    tok = tokenizer.load(copy)
    data = pickle.dumps(tok)
    copy.unlink()
    again = pickle.loads(data)
    assert again.encode("hello world") == committed_tokenizer.encode("hello world")
    assert again.identity() == tok.identity()


def test_relative_path_resolves_from_repo_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tokenizer.load("tokenizers/enwiki_30522_unigram.model").vocab_size == 30522


def test_word_start_table(committed_tokenizer):
    table = committed_tokenizer.word_start_table()
    ids = committed_tokenizer.encode("unbelievably fast")
    pieces = [committed_tokenizer.id_to_piece(i) for i in ids]
    assert [table[i] for i in ids] == [p.startswith("\u2581") for p in pieces]
    assert table[[0, 1, 2, 3, 4]].all()


def test_check_matches_model(committed_tokenizer):
    tokenizer.check_matches_model(committed_tokenizer, 30522)
    with pytest.raises(ValueError, match=r"vocab_size=30522 but model.vocab_size=1000"):
        tokenizer.check_matches_model(committed_tokenizer, 1000)


@functools.cache
def _sentences():
    c = corpus.open_corpus("default")
    return [s for d in c.documents() for s in corpus.sentences(d, c.lines_are_sentences)][:1000]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_train_tiny_tokenizer_with_fixed_special_ids(tmp_path, model_type):
    model = tokenizer.train(_sentences(), tmp_path / "tiny", vocab_size=300,
                            model_type=model_type)
    tok = tokenizer.load(model)
    assert tok.vocab_size == 300
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    text = "The statement is executed."
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < len(text) / 2
    assert not (tmp_path / "tiny.vocab").exists()


def test_lowercase_option(tmp_path):
    cased = tokenizer.load(tokenizer.train(_sentences(), tmp_path / "cased", vocab_size=300))
    uncased = tokenizer.load(tokenizer.train(_sentences(), tmp_path / "uncased", vocab_size=300,
                                             lowercase=True))
    assert uncased.encode("THE Object") == uncased.encode("the object")
    assert cased.encode("THE Object") != cased.encode("the object")


def test_train_from_corpus_writes_model_and_card(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("\n".join(_sentences()[:600]) + "\n\n" + "\n".join(_sentences()[600:]))
    model = tokenizer.train_from_corpus(str(text), tmp_path / "out.model", vocab_size=200,
                                        command="python scripts/train_tokenizer.py --x")
    card = model.with_suffix(".md").read_text()
    assert model.name == "out.model" and tokenizer.load(model).vocab_size == 200
    for needle in ("corpus:", "vocab_size: 200", "model_type: unigram", "date:", "documents: 2",
                   "sentences: 1000", "python scripts/train_tokenizer.py --x"):
        assert needle in card, needle


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        tokenizer.load(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a valid SentencePiece model"):
        tokenizer.load(bad)
    with pytest.raises(ValueError, match="model_type='wordpiece'"):
        tokenizer.train(["a b"], tmp_path / "x", model_type="wordpiece")
    with pytest.raises(ValueError, match="no sentences"):
        tokenizer.train([], tmp_path / "x", vocab_size=50)
    with pytest.raises(ValueError, match="vocab_size=5000 is too large for this corpus"):
        tokenizer.train(_sentences()[:50], tmp_path / "x", vocab_size=5000)


# --- Special tokens typed in text (module docstring of bertjax/data/tokenizer.py).

SPECIAL_TEXTS = ["Paris is the [MASK] of France.", "[CLS] a b [SEP] c d [SEP]", "the[MASK]of",
                 "  [MASK]  ", "a  [SEP]  b [PAD][UNK]", "x [mask] [ MASK ] [MASK", "[MASK][MASK]"]


def test_literal_mask_encodes_to_the_mask_id(committed_tokenizer):
    tok = committed_tokenizer
    ids = tok.encode("Paris is the [MASK] of France.")
    assert ids.count(tok.mask_id) == 1 and ids.index(tok.mask_id) == 3
    assert [tok.id_to_piece(i) for i in ids] == ["\u2581Paris", "\u2581is", "\u2581the", "[MASK]",
                                                 "\u2581of", "\u2581France", "."]
    assert ids == [*tok.encode("Paris is the"), tok.mask_id, *tok.encode("of France.")]
    assert tok.encode("[CLS] a b [SEP] c [SEP]") == [tok.cls_id, *tok.encode("a b"), tok.sep_id,
                                                       *tok.encode("c"), tok.sep_id]
    assert tok.encode("[PAD][UNK][MASK]") == [tok.pad_id, tok.unk_id, tok.mask_id]
    # Exact strings only: other spellings stay text.
    for text in ("x [mask] y", "[ MASK ]", "[MASK", "MASK]"):
        assert not set(tok.encode(text)) & tok.special_ids, text
    # parse_specials=False (corpus preparation): the literal is text, as SentencePiece has it.
    plain = tok.encode("Paris is the [MASK] of France.", parse_specials=False)
    assert tok.mask_id not in plain and tok.decode(plain) == "Paris is the [MASK] of France."
    assert tok.encode_batch(SPECIAL_TEXTS) == [tok.encode(t) for t in SPECIAL_TEXTS]


def test_text_without_special_tokens_encodes_as_sentencepiece_does(committed_tokenizer):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(committed_tokenizer.path))
    texts = [s for s in _sentences() if not any(t in s for t in tokenizer.SPECIAL_IDS)]
    assert sum("[" in s for s in texts) > 10  # brackets that are not special tokens are covered
    expected = sp.encode(texts, out_type=int)
    assert committed_tokenizer.encode_batch(texts) == expected
    assert committed_tokenizer.encode_batch(texts, parse_specials=False) == expected
    assert [committed_tokenizer.encode(t) for t in texts[:50]] == expected[:50]


def test_special_tokens_match_the_hugging_face_export(committed_tokenizer):
    """The tokenizer.json that export writes (transformers' view of this model) treats the
    literal special tokens the same way."""
    pytest.importorskip("tokenizers", reason="the export needs HF tokenizers")
    from bertjax.convert import hf_tokenizer
    hf = hf_tokenizer.convert(committed_tokenizer.path.read_bytes(), "committed")
    for text in SPECIAL_TEXTS + ["The city is the capital of the country."]:
        assert committed_tokenizer.encode(text) == hf.encode(text, add_special_tokens=False).ids


def test_corpus_preparation_keeps_literal_special_tokens_as_text(tmp_path, committed_tokenizer):
    from bertjax.data import prepare
    docs = [["BERT replaces a word with [MASK] and starts with [CLS].", "Then [SEP] ends it."],
            ["Another document.", "It has two sentences."]]
    (tmp_path / "c.txt").write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    prepare.prepare(str(tmp_path / "c.txt"), str(committed_tokenizer.path), tmp_path / "out",
                    eval_fraction=0.0, progress=False)
    source = prepare.load_builder(tmp_path / "out").as_data_source("train")
    stored = sorted(source[i]["tokens"].tolist() for i in range(len(source)))
    expected = sorted(sum(committed_tokenizer.encode_batch(d, parse_specials=False), [])
                      for d in docs)
    assert stored == expected
    assert not set(sum(stored, [])) & committed_tokenizer.special_ids
