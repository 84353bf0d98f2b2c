"""Packed rows are exact: each packed sequence gives what it gives alone, and the losses
(and gradients) of a packed batch equal those of the same sequences unpacked."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import parallel, train
from bertjax.data import masking, pretraining
from bertjax.models import attention, bert

SEQ, MAX_PER_ROW, VOCAB = 64, 4, 1000
PREDS = math.ceil(0.15 * SEQ)


def _cfg(**kw):
    kw.setdefault("vocab_size", VOCAB)
    return bert.BertConfig.from_dict(bert.model_config("tiny", **kw))


def _documents(rng, n=16):
    docs = []
    for _ in range(n):
        lengths = rng.integers(2, 25, rng.integers(1, 10)).astype(np.int32)
        docs.append({"tokens": rng.integers(5, VOCAB, lengths.sum()).astype(np.int32),
                     "sentence_lengths": lengths})
    return docs


def _packed_batch(nsp: bool, rows: int = 4, seed: int = 0) -> dict:
    """Masked packed rows from the real pairing/packing/masking code, the fullest `rows`."""
    rng = np.random.default_rng(seed)
    docs = _documents(rng)
    opts = pretraining.PairingOptions(max_seq_len=SEQ, short_seq_prob=0.5, nsp=nsp,
                                      packing="sequences", max_sequences_per_row=MAX_PER_ROW)
    packed = pretraining.create_instances(docs, list(range(len(docs))), rng, opts)
    count = packed["sequence_ids"].max(axis=1)
    keep = np.argsort(-count, kind="stable")[:rows]
    assert count[keep].min() >= 2, "the test needs rows holding several sequences"
    packed = {k: v[keep] for k, v in packed.items()}
    vocab = masking.Vocab(VOCAB, 4, (0, 1, 2, 3, 4), np.ones(VOCAB, bool))
    return masking.mask_batch(packed, rng, vocab,
                                  masking.MaskingOptions(max_predictions=PREDS))


def _unpack(batch: dict, nsp: bool):
    """The packed sequences as one ordinary (unpacked) row each, and where each came from."""
    rows, where = {k: [] for k in pretraining.BATCH_KEYS}, []
    for r in range(len(batch["input_ids"])):
        for s in range(1, int(batch["sequence_ids"][r].max()) + 1):
            idx = np.flatnonzero(batch["sequence_ids"][r] == s)
            start, n = idx[0], len(idx)
            assert (idx == np.arange(start, start + n)).all()          # contiguous
            assert (batch["position_ids"][r, idx] == np.arange(n)).all()  # restart at 0
            pad = lambda x: np.pad(x, (0, SEQ - n))  # noqa: E731
            rows["input_ids"].append(pad(batch["input_ids"][r, idx]))
            rows["segment_ids"].append(pad(batch["segment_ids"][r, idx]))
            rows["input_mask"].append(pad(np.ones(n, np.int32)))
            w = batch["masked_weights"][r] > 0
            mine = w & (batch["masked_positions"][r] >= start) & (
                batch["masked_positions"][r] < start + n)
            k = int(mine.sum())
            rows["masked_positions"].append(np.pad(batch["masked_positions"][r][mine] - start,
                                                   (0, PREDS - k)))
            rows["masked_ids"].append(np.pad(batch["masked_ids"][r][mine], (0, PREDS - k)))
            rows["masked_weights"].append(np.pad(np.ones(k, np.float32), (0, PREDS - k)))
            if nsp:
                assert batch["cls_positions"][r, s - 1] == start
                assert batch["nsp_weights"][r, s - 1] == 1
                rows["nsp_label"].append(batch["nsp_label"][r, s - 1])
            else:
                rows["nsp_label"].append(0)
            where.append((r, s - 1, idx))
    out = {k: np.stack(v).astype(batch[k].dtype if k in batch and batch[k].ndim else np.int32)
           for k, v in rows.items()}
    assert out["masked_weights"].sum() == batch["masked_weights"].sum()  # each prediction once
    return out, where


def _packing_inputs(batch):
    return {k: batch[k] for k in pretraining.MODEL_PACKING_KEYS if k in batch}


@pytest.mark.parametrize("position, nsp, impl, scan", [
    ("sinusoidal", True, "einsum", False), ("learned", True, "einsum", False),
    ("sinusoidal", False, "einsum", False), ("learned", False, "einsum", False),
    ("learned", True, "xla", False), ("sinusoidal", True, "einsum", True)])
def test_each_packed_sequence_equals_running_it_alone(position, nsp, impl, scan):
    cfg = _cfg(position_embedding=position, attention_impl=impl, attention_dropout_rate=0.0,
               scan_layers=scan)
    packed = _packed_batch(nsp)
    alone, where = _unpack(packed, nsp)
    model = bert.BertModel(cfg)
    params = model.init(jax.random.PRNGKey(0), alone["input_ids"][:1], alone["segment_ids"][:1],
                        alone["input_mask"][:1])
    seq_p, pooled_p = model.apply(params, packed["input_ids"], packed["segment_ids"],
                                  packed["input_mask"], packing=_packing_inputs(packed))
    seq_a, pooled_a = model.apply(params, alone["input_ids"], alone["segment_ids"],
                                  alone["input_mask"])
    assert len(where) > len(packed["input_ids"])
    for u, (r, slot, idx) in enumerate(where):
        np.testing.assert_allclose(np.asarray(seq_p[r, idx]), np.asarray(seq_a[u, :len(idx)]),
                                   atol=1e-5, rtol=0)
        if nsp:
            np.testing.assert_allclose(np.asarray(pooled_p[r, slot]), np.asarray(pooled_a[u]),
                                       atol=1e-5, rtol=0)


def test_a_packed_sequence_does_not_see_its_neighbours():
    """Changing every other sequence of a row leaves a sequence's output bit-identical."""
    cfg = _cfg(attention_dropout_rate=0.0)
    packed = _packed_batch(nsp=True)
    model = bert.BertModel(cfg)
    params = model.init(jax.random.PRNGKey(1), packed["input_ids"][:1],
                        packed["segment_ids"][:1], packed["input_mask"][:1])
    other = dict(packed)
    first = packed["sequence_ids"] == 1
    other["input_ids"] = np.where(first, packed["input_ids"],
                                  (packed["input_ids"] * 7 + 11) % (VOCAB - 5) + 5)
    outs = [np.asarray(model.apply(params, b["input_ids"], b["segment_ids"], b["input_mask"],
                                   packing=_packing_inputs(b))[0]) for b in (packed, other)]
    assert np.array_equal(outs[0][first], outs[1][first])
    assert not np.allclose(outs[0][~first & (packed["input_mask"] > 0)],
                           outs[1][~first & (packed["input_mask"] > 0)])


@pytest.mark.parametrize("nsp", [True, False])
def test_packed_loss_sums_and_gradient_equal_the_unpacked_ones(nsp):
    # Smaller than tiny: the check is about bookkeeping, and it compiles two train steps.
    cfg = _cfg(hidden_size=32, num_heads=2, intermediate_size=64, hidden_dropout_rate=0.0,
               attention_dropout_rate=0.0)
    packed = _packed_batch(nsp)
    alone, _ = _unpack(packed, nsp)
    model = bert.BertForPreTraining(cfg)
    tx = optax.sgd(1.0)
    state = train.init_state(jax.random.PRNGKey(0), model, tx, SEQ, PREDS)
    sums = {}
    for name, b in (("packed", packed), ("alone", alone)):
        b = jax.tree_util.tree_map(jnp.asarray, b)
        sums[name] = jax.jit(functools.partial(train._loss_sums, model=model, use_nsp=nsp,
                                               deterministic=True,
                                               collectives=parallel.ONE_DEVICE))(
            state.params, b, state.rng)
    assert set(sums["packed"]) == set(sums["alone"])
    for k in sums["packed"]:
        np.testing.assert_allclose(float(sums["packed"][k]), float(sums["alone"][k]), rtol=2e-5,
                                   err_msg=k)
    if nsp:
        assert float(sums["packed"]["nsp_count"]) == len(alone["input_ids"])

    # The objective (loss per prediction + loss per pair) is the same, hence one SGD step too.
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx,
                                     schedule=lambda s: 1.0, grad_accum=1, use_nsp=nsp))
    new = {name: step(state, jax.tree_util.tree_map(jnp.asarray, b))[0].params
           for name, b in (("packed", packed), ("alone", alone))}
    delta = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new["packed"],
                                   new["alone"])
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new["alone"],
                                   state.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3
    assert max(jax.tree_util.tree_leaves(delta)) < 1e-5


def test_cudnn_refuses_packed_rows_clearly():
    q = jnp.zeros((1, 8, 2, 4))
    mask = jnp.ones((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="cudnn.*packed rows.*attention_impl='xla'"):
        attention.dot_product_attention(q, q, q, mask, sequence_ids=mask,
                                        implementation="cudnn")
    from configs import pretrain
    config = pretrain.get_config("tiny,gpu")
    config.data.packing = "sequences"
    with pytest.raises(ValueError, match="cudnn"):
        train.check_config(config)
    assert pretrain.get_config("tiny,gpu,packed").model.attention_impl == "xla"
