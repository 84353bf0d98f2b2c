"""Sequence packing in the Grain pipeline, on synthetic documents whose token ids give their
provenance: every packed sequence is a faithful pair/piece, nothing is lost or duplicated,
shapes are static, and determinism/resume/masking statistics hold as without packing."""
import json
import random

import numpy as np
import pytest

from bertjax.data import packing, pretraining

CLS, SEP, PAD = 2, 3, 0


def _take(it, n):
    return [next(it) for _ in range(n)]


def _unmask(batch):
    ids = batch["input_ids"].copy()
    w = batch["masked_weights"] > 0
    rows = np.broadcast_to(np.arange(len(ids))[:, None], w.shape)
    ids[rows[w], batch["masked_positions"][w]] = batch["masked_ids"][w]
    return ids


def _sequences(batch):
    """(row, slot, ids, segment ids) of every packed sequence, after checking the row layout."""
    ids = _unmask(batch)
    out = []
    for r in range(len(ids)):
        seq_ids, mask = batch["sequence_ids"][r], batch["input_mask"][r]
        n = int(mask.sum())
        # Sequences fill the row from the left, one after another, then padding.
        assert (mask[:n] == 1).all() and (mask[n:] == 0).all() and (seq_ids[n:] == 0).all()
        assert (ids[r][n:] == PAD).all() and (np.diff(seq_ids[:n]) >= 0).all()
        for s in range(1, int(seq_ids.max()) + 1):
            idx = np.flatnonzero(seq_ids == s)
            assert len(idx) and (np.diff(idx) == 1).all()
            assert (batch["position_ids"][r][idx] == np.arange(len(idx))).all()
            out.append((r, s - 1, ids[r][idx], batch["segment_ids"][r][idx]))
    return out


def test_packed_nsp_pairs_keep_their_cls_segments_and_labels(synthetic, data_config):
    prepared, doc_of = synthetic
    # The balanced single-sentence mode, so that NotNext is 50% whatever the documents; BERT's
    # default ('not_next') makes every one-sentence chunk NotNext (tests/data/test_pretraining.py).
    cfg = data_config(max_seq_len=64, max_predictions_per_seq=10, packing="sequences",
                      max_sequences_per_row=4, short_seq_prob=0.3, nsp_single_sentence="split")
    it = pretraining.make_iterator(cfg, prepared, global_batch_size=128, seed=0)
    labels, several = [], 0
    for batch in _take(it, 5):
        assert batch["input_ids"].shape == (128, 64)
        for key in ("cls_positions", "nsp_label", "nsp_weights"):
            assert batch[key].shape == (128, 4)
        assert batch["nsp_weights"].dtype == np.float32
        counts = batch["sequence_ids"].max(axis=1)
        assert (batch["nsp_weights"].sum(axis=1) == counts).all()
        several += (counts > 1).sum()
        for r, slot, ids, seg in _sequences(batch):
            assert batch["cls_positions"][r, slot] == np.flatnonzero(
                batch["sequence_ids"][r] == slot + 1)[0]
            seps = np.flatnonzero(ids == SEP)
            assert ids[0] == CLS and len(seps) == 2 and seps[1] == len(ids) - 1
            assert (seg[:seps[0] + 1] == 0).all() and (seg[seps[0] + 1:] == 1).all()
            a, b = ids[1:seps[0]], ids[seps[0] + 1:-1]
            for part in (a, b):
                assert len(part) and (np.diff(part) == 1).all()
                assert doc_of[int(part[0])] == doc_of[int(part[-1])]
            label = int(batch["nsp_label"][r, slot])
            assert (doc_of[int(a[0])] == doc_of[int(b[0])]) == (label == 0)
            labels.append(label)
    assert several > 100
    assert abs(np.mean(labels) - 0.5) < 0.03


@pytest.mark.parametrize("packing", ["sequences", "full_sentences"])
def test_mlm_only_packing_keeps_every_token_once(packing, synthetic_documents):
    docs_text, _, _ = synthetic_documents(40, np.random.default_rng(1))
    docs = []
    for sentences in docs_text:
        toks = [np.array([int(w[1:]) for w in s.split()], np.int32) for s in sentences]
        docs.append({"tokens": np.concatenate(toks),
                     "sentence_lengths": np.array([len(t) for t in toks], np.int32)})
    opts = pretraining.PairingOptions(max_seq_len=32, short_seq_prob=0.2, nsp=False,
                                      packing=packing, max_sequences_per_row=5)
    out = pretraining.create_instances(docs, list(range(len(docs))), np.random.default_rng(0),
                                       opts)
    ids, mask = out["input_ids"], out["input_mask"]
    real = ids[(mask > 0) & ~np.isin(ids, [CLS, SEP])]
    everything = np.concatenate([d["tokens"] for d in docs])
    assert np.array_equal(np.sort(real), np.sort(everything))  # each token exactly once
    assert (out["segment_ids"] == 0).all() and (out["nsp_label"] == 0).all()
    if packing == "sequences":
        batch = dict(out, masked_positions=np.zeros((len(ids), 1), np.int32),
                     masked_ids=np.zeros((len(ids), 1), np.int32),
                     masked_weights=np.zeros((len(ids), 1), np.float32))
        for _, _, seq, _ in _sequences(batch):
            body = seq[1:-1]
            assert seq[0] == CLS and seq[-1] == SEP and len(body)
            assert (np.diff(body) == 1).all()  # a contiguous piece of one document
        assert out["sequence_ids"].max() <= 5
    else:
        # One stream: the documents in group order with [SEP] between, cut into full rows.
        n = mask.sum(axis=1)
        assert (n < 32).sum() <= 1 and "sequence_ids" not in out  # only the group's last
        stream = np.concatenate([row[1:k - 1] for row, k in zip(ids, n)])
        expected = np.concatenate(sum(([d["tokens"], [SEP]] for d in docs), [])[:-1])
        # Rows were shuffled: compare as multisets, and each row is a contiguous stream slice.
        assert np.array_equal(np.sort(stream), np.sort(expected))
        where = {int(t): i for i, t in enumerate(expected) if t != SEP}
        for row, k in zip(ids, n):
            body = row[1:k - 1]
            first = next(j for j, t in enumerate(body) if t != SEP)
            start = where[int(body[first])] - first
            assert np.array_equal(body, expected[start:start + len(body)])
    fill = mask.sum() / mask.size
    unpacked = pretraining.create_instances(
        docs, list(range(len(docs))), np.random.default_rng(0),
        pretraining.PairingOptions(max_seq_len=32, short_seq_prob=0.2, nsp=False))
    assert fill > 0.95 and fill > unpacked["input_mask"].mean() + 0.1


def test_pack_rows_respects_the_cap_and_the_row_length():
    r = random.Random(0)
    lengths = [r.randint(3, 40) for _ in range(500)]
    n, length = len(lengths), 40
    seqs = {"input_ids": np.zeros((n, length), np.int32),
            "segment_ids": np.zeros((n, length), np.int32),
            "input_mask": (np.arange(length)[None] < np.array(lengths)[:, None]).astype(np.int32),
            "nsp_label": np.array([r.randint(0, 1) for _ in range(n)], np.int32)}
    for i, k in enumerate(lengths):
        seqs["input_ids"][i, :k] = i + 5  # the sequence's own number, to follow it
    out = packing.pack_rows(seqs, r, max_per_row=3, nsp=True)
    assert out["sequence_ids"].max() <= 3 and out["nsp_weights"].sum() == n
    found = {}
    for row in range(len(out["input_ids"])):
        for s in range(1, out["sequence_ids"][row].max() + 1):
            idx = out["sequence_ids"][row] == s
            (num,) = set(out["input_ids"][row][idx].tolist())
            found[num - 5] = (idx.sum(), out["nsp_label"][row, s - 1])
    assert found == {i: (lengths[i], seqs["nsp_label"][i]) for i in range(n)}
    # Best-fit decreasing: no two rows could have been merged (within the cap).
    used = out["input_mask"].sum(axis=1)
    count = out["sequence_ids"].max(axis=1)
    small = [(u, c) for u, c in zip(used, count) if c < 3]
    assert sum(1 for u, c in small if u <= length // 2) <= 1


@pytest.mark.parametrize("nsp", [True, False])
def test_packed_masking_statistics_hold(synthetic, data_config, nsp):
    """15% of maskable tokens, 80/10/10, never a special token, one prediction per slot."""
    prepared, _ = synthetic
    cfg = data_config(packing="sequences", nsp=nsp)
    it = pretraining.make_iterator(cfg, prepared, global_batch_size=512, seed=0)
    n = maskable = masked = randomised = 0
    for batch in _take(it, 6):
        w = batch["masked_weights"] > 0
        orig = _unmask(batch)
        rows = np.broadcast_to(np.arange(len(orig))[:, None], w.shape)
        pos = batch["masked_positions"][w]
        assert not np.isin(orig[rows[w], pos], [CLS, SEP, PAD]).any()
        assert all(len(set(p[m])) == m.sum() for p, m in zip(batch["masked_positions"], w))
        now = batch["input_ids"][rows[w], pos]
        masked += (now == 4).sum()
        randomised += ((now != 4) & (now != orig[rows[w], pos])).sum()
        n += w.sum()
        maskable += ((batch["input_mask"] > 0) & ~np.isin(orig, [CLS, SEP, PAD])).sum()
    assert abs(n / maskable - 0.15) < 0.005
    assert abs(masked / n - 0.8) < 0.01
    # 10% random, minus the few random draws that hit the original token.
    assert abs(randomised / n - 0.1) < 0.01


def test_packed_batches_are_deterministic_and_resume_exactly(synthetic, data_config):
    prepared, _ = synthetic
    cfg = data_config(packing="sequences")
    a = _take(pretraining.make_iterator(cfg, prepared, global_batch_size=64, seed=3), 4)
    it = pretraining.make_iterator(cfg, prepared, global_batch_size=64, seed=3)
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    resumed = pretraining.make_iterator(cfg, prepared, global_batch_size=64, seed=3)
    resumed.set_state(state)
    for x, y in zip(a[2:], _take(resumed, 2)):
        assert set(x) == set(y)
        for k in x:
            assert np.array_equal(x[k], y[k]), k


def test_packing_config_errors_are_clear(synthetic, data_config):
    prepared, _ = synthetic
    with pytest.raises(ValueError, match="data.packing='bogus'"):
        pretraining.make_iterator(data_config(packing="bogus"), prepared,
                                  global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="MLM-only.*data.nsp=False"):
        pretraining.make_iterator(data_config(packing="full_sentences"), prepared,
                                  global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="max_predictions_per_seq=10.*at least 20"):
        pretraining.make_iterator(data_config(packing="sequences", max_predictions_per_seq=10),
                                  prepared, global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match="max_sequences_per_row=0"):
        pretraining.make_iterator(data_config(packing="sequences", max_sequences_per_row=0),
                                  prepared, global_batch_size=8, seed=0)
