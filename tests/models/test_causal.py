"""Causal attention (model.causal, the left-to-right objective): a position's output depends on
itself and what is left of it only, bit for bit, in every attention implementation that runs on
CPU, with and without packing; the pooled output under a causal mask is the last real token's."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models import attention, bert

VOCAB, LENGTH = 97, 12


def _config(**kw):
    d = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
             max_position_embeddings=32, hidden_dropout_rate=0.0, attention_dropout_rate=0.0,
             causal=True)
    d.update(kw)
    return bert.BertConfig(**d)


def _inputs(seed=0, batch=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (batch, LENGTH)).astype(np.int32)
    mask = np.ones((batch, LENGTH), np.int32)
    mask[1, 9:] = 0  # one right-padded row
    seg = np.zeros((batch, LENGTH), np.int32)
    seg[:, 6:] = 1
    return ids * mask, seg, mask


def _forward(cfg, ids, seg, mask, packing=None):
    """The encoder output and the LTR logits (the MLM head at every position)."""
    model = bert.BertForPreTraining(cfg)
    positions = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), ids.shape)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask, positions)["params"]

    @jax.jit
    def run(ids):
        seq, _ = bert.BertModel(cfg).apply({"params": params["bert"]}, ids, seg, mask,
                                           packing=packing)
        logits, _ = model.apply({"params": params}, ids, seg, mask, positions, packing=packing)
        return seq.astype(jnp.float32), logits
    return run


CASES = [  # (attention_impl, dtype, position_embedding, scan_layers)
    ("einsum", "float32", "sinusoidal", False),
    ("xla", "float32", "sinusoidal", False),
    ("einsum", "float32", "learned", True),
    ("xla", "float32", "learned", False),
    ("einsum", "bfloat16", "sinusoidal", False),
    ("xla", "bfloat16", "learned", False),
]


@pytest.mark.parametrize("impl, dtype, position, scan", CASES)
def test_changing_a_later_token_leaves_every_earlier_position_bit_identical(
        impl, dtype, position, scan):
    cfg = _config(attention_impl=impl, dtype=dtype, position_embedding=position,
                  scan_layers=scan)
    ids, seg, mask = _inputs()
    run = _forward(cfg, ids, seg, mask)
    seq, logits = (np.asarray(x) for x in run(ids))
    for j in (1, 5, LENGTH - 1):
        changed = ids.copy()
        changed[:, j] = (changed[:, j] + 7) % (VOCAB - 5) + 5
        seq2, logits2 = (np.asarray(x) for x in run(changed))
        np.testing.assert_array_equal(seq2[:, :j], seq[:, :j])
        np.testing.assert_array_equal(logits2[:, :j], logits[:, :j])
        # ... and the change is seen from position j on (row 0 is unpadded everywhere).
        assert not np.array_equal(seq2[0, j:], seq[0, j:])


def test_the_same_check_fails_without_the_causal_mask():
    """The test above can fail: a bidirectional encoder changes earlier positions."""
    cfg = _config(causal=False)
    ids, seg, mask = _inputs()
    run = _forward(cfg, ids, seg, mask)
    changed = ids.copy()
    changed[:, 8] += 1
    assert not np.array_equal(np.asarray(run(changed)[0])[0, :8], np.asarray(run(ids)[0])[0, :8])


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_packed_rows_are_block_diagonal_and_causal(impl):
    cfg = _config(attention_impl=impl)
    ids, seg, mask = _inputs()
    # Row 0: sequences of 5 and 7 tokens; row 1: 4 + 5 tokens then padding; row 2: one of 12.
    seq_ids = np.array([[1] * 5 + [2] * 7, [1] * 4 + [2] * 5 + [0] * 3, [1] * 12], np.int32)
    pos = np.array([list(range(5)) + list(range(7)), list(range(4)) + list(range(5)) + [0] * 3,
                    list(range(12))], np.int32)
    packing = {"sequence_ids": jnp.asarray(seq_ids), "position_ids": jnp.asarray(pos)}
    run = _forward(cfg, ids, seg, mask, packing)
    seq = np.asarray(run(ids)[0])
    # A change in the second sequence of row 0 (position 6) leaves the first sequence and the
    # second sequence's position 5 as they were; a change in the first sequence (position 3)
    # leaves all of the second sequence.
    for j, same in ((6, list(range(6))), (3, [0, 1, 2] + list(range(5, 12)))):
        changed = ids.copy()
        changed[0, j] += 1
        seq2 = np.asarray(run(changed)[0])
        np.testing.assert_array_equal(seq2[0, same], seq[0, same])
        assert not np.array_equal(seq2[0, j], seq[0, j])
        np.testing.assert_array_equal(seq2[1:], seq[1:])


def test_causal_mask_of_the_implementations_agree():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 2, 4)), jnp.float32) for _ in range(3))
    key_mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2])
    seq_ids = jnp.asarray([[1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 0, 0]])
    mask = np.asarray(attention.attention_bias_mask(key_mask, seq_ids, causal=True))[:, 0]
    expected = np.zeros((2, 6, 6), bool)
    for b in range(2):
        for i in range(6):
            for j in range(i + 1):
                expected[b, i, j] = bool(key_mask[b, j]) and int(seq_ids[b, i]) == int(
                    seq_ids[b, j])
    np.testing.assert_array_equal(mask, expected)
    for packed in (None, seq_ids):
        a = attention.dot_product_attention(q, k, v, key_mask, sequence_ids=packed, causal=True,
                                            implementation="einsum")
        b = attention.dot_product_attention(q, k, v, key_mask, sequence_ids=packed, causal=True,
                                            implementation="xla")
        real = np.asarray(key_mask, bool)  # padded queries' outputs are never used
        np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-6)


def test_pooled_output_under_a_causal_mask_is_the_last_real_token():
    cfg = _config()
    ids, seg, mask = _inputs()
    np.testing.assert_array_equal(np.asarray(bert.summary_positions(cfg, jnp.asarray(mask))),
                                  [LENGTH - 1, 8, LENGTH - 1])
    model = bert.BertModel(cfg)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask)["params"]
    seq, pooled = model.apply({"params": params}, ids, seg, mask)
    dense = params["pooler"]["dense"]
    last = np.asarray(seq)[np.arange(3), [LENGTH - 1, 8, LENGTH - 1]]
    np.testing.assert_allclose(np.asarray(pooled),
                               np.tanh(last @ dense["kernel"] + dense["bias"]), atol=1e-5)
    # Bidirectional models keep [CLS] (position 0).
    plain = dataclasses.replace(cfg, causal=False)
    seq, pooled = bert.BertModel(plain).apply({"params": params}, ids, seg, mask)
    np.testing.assert_allclose(np.asarray(pooled), np.tanh(
        np.asarray(seq)[:, 0] @ dense["kernel"] + dense["bias"]), atol=1e-5)


def test_a_causal_classifier_reads_the_whole_input_and_ignores_padding():
    cfg = _config()
    ids, seg, mask = _inputs()
    model = bert.BertForSequenceClassification(cfg, num_labels=3)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask)["params"]
    run = jax.jit(lambda ids: model.apply({"params": params}, ids, seg, mask))
    base = np.asarray(run(ids))
    first = ids.copy()
    first[:, 1] += 1  # the first token after [CLS]: the last token sees it
    assert np.all(np.any(np.asarray(run(first)) != base, axis=-1))
    pad = ids.copy()
    pad[1, LENGTH - 1] = 3  # the row's last position, but padding: pooling must not read it
    np.testing.assert_array_equal(np.asarray(run(pad))[1], base[1])


def test_causal_with_packed_nsp_pairs_is_refused():
    cfg = _config()
    with pytest.raises(ValueError, match="causal attention with cls_positions"):
        bert.summary_positions(cfg, jnp.ones((1, 4)), jnp.zeros((1, 2), jnp.int32))


def test_config_records_causal_and_old_configs_load_bidirectional():
    d = _config().to_dict()
    assert d["causal"] is True and bert.BertConfig.from_dict(d).causal
    del d["causal"]  # a checkpoint from before the field existed
    assert bert.BertConfig.from_dict(d).causal is False
