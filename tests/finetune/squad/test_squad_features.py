"""SQuAD features: run_squad.py's windows, max-context flags, targets and arrays, by hand."""
import pathlib

import numpy as np
import pytest
from squad_fixtures import WhitespaceTokenizer, v2_raw

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.finetune.squad import features as F
from bertjax.finetune.squad import reader

REPO = pathlib.Path(__file__).resolve().parents[3]
CONTEXT = " ".join(f"w{i}" for i in range(10))  # w0 .. w9, one token each


def _example(qid="q", question="q0 q1 q2 q3 q4", answer="w4 w5", impossible=False):
    answers = () if impossible else (reader.Answer(answer, CONTEXT.index(answer)),)
    return reader.Example(id=qid, title="t", question=question, context=CONTEXT,
                          answers=answers, is_impossible=impossible)


def test_check_window_config():
    F.check_window_config(max_seq_length=384, doc_stride=128, max_query_length=64)
    with pytest.raises(ValueError, match=r"doc_stride=317 must be less than max_seq_length - "
                                         r"max_query_length - 3 = 384 - 64 - 3 = 317"):
        F.check_window_config(max_seq_length=384, doc_stride=317, max_query_length=64)
    # The question alone (cut to max_query_length) would fill the window.
    with pytest.raises(ValueError, match=r"max_query_length=64 leaves no room for the context "
                                         r"in max_seq_length=64"):
        F.check_window_config(max_seq_length=64, doc_stride=1, max_query_length=64)
    for bad in (0, -1, 2.5, True, "128"):
        with pytest.raises(ValueError, match=rf"doc_stride={bad!r}: expected a positive int"):
            F.check_window_config(max_seq_length=384, doc_stride=bad, max_query_length=64)
    with pytest.raises(ValueError, match="doc_stride=8 must be less than"):  # before tokenising
        F.build_features([_example()], None, max_seq_length=16, doc_stride=8,
                         max_query_length=5)


def test_windows_and_max_context_by_hand():
    assert F.windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert F.windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert F.windows(3, 4, 2) == [(0, 3)]
    assert F.windows(0, 4, 2) == [(0, 0)]
    # token 2: window 0 has min(2, 1) = 1 context, window 1 min(0, 3) = 0 -> window 0, ...
    assert F.max_context(F.windows(10, 4, 2), 10).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    # a tie (token 3: min(1, 1) in windows 0 and 1, same length): the first window wins
    assert F.max_context([(2, 3), (2, 3)], 5).tolist()[2:] == [0, 0, 0]
    assert F.max_context([(0, 5), (2, 3)], 5)[3] == 0  # 1 + .05 beats 0 + .03


def test_features_by_hand():
    tok = WhitespaceTokenizer()
    examples = [_example(), _example("v2", question="q0", impossible=True)]
    f = F.build_features(examples, tok, max_seq_length=10, doc_stride=2, max_query_length=3)
    # Example 0: 3 question tokens -> 4 context tokens per window, windows at 0, 2, 4, 6.
    # Example 1: 1 question token -> 6 per window, windows at 0, 2, 4.
    assert f.example_index.tolist() == [0, 0, 0, 0, 1, 1, 1] and len(f) == 7
    q = [tok.vocab[w] for w in ("q0", "q1", "q2")]
    w = [tok.vocab[f"w{i}"] for i in range(10)]
    assert f.input_ids[0].tolist() == [2, *q, 3, *w[0:4], 3]
    assert f.input_ids[4].tolist() == [2, q[0], 3, *w[0:6], 3]
    assert f.segment_ids[0].tolist() == [0] * 5 + [1] * 5 and f.input_mask[0].tolist() == [1] * 10
    assert f.input_ids[6].tolist() == [2, q[0], 3, *w[4:10], 3]
    # Answer w4 w5: whole only in windows 1 (positions 5 + 4 - 2 = 7, 8) and 2 (5, 6).
    assert f.start_positions.tolist() == [0, 7, 5, 0, 0, 0, 0]
    assert f.end_positions.tolist() == [0, 8, 6, 0, 0, 0, 0]
    spans = [(3 * i, 3 * i + 2) for i in range(10)]
    assert f.token_offsets[1].tolist() == [[-1, -1]] * 5 + [list(s) for s in spans[2:6]] + [[-1,
                                                                                           -1]]
    assert f.token_is_max_context[:4, 5:9].tolist() == [
        [True, True, True, False], [False, True, True, False], [False, True, True, False],
        [False, True, True, True]]
    assert not f.token_is_max_context[:4, :5].any() and not f.token_is_max_context[:, 9].any()
    inputs = f.model_inputs()
    assert list(inputs) == list(F.MODEL_INPUTS)
    assert all(a.dtype == np.int32 and len(a) == 7 for a in inputs.values())


def test_padding_and_long_questions_are_cut():
    tok = WhitespaceTokenizer()
    long_q = " ".join(f"x{i}" for i in range(100))
    f = F.build_features([_example(question=long_q)], tok, max_seq_length=20, doc_stride=3,
                         max_query_length=4)
    assert len(f) == 1  # 20 - 4 - 3 = 13 >= 10 context tokens
    assert f.input_ids[0, :6].tolist() == [2, *[tok.vocab[f"x{i}"] for i in range(4)], 3]
    assert f.input_mask[0].tolist() == [1] * 17 + [0] * 3  # [CLS] 4 [SEP] 10 [SEP], padding
    assert f.input_ids[0, 17:].tolist() == [0] * 3 and f.segment_ids[0, 17:].tolist() == [0] * 3


def test_real_tokenizer_targets_cover_the_answer(tmp_path):
    tok = tokenizer_lib.load(REPO / "tokenizers" / "enwiki_30522_unigram.model")
    raw = v2_raw()
    raw["data"][0]["paragraphs"][0]["context"] += " A literal [SEP] token is text here."
    examples = reader.parse(raw, where="x", v2=True, training=True).examples
    f = F.build_features(examples, tok, max_seq_length=24, doc_stride=4, max_query_length=8)
    found = set()
    for r in range(len(f)):
        e = examples[f.example_index[r]]
        s, t = f.start_positions[r], f.end_positions[r]
        ctx = f.token_offsets[r, :, 0] >= 0
        assert (f.input_ids[r][ctx] != tok.sep_id).all()  # "[SEP]" in the text is not a [SEP]
        assert (f.input_ids[r] == tok.sep_id).sum() == 2
        if s:
            text = e.context[f.token_offsets[r, s, 0]:f.token_offsets[r, t, 1]]
            assert text == e.answers[0].text and ctx[s] and ctx[t]
            found.add(e.id)
        if e.is_impossible:
            assert s == t == 0
    assert found == {"q1", "q2", "q3"}
