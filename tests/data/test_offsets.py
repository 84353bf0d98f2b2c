"""Token character offsets into the original text (encode_with_offsets), both tokenizers."""
import pathlib

import pytest

from bertjax.data import offsets, tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
TEXTS = [
    "Héllo, wörld! The café's naïve résumé costs $3.50 (about €3).",
    "ÉCOLE Normale Supérieure — Ⅻ ﬁne ½ ㎏ ǅ İstanbul ẞ straße",
    "tabs\there  multiple   spaces\u00a0non-breaking\u2003em\u3000ideographic",
    "lines\n\nand\r\nbreaks\n",
    "   leading and trailing   ",
    "東京は日本の首都です。 北京 and 中文",
    "Привет, мир! Москва — столица России.",
    "emoji 😀👍🏽 mixed😀in words",
    "combining e\u0301 and x\u0300 marks, zero\u200bwidth, soft\u00adhyphen, ctrl\x00char",
    "Paris is the [MASK] of  France.[SEP]next [CLS]",
    "",
]
WORD_TEXT = "Héllo  WÖRLD\tfoo\u00a0bar\n\nbaz  "  # whitespace of every kind between words


@pytest.fixture(scope="module", params=["sp_cased", "sp_lower", "wp_cased", "wp_lower"])
def tok(request, train_wordpiece):
    kind = request.param
    if kind == "sp_cased":
        return tokenizer.load(REPO / "tokenizers" / "enwiki_30522_unigram.model")
    if kind == "sp_lower":
        return tokenizer.load(REPO / "tokenizers" / "enwiki_8192_unigram_lc.model")
    # Trained on the test texts (plus some English), so most words are real pieces, not [UNK].
    corpus = TEXTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 20
    return train_wordpiece(corpus, lower_case=kind == "wp_lower", vocab_size=400)


def _is_sentencepiece(tok):
    return isinstance(tok, tokenizer.Tokenizer)


def _word_groups(text, spans):
    """Index ranges of the whitespace-separated words: a token starts a new word when
    whitespace stands between it and the token before."""
    bounds = [0] + [i for i in range(1, len(spans))
                    if any(c.isspace() for c in text[spans[i - 1][1]:spans[i][0]])]
    return list(zip(bounds, bounds[1:] + [len(spans)])) if spans else []


@pytest.mark.parametrize("text", TEXTS)
def test_spans_point_into_the_original_text(tok, text):
    ids, spans = tok.encode_with_offsets(text)
    assert ids == tok.encode(text) and len(spans) == len(ids)
    for (s, e), (s2, e2) in zip(spans, spans[1:]):
        assert s <= s2 and e <= e2
    covered = set()
    for s, e in spans:
        assert 0 <= s <= e <= len(text)
        if s < e:  # no whitespace (or zero-width/control character) at either end
            assert not offsets._blank(text[s]) and not offsets._blank(text[e - 1]), (s, e)
        covered.update(range(s, e))
    # Every visible character belongs to a token (a stripped accent joins its letter).
    assert all(offsets._blank(ch) or i in covered for i, ch in enumerate(text))


@pytest.mark.parametrize("text", TEXTS)
def test_each_word_span_encodes_back_to_its_own_pieces(tok, text):
    """The span of every word holds exactly the text its pieces came from: encoding that
    substring alone gives the same pieces (and, for SentencePiece, the normaliser maps it to
    the pieces' text)."""
    ids, spans = tok.encode_with_offsets(text)
    for a, b in _word_groups(text, spans):
        word = text[spans[a][0]:spans[b - 1][1]]
        assert tok.encode(word) == ids[a:b], (word, ids[a:b])
        if _is_sentencepiece(tok) and ids[a] not in tok.special_ids:
            surface = tok._sp.encode(word, out_type="offset_mapping")["pieces"]
            assert "".join(surface).replace(tokenizer.WORD_START, "") == (
                tok._sp.normalize(word).replace(tokenizer.WORD_START, ""))


def test_words_come_back_whatever_whitespace_separates_them(tok):
    ids, spans = tok.encode_with_offsets(WORD_TEXT)
    words = [WORD_TEXT[spans[a][0]:spans[b - 1][1]] for a, b in _word_groups(WORD_TEXT, spans)]
    assert words == ["Héllo", "WÖRLD", "foo", "bar", "baz"]


def test_lowercasing_and_accent_stripping_keep_the_original_characters(tok):
    text = "ÉCOLE Supérieure"
    ids, spans = tok.encode_with_offsets(text)
    assert "".join(text[s:e] for s, e in spans) == "ÉCOLESupérieure"
    if not _is_sentencepiece(tok) and tok.do_lower_case:
        assert tok.tokenize("É") == ["e"]  # BERT's uncased normaliser strips accents
    # A combining accent (which the uncased normaliser drops) stays inside its word's span.
    text = "naive cafe\u0301"
    ids, spans = tok.encode_with_offsets(text)
    assert spans[-1][1] == len(text)


@pytest.mark.parametrize("kind", ["sp_cased", "sp_lower"])
def test_sentencepiece_spans_by_hand(kind):
    name = "enwiki_30522_unigram.model" if kind == "sp_cased" else "enwiki_8192_unigram_lc.model"
    tok = tokenizer.load(REPO / "tokenizers" / name)
    text = "  Tokyo\u00a0東京 😀 [MASK]!"
    ids, spans = tok.encode_with_offsets(text)
    assert spans[0][0] == 2  # leading spaces belong to no token
    pieces = {text[s:e] for s, e in spans}
    assert {"東京", "😀", "[MASK]"} <= pieces  # unknown characters keep their original text
    assert ids[[text[s:e] for s, e in spans].index("[MASK]")] == tok.mask_id
    ids, spans = tok.encode_with_offsets("x  y", parse_specials=False)
    assert [(s, e) for s, e in spans if s < e] == [(0, 1), (3, 4)]


def test_wordpiece_spans_by_hand(train_wordpiece):
    tok = train_wordpiece(TEXTS * 5, lower_case=True, vocab_size=300)
    text = "Héllo, 東京!"
    ids, spans = tok.encode_with_offsets(text)
    assert [text[s:e] for s, e in spans] == ["Héllo", ",", "東", "京", "!"]
    assert tok.tokenize(text) == ["hello", ",", "東", "京", "!"]


def test_batch_matches_single_and_specials_can_stay_text(tok):
    batch = tok.encode_batch_with_offsets(TEXTS)
    assert batch == [tok.encode_with_offsets(t) for t in TEXTS]
    text = "the [MASK] here"
    ids, spans = tok.encode_with_offsets(text, parse_specials=False)
    assert ids == tok.encode(text, parse_specials=False) and tok.mask_id not in ids
    assert "".join(text[s:e] for s, e in spans) == "the[MASK]here"


def test_tidy_spans_rules():
    # blank edges trimmed; an all-blank piece -> empty span at its end; uncovered marks join.
    text = " ab\u0301 \u200bc"
    assert offsets.tidy_spans(text, [(0, 3), (4, 5), (5, 7)]) == [(1, 4), (5, 5), (6, 7)]
    assert offsets.tidy_spans("\u0301xy", [(1, 2), (2, 3)]) == [(0, 2), (2, 3)]
    assert offsets.tidy_spans("", []) == []
