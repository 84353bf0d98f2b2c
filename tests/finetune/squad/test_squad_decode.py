"""SQuAD decoding: hand-worked cases, and the vectorised search == a plain loop over run_squad's
rules on random logits."""
import json
import pathlib

import numpy as np
import pytest
from squad_fixtures import WhitespaceTokenizer

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.finetune.squad import decode as D
from bertjax.finetune.squad import features as F
from bertjax.finetune.squad import reader

REPO = pathlib.Path(__file__).resolve().parents[3]
CONTEXT = " ".join(f"w{i}" for i in range(10))


def _example(qid="q", answer="w4 w5", impossible=False, context=CONTEXT, question="q0 q1 q2"):
    answers = () if impossible else (reader.Answer(answer, context.index(answer)),)
    return reader.Example(id=qid, title="t", question=question, context=context,
                          answers=answers, is_impossible=impossible)


def _features(examples, max_seq_length):
    return F.build_features(examples, WhitespaceTokenizer(), max_seq_length=max_seq_length,
                            doc_stride=2, max_query_length=3)


def test_best_pair_constraints_and_nbest_by_hand():
    # One window: positions 5..14 hold w0..w9 ([CLS] q0 q1 q2 [SEP] first).
    f = _features([_example()], 16)
    s, e = np.zeros((1, 16), np.float32), np.zeros((1, 16), np.float32)
    s[0, 1] = 9      # a question token: never a start
    s[0, 9] = 5      # w4
    s[0, 7] = 2.5    # w2
    e[0, 8] = 6      # w3: before w4 (end < start), fine after w2
    e[0, 10] = 4     # w5
    out = D.decode([_example()], f, s, e, n_best_size=3)
    assert out.predictions == {"q": "w4 w5"} and out.null_odds == {}
    nbest = out.nbest["q"]
    assert [(x["text"], x["start_logit"], x["end_logit"]) for x in nbest] == [
        ("w4 w5", 5, 4), ("w2 w3", 2.5, 6), ("w2 w3 w4 w5", 2.5, 4)]
    p = np.exp([9, 8.5, 6.5]) / np.exp([9, 8.5, 6.5]).sum()
    assert [x["probability"] for x in nbest] == pytest.approx(p)
    short = D.decode([_example()], f, s, e, n_best_size=3, max_answer_length=2)
    assert [x["text"] for x in short.nbest["q"]] == ["w4 w5", "w2 w3"]


def _two_window_logits(f):
    """4 windows (positions 5..8 = tokens start..start+3, windows at 0, 2, 4, 6). Window 0
    peaks at w3 (position 8), but w3 has its most context in window 1 (position 6)."""
    s, e = np.zeros((4, 10), np.float32), np.zeros((4, 10), np.float32)
    s[0, 8], e[0, 8] = 10, 10
    s[1, 6], e[1, 7] = 1, 1
    return s, e


def test_start_only_counts_in_its_max_context_window():
    f = _features([_example()], 10)
    assert len(f) == 4 and not f.token_is_max_context[0, 8] and f.token_is_max_context[1, 6]
    s, e = _two_window_logits(f)
    out = D.decode([_example()], f, s, e, n_best_size=1)
    assert out.predictions == {"q": "w3 w4"}


def test_v2_null_score_is_the_min_over_windows():
    example = _example()
    f = _features([example], 10)
    s, e = _two_window_logits(f)
    s[:, 0], e[:, 0] = [3, 1, 4, 5], [3, 0.5, 0, 0]  # null scores 6, 1.5, 4, 5 -> 1.5
    s[1, 6], e[1, 7] = 2, 2  # "w3 w4" scores 4, above window 1's [CLS]
    out = D.decode([example], f, s, e, n_best_size=1, v2=True)
    assert out.null_odds == {"q": pytest.approx(1.5 - 4)}
    assert out.predictions == {"q": "w3 w4"}  # -2.5 is not above the threshold 0
    assert [(x["text"], x["start_logit"], x["end_logit"]) for x in out.nbest["q"]] == [
        ("w3 w4", 2, 2), ("", 1, 0.5)]  # the null joins the n-best list
    out = D.decode([example], f, s, e, n_best_size=1, v2=True, null_score_diff_threshold=-3)
    assert out.predictions == {"q": ""}
    # No valid span at all: empty answer, infinite odds.
    out = D.decode([example], f, s, -np.ones_like(e) * np.arange(10), n_best_size=1, v2=True)
    assert out.predictions == {"q": ""} and out.null_odds == {"q": float("inf")}


def test_v2_null_ranks_after_pairs_of_equal_score():
    f = _features([_example()], 16)
    s, e = np.zeros((1, 16), np.float32), np.zeros((1, 16), np.float32)
    s[0, 0], e[0, 0] = 1, 1  # null score 2
    s[0, 9], e[0, 10] = 1.5, 0.5  # "w4 w5" scores 2 too
    out = D.decode([_example()], f, s, e, n_best_size=2, v2=True)
    assert [x["text"] for x in out.nbest["q"]] == ["w4 w5", ""]
    assert out.null_odds == {"q": 0.0} and out.predictions == {"q": "w4 w5"}  # 0 is not > 0


def test_answer_is_the_exact_substring_of_the_original_context():
    tok = tokenizer_lib.load(REPO / "tokenizers" / "enwiki_8192_unigram_lc.model")
    context = "The  Tokyo\u00a0Tower\tis in 東京, (Japan).\n\nIt is  ÉNORME."
    examples = [_example("a", "Tokyo\u00a0Tower\tis", context=context, question="Where?"),
                _example("b", "ÉNORME", context=context, question="How big?")]
    f = F.build_features(examples, tok, max_seq_length=32, doc_stride=4, max_query_length=8)
    n = np.arange(len(f))
    s, e = np.zeros(f.input_ids.shape, np.float32), np.zeros(f.input_ids.shape, np.float32)
    s[n, f.start_positions], e[n, f.end_positions] = 10, 10
    out = D.decode(examples, f, s, e)
    assert out.predictions == {"a": "Tokyo\u00a0Tower\tis", "b": "ÉNORME"}


def _reference_decode(examples, f, s, e, n_best, max_len, v2):
    """run_squad.py's write_predictions written out with plain loops (the slow reference)."""
    preds, odds, nbests = {}, {}, {}
    for i, ex in enumerate(examples):
        prelim, null = [], None
        for w in np.flatnonzero(f.example_index == i):
            if v2 and (null is None or s[w, 0] + e[w, 0] < null[0] + null[1]):
                null = (float(s[w, 0]), float(e[w, 0]))
            top_s = sorted(range(s.shape[1]), key=lambda k: -s[w, k])[:n_best]
            top_e = sorted(range(s.shape[1]), key=lambda k: -e[w, k])[:n_best]
            for a in top_s:
                for b in top_e:
                    ok = (f.token_offsets[w, a, 0] >= 0 and f.token_offsets[w, b, 0] >= 0
                          and f.token_is_max_context[w, a] and b >= a and b - a + 1 <= max_len)
                    text = ex.context[f.token_offsets[w, a, 0]:f.token_offsets[w, b, 1]]
                    if ok and text:
                        prelim.append((text, float(s[w, a]), float(e[w, b])))
        if v2:
            prelim.append(("", *null))
        prelim.sort(key=lambda x: -(x[1] + x[2]))
        nbest, seen = [], set()
        for text, a, b in prelim:
            if len(nbest) >= n_best:
                break
            if text not in seen:
                seen.add(text)
                nbest.append((text, a, b))
        if v2 and "" not in seen:
            nbest.append(("", *null))
        nbests[ex.id] = nbest
        best = next(x for x in nbest if x[0])
        preds[ex.id] = best[0]
        if v2:
            odds[ex.id] = null[0] + null[1] - best[1] - best[2]
            preds[ex.id] = "" if odds[ex.id] > 0 else best[0]
    return preds, odds, nbests


@pytest.mark.parametrize("v2", [False, True])
def test_vectorised_decoding_equals_the_plain_loop(v2):
    rng = np.random.default_rng(0)
    context = " ".join(f"w{i % 7}" for i in range(40))  # repeated words: repeated answer texts
    examples = [_example(f"q{i}", "w3", context=context, question="q " * (i % 4 + 1))
                for i in range(6)]
    f = F.build_features(examples, WhitespaceTokenizer(), max_seq_length=20, doc_stride=4,
                         max_query_length=3)
    assert len(f) > 3 * len(examples)  # several windows each
    s = rng.normal(size=f.input_ids.shape).astype(np.float32)
    e = rng.normal(size=f.input_ids.shape).astype(np.float32)
    s[:, :3] += 2  # question/[CLS] tokens among the top logits, as with a real model
    out = D.decode(examples, f, s, e, n_best_size=5, max_answer_length=4, v2=v2)
    preds, odds, nbests = _reference_decode(examples, f, s, e, 5, 4, v2)
    assert out.predictions == preds
    assert out.null_odds == pytest.approx(odds)
    for qid, ref in nbests.items():
        assert [(x["text"], x["start_logit"], x["end_logit"]) for x in out.nbest[qid]] == ref
        assert sum(x["probability"] for x in out.nbest[qid]) == pytest.approx(1)


def test_logits_must_match_the_features():
    f = _features([_example()], 16)
    with pytest.raises(ValueError, match=r"logits of shape \(2, 16\).*expected \(1, 16\)"):
        D.decode([_example()], f, np.zeros((2, 16)), np.zeros((2, 16)))
    with pytest.raises(ValueError, match="windows of `examples`, in build_features order"):
        D.decode([], f, np.zeros((1, 16)), np.zeros((1, 16)))


def test_writers(tmp_path):
    decoded = D.Decoded(predictions={"a": "Denver Broncos", "b": ""},
                        nbest={"a": [{"text": "Denver Broncos", "probability": 1.0,
                                      "start_logit": 1.0, "end_logit": 2.0}], "b": []},
                        null_odds={"a": -3.5, "b": 2.0})
    written = D.write_predictions(tmp_path / "out", decoded, v2=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "nbest_predictions.json", "predictions.json"]
    assert json.loads(written["predictions"].read_text("utf-8")) == decoded.predictions
    assert json.loads(written["nbest"].read_text("utf-8")) == decoded.nbest
    written = D.write_predictions(tmp_path / "v2", decoded, v2=True)
    assert json.loads((tmp_path / "v2" / "null_odds.json").read_text("utf-8")) == {
        "a": -3.5, "b": 2.0}
