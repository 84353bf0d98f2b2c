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
    # A literal "[MASK]" in text is text, not the mask token.
    assert tok.mask_id not in tok.encode("a [MASK] b") and tok.cls_id not in tok.encode("[CLS]")


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
