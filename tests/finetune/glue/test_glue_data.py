import numpy as np
import pytest

from bertjax.finetune.glue import data, tasks


def _bert_truncate_seq_pair(tokens_a, tokens_b, max_length):
    """BERT's run_classifier._truncate_seq_pair, verbatim in logic (the reference)."""
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_length:
            break
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def test_truncation_matches_bert_longest_first():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = list(range(rng.integers(0, 30)))
        b = list(range(100, 100 + rng.integers(0, 30)))
        budget = int(rng.integers(1, 40))
        ra, rb = list(a), list(b)
        _bert_truncate_seq_pair(ra, rb, budget)
        too_long = len(a) + len(b) > budget
        assert data.truncate_pair(a, b, budget) == too_long
        assert (a, b) == (ra, rb)
    a, b = [1, 2, 3, 4, 5], [6, 7]
    assert data.truncate_pair(a, b, 4) and (a, b) == ([1, 2], [6, 7])
    single = [1, 2, 3]
    assert data.truncate_pair(single, None, 2) and single == [1, 2]
    assert not data.truncate_pair(single, None, 2)


def _split(a, b=None, labels=None):
    return tasks.Split("mem", a, b, None if labels is None else np.asarray(labels, np.int32),
                       [str(i) for i in range(len(a))])


def test_encoding_is_cls_a_sep_b_sep_with_segments(glue_tokenizer):
    tok = glue_tokenizer
    split = _split(["the dog sat", "a cat"], ["on the mat", "ran quickly"], [1, 0])
    enc = data.encode_split(split, tok, max_seq_length=64)
    a, b = tok.encode("the dog sat"), tok.encode("on the mat")
    ids = enc.tokens[enc.offsets[0]:enc.offsets[1]].tolist()
    assert ids == [tok.cls_id] + a + [tok.sep_id] + b + [tok.sep_id]
    batch = data.make_batch(enc, np.array([0]), 4, 32)
    n = len(ids)
    assert batch["input_ids"][0, :n].tolist() == ids and not batch["input_ids"][0, n:].any()
    assert batch["segment_ids"][0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (
        32 - n)
    assert batch["input_mask"][0].sum() == n
    assert batch["weights"].tolist() == [1, 0, 0, 0] and batch["example"].tolist() == [0, -1,
                                                                                       -1, -1]
    assert batch["labels"][0] == 1
    single = data.encode_split(_split(["the dog sat"]), tok, 64)
    assert single.tokens.tolist() == [tok.cls_id] + a + [tok.sep_id]
    assert single.first_segment.tolist() == [len(a) + 2]


def test_long_pairs_are_truncated_to_max_seq_length(glue_tokenizer):
    long = " ".join(["the dog sat on the mat"] * 20)
    enc = data.encode_split(_split([long, "a cat"], [long, "ran"]), glue_tokenizer, 32)
    assert enc.lengths.tolist()[0] == 32 and enc.lengths[1] < 32
    assert enc.truncated == 1
    ids = enc.tokens[:32]
    assert (ids == glue_tokenizer.sep_id).sum() == 2 and ids[-1] == glue_tokenizer.sep_id


def test_bucketing_covers_every_example_once_and_pads_to_the_bucket():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 129, 300)
    tokens = np.concatenate([np.full(n, 7, np.int32) for n in lengths])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    enc = data.Encoded(tokens, offsets, np.full(300, 2, np.int32),
                       rng.integers(0, 2, 300).astype(np.int32), 0)
    buckets = data.bucket_lengths((64, 128, 256), 128)
    assert buckets == (64, 128)
    plan = data.batch_plan(enc, 32, buckets, np.random.default_rng(1))
    rows = np.concatenate([r for r, _ in plan])
    assert sorted(rows.tolist()) == list(range(300))
    assert len(plan) == data.steps_per_epoch(enc, 32, buckets)
    for r, length in plan:
        assert len(r) <= 32 and lengths[r].max() <= length
        assert length == 64 or lengths[r].min() > 64  # the smallest bucket that fits
    eval_plan = data.batch_plan(enc, 32, buckets)  # no rng: deterministic order
    assert [r.tolist() for r, _ in eval_plan] == [r.tolist() for r, _ in
                                                   data.batch_plan(enc, 32, buckets)]
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        data.assign_buckets(np.array([200]), (64, 128))
