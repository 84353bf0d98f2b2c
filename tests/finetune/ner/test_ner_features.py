"""Word -> sub-token alignment, windows for long sentences, and decoding back to word tags."""
import pathlib

import numpy as np
import pytest
from ner_fixtures import PieceTokenizer

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.finetune.ner import features, reader

REPO = pathlib.Path(__file__).resolve().parents[3]
IGN = features.IGNORE


def rows_of(f):
    return [f.tokens[a:b].tolist() for a, b in zip(f.offsets[:-1], f.offsets[1:])]


def test_label_on_first_piece_and_after_a_bare_word_start():
    tok = PieceTokenizer({"rejects": ["re", "jects"], ",": ["\u2581", ","],
                          "Blackburn": ["Black", "burn"]})
    f = features.build_features([["EU", "rejects", ",", "Blackburn"]], [[1, 0, 0, 2]], tok,
                                max_seq_length=16)
    pieces = [tok.id_to_piece(i) for i in f.tokens]
    assert pieces == ["[CLS]", "EU", "re", "jects", "\u2581", ",", "Black", "burn", "[SEP]"]
    assert f.labels.tolist() == [IGN, 1, 0, IGN, IGN, 0, 2, IGN, IGN]
    assert f.word_index.tolist() == [-1, 0, 1, 1, 2, 2, 3, 3, -1]
    assert f.predicts.tolist() == [False, True, True, False, False, True, True, False, False]
    assert f.weights.tolist() == [0, 1, 1, 0, 0, 1, 1, 0, 0]
    assert f.split_sentences == 0 and f.sentence.tolist() == [0] and f.num_words.tolist() == [4]
    assert tok.calls == [False]  # a word "[SEP]" is text


def test_word_without_pieces_becomes_unk_and_unlabelled_rows():
    tok = PieceTokenizer({"\u200b": []})
    f = features.build_features([["a", "\u200b"], ["b"]], None, tok, max_seq_length=8)
    assert rows_of(f) == [[2, tok.piece_id("a"), 1, 3], [2, tok.piece_id("b"), 3]]
    assert (f.labels == IGN).all() and f.predicts.sum() == 3


def test_long_sentence_windows_against_hand_worked_owners():
    # 10 one-piece words, windows of 4 pieces every 2: (0,4) (2,4) (4,4) (6,4). The window with
    # the most context, min(left, right) (+0.01 * length, first wins ties), per piece:
    # 0 1 2 -> w0, 3 4 -> w1, 5 6 -> w2, 7 8 9 -> w3.
    words = [[f"w{i}" for i in range(10)]]
    tags = [list(range(10))]
    f = features.build_features(words, tags, PieceTokenizer(), max_seq_length=6, stride=2)
    assert f.split_sentences == 1 and f.sentence.tolist() == [0, 0, 0, 0]
    assert [r[1:-1] for r in f.word_index.reshape(4, 6).tolist()] == [
        [0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert f.labels.reshape(4, 6).tolist() == [
        [IGN, 0, 1, 2, IGN, IGN], [IGN, IGN, 3, 4, IGN, IGN],
        [IGN, IGN, 5, 6, IGN, IGN], [IGN, IGN, 7, 8, 9, IGN]]
    assert f.predicts.sum() == 10  # every word exactly once


def test_window_over_a_split_word_predicts_each_word_once():
    tok = PieceTokenizer({"long": ["l", "o", "n", "g", "er"]})
    words = [["a", "long", "b", "c", "long", "d"]]
    f = features.build_features(words, [[1, 2, 3, 4, 5, 6]], tok, max_seq_length=6, stride=1)
    assert f.split_sentences == 1 and len(f) > 1
    got = np.zeros(6, int)
    np.add.at(got, f.word_index[f.predicts], 1)
    assert got.tolist() == [1] * 6
    assert sorted(f.labels[f.labels != IGN].tolist()) == [1, 2, 3, 4, 5, 6]
    assert max(f.lengths) <= 6


def one_hot_logits(f, gold_by_sentence, num_tags, rng, pad=3):
    """Random logits, except the gold tag far ahead at every predicting position."""
    logits = rng.normal(size=(len(f), int(f.lengths.max()) + pad, num_tags)).astype(np.float32)
    row = np.repeat(np.arange(len(f)), f.lengths)
    position = np.arange(len(f.tokens)) - f.offsets[row]
    at = np.flatnonzero(f.predicts)
    tag = [gold_by_sentence[f.sentence[row[i]]][f.word_index[i]] for i in at]
    logits[row[at], position[at], tag] += 100.0
    return logits


@pytest.mark.parametrize("max_seq_length,stride", [(64, None), (6, 1), (7, 3)])
def test_decode_round_trip(max_seq_length, stride):
    rng = np.random.default_rng(0)
    tok = PieceTokenizer({"x": ["x1", "x2", "x3"], ",": ["\u2581", ","]})
    words = [["a", "x", ",", "b"] * 3, ["c"], ["x", "x"]]
    gold = [rng.integers(0, 5, len(s)).tolist() for s in words]
    f = features.build_features(words, gold, tok, max_seq_length=max_seq_length, stride=stride)
    pred = features.decode(f, one_hot_logits(f, gold, 5, rng))
    assert [p.tolist() for p in pred] == gold
    assert features.word_logits(f, one_hot_logits(f, gold, 5, rng)).shape == (15, 5)


def test_decode_refuses_logits_of_other_rows():
    f = features.build_features([["a", "b"]], None, PieceTokenizer(), max_seq_length=8)
    with pytest.raises(ValueError, match=r"expected \[1 rows, >= 4 positions"):
        features.decode(f, np.zeros((1, 3, 2)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_seq_length=3), "max_seq_length=3: expected an integer >= 4"),
    (dict(max_seq_length=10, stride=8), r"stride=8: expected an integer in \[1, .* = 8\)"),
    (dict(max_seq_length=10, stride=0), "stride=0"),
])
def test_window_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        features.check_window_config(**kwargs)


def test_committed_sentencepiece_pieces_equal_sentence_encoding():
    tok = tokenizer_lib.load(REPO / "tokenizers" / "enwiki_30522_unigram.model")
    words = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    f = features.build_features([words], [[0] * len(words)], tok, max_seq_length=64)
    whole = tok.encode(" ".join(words), parse_specials=False)
    assert f.tokens[1:-1].tolist() == whole
    bare = features.bare_piece_ids(tok)
    assert [tok.id_to_piece(i) for i in bare] == ["\u2581"]
    # '.' is ['▁', '.']: its label sits on '.', not on the bare marker.
    at = np.flatnonzero(f.predicts)
    assert tok.id_to_piece(f.tokens[at[-1]]) == "." and tok.id_to_piece(f.tokens[at[-1] - 1]) \
        == "\u2581"
    # A literal marker is whitespace to SentencePiece: alone it is no piece ([UNK]); inside a
    # word it splits the pieces, which stay one word.
    g = features.build_features([["\u2581", "a\u2581b"]], [[1, 2]], tok, max_seq_length=16)
    assert [tok.id_to_piece(i) for i in g.tokens] == ["[CLS]", "[UNK]", "\u2581a", "\u2581b",
                                                      "[SEP]"]
    assert g.labels.tolist() == [-1, 1, 2, -1, -1] and g.word_index.tolist() == [-1, 0, 1, 1, -1]


def test_wordpiece_pieces_equal_sentence_encoding(train_wordpiece):
    text = ["EU rejects German call to boycott British lamb .", "Peter Blackburn S.AFRICA"] * 20
    tok = train_wordpiece(text, lower_case=True, vocab_size=200)
    words = [t.split() for t in text[:2]]
    f = features.build_features(words, None, tok, max_seq_length=128)
    assert features.bare_piece_ids(tok) == frozenset()
    assert rows_of(f)[1][1:-1] == tok.encode(text[1], parse_specials=False)
    # S.AFRICA is several pieces; its label position is its first.
    first = f.offsets[1] + 1 + np.flatnonzero(f.word_index[f.offsets[1] + 1:f.offsets[2]] == 2)[0]
    assert f.predicts[first]


@pytest.mark.shared_data
def test_shared_conll2003_oracle_and_split_count(shared_data):
    """All of eng.train through the features and back: gold logits give the gold tags, and
    the long sentences are windowed, never cut."""
    data = reader.load(shared_data / "conll2003")
    index = {t: i for i, t in enumerate(data.tags)}
    words = [list(s.words) for s in data.train.sentences]
    gold = [[index[t] for t in s.tags] for s in data.train.sentences]
    tok = tokenizer_lib.load(REPO / "tokenizers" / "enwiki_30522_unigram.model")
    f = features.build_features(words, gold, tok, max_seq_length=128)
    assert f.split_sentences == 1 and len(f) == len(words) + 1
    assert f.lengths.max() <= 128
    rng = np.random.default_rng(0)
    assert [p.tolist() for p in features.decode(f, one_hot_logits(f, gold, 9, rng))] == gold
    f64 = features.build_features(words, gold, tok, max_seq_length=64)
    assert f64.split_sentences == 100
