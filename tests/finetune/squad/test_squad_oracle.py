"""Oracle: the gold answer positions pushed through the features and the decoding, as if the
model had predicted them, give the gold answer back (official metric), on real SQuAD dev data.

The logits are the training targets made one-hot: in every window, 10 at the target start and
end (the answer's tokens, or [CLS] where the window does not hold the whole answer) and 0
elsewhere. What cannot come back is an answer that the annotators cut inside a word ("8" of
"18"), or a token that reaches past the answer ("2010." for "2010" is harmless: punctuation
is normalised away), or an answer longer than max_answer_length tokens.
"""
import collections
import pathlib

import numpy as np
import pytest

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.finetune.squad import decode, features, metric, reader

REPO = pathlib.Path(__file__).resolve().parents[3]
V1 = "dev-v1.1-articles-00-09.json"
V2 = "dev-v2.0-sample.json"
MAX_ANSWER_LENGTH = 30


@pytest.fixture(scope="module")
def dev_v1(shared_data):
    return reader.read(shared_data / "squad" / V1, v2=False, training=False).examples


def _tokenizer(kind, examples, train_wordpiece):
    if kind.startswith("sentencepiece"):
        name = ("enwiki_8192_unigram_lc.model" if kind.endswith("lc")
                else "enwiki_30522_unigram.model")
        return tokenizer_lib.load(REPO / "tokenizers" / name)
    texts = list(dict.fromkeys(e.context for e in examples)) + [e.question for e in examples]
    return train_wordpiece(texts, lower_case=kind.endswith("uncased"), vocab_size=8000)


def _oracle(examples, tok, v2):
    f = features.build_features(examples, tok, max_seq_length=384, doc_stride=128,
                                max_query_length=64)
    rows = np.arange(len(f))
    start = np.zeros(f.input_ids.shape, np.float32)
    end = np.zeros(f.input_ids.shape, np.float32)
    start[rows, f.start_positions] = 10
    end[rows, f.end_positions] = 10
    return decode.decode(examples, f, start, end, n_best_size=20,
                         max_answer_length=MAX_ANSWER_LENGTH, v2=v2)


def _failure_kind(example, prediction, tok):
    c, a = example.context, example.answers[0]
    s, e = a.start, a.start + len(a.text)
    if (0 < s < len(c) and c[s - 1].isalnum() and c[s].isalnum()) or (
            0 < e < len(c) and c[e - 1].isalnum() and c[e].isalnum()):
        return "the answer cuts a word"
    if a.text in prediction:
        return "a token reaches past the answer"
    _, spans = tok.encode_with_offsets(c, parse_specials=False)
    first, last = features.answer_tokens(np.asarray(spans).reshape(-1, 2), s, e)
    if last - first + 1 > MAX_ANSWER_LENGTH:
        return "answer longer than max_answer_length tokens"
    return "other"


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece_lc", "wordpiece_uncased",
                                  "wordpiece_cased"])
def test_oracle_gives_back_the_gold_answers_v1(dev_v1, kind, train_wordpiece):
    tok = _tokenizer(kind, dev_v1, train_wordpiece)
    out = _oracle(dev_v1, tok, v2=False)
    scores = metric.evaluate_v1(dev_v1, out.predictions)
    # Stricter than the official score: the pushed-through (first) reference itself.
    first = [metric.exact_match(out.predictions[e.id], e.answers[0].text) for e in dev_v1]
    failures = collections.Counter(_failure_kind(e, out.predictions[e.id], tok)
                                   for e, ok in zip(dev_v1, first) if not ok)
    print(f"\n{kind}: {len(dev_v1)} questions, first-reference EM {100 * np.mean(first):.2f}%, "
          f"official EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f}; failures "
          f"{dict(failures)}")
    assert len(dev_v1) == 3036
    assert np.mean(first) >= 0.99 and scores["exact_match"] >= 99
    assert failures["other"] == 0


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece_lc", "wordpiece_uncased"])
def test_oracle_v2_unanswerable_questions_come_back_empty(shared_data, kind, train_wordpiece):
    examples = reader.read(shared_data / "squad" / V2, v2=True, training=False).examples
    tok = _tokenizer(kind, examples, train_wordpiece)
    out = _oracle(examples, tok, v2=True)
    scores = metric.evaluate_v2(examples, out.predictions, out.null_odds)
    print(f"\n{kind} v2: {scores}")
    assert all(out.predictions[e.id] == "" for e in examples if e.is_impossible)
    assert all(out.null_odds[e.id] > 0 for e in examples if e.is_impossible)
    assert scores["NoAns_exact"] == 100 and scores["HasAns_exact"] >= 99
