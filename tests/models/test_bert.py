import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models import bert

# Encoder + pooler with vocab 30522, 2 segment types, 512 learned positions (published models).
PUBLISHED_COUNTS = {
    "tiny": 4_385_920,
    "mini": 11_170_560,
    "small": 28_763_648,
    "medium": 41_373_184,
    "base": 109_482_240,
    "large": 335_141_888,
}


def _cfg(size="tiny", **kw):
    kw.setdefault("vocab_size", 1000)
    return bert.BertConfig.from_dict(bert.model_config(size, **kw))


def _batch(b=2, t=16, vocab=1000, p=4, seed=0, pad_from=None):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    if pad_from is not None:
        mask[:, pad_from:] = 0
        ids[:, pad_from:] = 0
    seg = np.zeros((b, t), np.int32)
    seg[:, t // 2:] = 1
    seg *= mask
    pos = rng.integers(1, pad_from or t, (b, p)).astype(np.int32)
    return ids, seg, mask, pos


def _abstract_params(module, *args):
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))["params"]


@pytest.mark.parametrize("size", list(bert.SIZES))
def test_published_parameter_counts(size):
    cfg = _cfg(size, vocab_size=30522, position_embedding="learned")
    ids = jnp.zeros((1, 8), jnp.int32)
    params = _abstract_params(bert.BertModel(cfg), ids, ids, ids)
    assert bert.param_count(params) == PUBLISHED_COUNTS[size]
    sin_cfg = dataclasses.replace(cfg, position_embedding="sinusoidal")
    sin_params = _abstract_params(bert.BertModel(sin_cfg), ids, ids, ids)
    assert bert.param_count(sin_params) == PUBLISHED_COUNTS[size] - 512 * cfg.hidden_size


@pytest.mark.parametrize("size", list(bert.SIZES))
def test_output_shapes_every_size(size):
    cfg = _cfg(size)
    b, t, p = 2, 16, 5
    ids = jax.ShapeDtypeStruct((b, t), jnp.int32)
    pos = jax.ShapeDtypeStruct((b, p), jnp.int32)
    model = bert.BertForPreTraining(cfg)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, ids, ids, pos)
    mlm, nsp = jax.eval_shape(model.apply, variables, ids, ids, ids, pos)
    assert mlm.shape == (b, p, cfg.vocab_size) and mlm.dtype == jnp.float32
    assert nsp.shape == (b, 2) and nsp.dtype == jnp.float32
    seq, pooled = jax.eval_shape(bert.BertModel(cfg).apply, {"params": variables["params"]["bert"]},
                                 ids, ids, ids)
    assert seq.shape == (b, t, cfg.hidden_size) and pooled.shape == (b, cfg.hidden_size)


def test_parameter_names_mirror_bert_checkpoint():
    cfg = _cfg(position_embedding="learned")
    ids, seg, mask, pos = _batch()
    params = _abstract_params(bert.BertForPreTraining(cfg), ids, seg, mask, pos)
    flat = {"/".join(k.key for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    for name in [
        "bert/embeddings/word_embeddings/embedding",
        "bert/embeddings/position_embeddings/embedding",
        "bert/embeddings/token_type_embeddings/embedding",
        "bert/embeddings/LayerNorm/scale",
        "bert/encoder/layer_0/attention/self/query/kernel",
        "bert/encoder/layer_1/attention/output/dense/bias",
        "bert/encoder/layer_1/attention/output/LayerNorm/scale",
        "bert/encoder/layer_0/intermediate/dense/kernel",
        "bert/encoder/layer_0/output/dense/kernel",
        "bert/encoder/layer_0/output/LayerNorm/bias",
        "bert/pooler/dense/kernel",
        "cls/predictions/transform/dense/kernel",
        "cls/predictions/transform/LayerNorm/scale",
        "cls/predictions/output_bias",
        "cls/seq_relationship/kernel",
    ]:
        assert name in flat, name
    # No separate MLM output matrix: it is tied to the word embeddings.
    assert not any("predictions" in n and n.endswith("kernel") and "transform" not in n
                   for n in flat)


def test_sinusoidal_table_matches_closed_form():
    table = bert.sinusoidal_positions(64, 16)
    for p in (0, 1, 7, 63):
        for i in range(8):
            angle = p / (10000 ** (2 * i / 16))
            assert table[p, 2 * i] == pytest.approx(np.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-6)


def test_position_signal_does_not_drown_the_tokens_at_init():
    """After the embedding LayerNorm, different tokens at one position must differ more than
    one token at neighbouring positions (an unscaled sin/cos table fails this 7:1 the other
    way), while positions still differ."""
    for pe in ("sinusoidal", "learned"):
        cfg = _cfg(position_embedding=pe, vocab_size=30522)
        emb = bert.Embeddings(cfg)
        ids = np.random.default_rng(0).integers(5, 30000, (32, 64)).astype(np.int32)
        params = emb.init(jax.random.PRNGKey(0), ids, ids * 0, True)
        x = np.asarray(emb.apply(params, ids, ids * 0, True))
        between_tokens = np.linalg.norm(x[1:] - x[:-1], axis=-1).mean()
        one = np.full((1, 64), 1234, np.int32)
        y = np.asarray(emb.apply(params, one, one * 0, True))[0]
        between_positions = np.linalg.norm(y[1:] - y[:-1], axis=-1).mean()
        assert between_tokens > 2 * between_positions or pe == "learned", (pe, between_tokens,
                                                                           between_positions)
        assert between_positions > 0.5, pe
    cfg = _cfg()
    np.testing.assert_allclose(np.sqrt(np.mean(bert.position_table(cfg) ** 2)),
                               cfg.initializer_range, rtol=0.01)


def test_padding_invariance():
    """Appending padding must not change the outputs at real tokens."""
    cfg = _cfg()
    model = bert.BertModel(cfg)
    ids, seg, mask, _ = _batch(t=12)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask)
    seq, pooled = model.apply(params, ids, seg, mask)
    pad = lambda a: np.pad(a, ((0, 0), (0, 20)))  # noqa: E731
    seq2, pooled2 = model.apply(params, pad(ids), pad(seg), pad(mask))
    np.testing.assert_allclose(seq2[:, :12], seq, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(pooled2, pooled, atol=2e-5, rtol=1e-5)


def test_masked_position_head_equals_full_sequence_head_gathered():
    cfg = _cfg()
    model = bert.BertForPreTraining(cfg)
    ids, seg, mask, pos = _batch(t=16, p=6)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask, pos)
    mlm, _ = model.apply(params, ids, seg, mask, pos)
    every = np.broadcast_to(np.arange(16, dtype=np.int32), (2, 16))
    full, _ = model.apply(params, ids, seg, mask, every)
    gathered = np.take_along_axis(np.asarray(full), pos[..., None], axis=1)
    np.testing.assert_allclose(mlm, gathered, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(pre_layer_norm=True),
    dict(hidden_act="gelu_tanh"),
    dict(position_embedding="learned"),
])
def test_gradients_finite_and_dropout_off_deterministic(overrides):
    cfg = _cfg(**overrides)
    model = bert.BertForPreTraining(cfg)
    ids, seg, mask, pos = _batch(pad_from=10)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask, pos)

    def loss(p, rng):
        mlm, nsp = model.apply(p, ids, seg, mask, pos, deterministic=False,
                               rngs={"dropout": rng})
        return jnp.mean(jax.nn.logsumexp(mlm, -1)) + jnp.mean(nsp ** 2)

    grads = jax.grad(loss)(params, jax.random.PRNGKey(1))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
    a = model.apply(params, ids, seg, mask, pos)
    b = model.apply(params, ids, seg, mask, pos)
    np.testing.assert_array_equal(a[0], b[0])
    # With dropout on, two different rngs give different outputs (dropout really applied).
    d1 = model.apply(params, ids, seg, mask, pos, deterministic=False,
                     rngs={"dropout": jax.random.PRNGKey(1)})
    d2 = model.apply(params, ids, seg, mask, pos, deterministic=False,
                     rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(d1[0], d2[0])


def test_bfloat16_forward_close_to_float32():
    cfg32 = _cfg()
    cfg16 = dataclasses.replace(cfg32, dtype="bfloat16")
    ids, seg, mask, pos = _batch(pad_from=12)
    params = bert.BertForPreTraining(cfg32).init(jax.random.PRNGKey(0), ids, seg, mask, pos)
    m32, n32 = bert.BertForPreTraining(cfg32).apply(params, ids, seg, mask, pos)
    m16, n16 = bert.BertForPreTraining(cfg16).apply(params, ids, seg, mask, pos)
    assert m16.dtype == jnp.float32  # logits stay float32 with bf16 compute
    assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float32
    np.testing.assert_allclose(m16, m32, atol=0.15, rtol=0.05)
    assert float(jnp.mean(jnp.abs(m16 - m32))) < 0.03
    np.testing.assert_allclose(n16, n32, atol=0.1)


def test_scan_and_remat_match_unrolled_layers():
    cfg = _cfg()
    ids, seg, mask, pos = _batch(pad_from=12)
    model = bert.BertForPreTraining(cfg)
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask, pos)["params"]
    ref = model.apply({"params": params}, ids, seg, mask, pos)
    layers = [params["bert"]["encoder"][f"layer_{i}"] for i in range(cfg.num_layers)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *layers)
    scan_params = jax.tree_util.tree_map(lambda x: x, params)
    scan_params["bert"]["encoder"] = {"layer": stacked}
    for c in (dataclasses.replace(cfg, scan_layers=True),
              dataclasses.replace(cfg, scan_layers=True, remat=True)):
        out = bert.BertForPreTraining(c).apply({"params": scan_params}, ids, seg, mask, pos)
        np.testing.assert_allclose(out[0], ref[0], atol=1e-4, rtol=1e-4)
    out = bert.BertForPreTraining(dataclasses.replace(cfg, remat=True)).apply(
        {"params": params}, ids, seg, mask, pos)
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5, rtol=1e-5)


def test_intermediates_hold_every_layer():
    cfg = _cfg()
    model = bert.BertModel(cfg)
    ids, seg, mask, _ = _batch()
    params = model.init(jax.random.PRNGKey(0), ids, seg, mask)
    seq, _, inter = model.apply(params, ids, seg, mask, return_intermediates=True)
    hs = inter["hidden_states"]
    assert hs.shape == (cfg.num_layers + 1, 2, 16, cfg.hidden_size)
    np.testing.assert_allclose(hs[-1], seq, atol=1e-6)


def test_sequence_classification_and_regression_heads():
    cfg = _cfg()
    ids, seg, mask, _ = _batch()
    for n, shape in ((3, (2, 3)), (1, (2,))):
        model = bert.BertForSequenceClassification(cfg, num_labels=n)
        params = model.init(jax.random.PRNGKey(0), ids, seg, mask)
        out = model.apply(params, ids, seg, mask)
        assert out.shape == shape and out.dtype == jnp.float32
        assert "classifier" in params["params"] and "bert" in params["params"]


@pytest.mark.parametrize("overrides, message", [
    (dict(hidden_size=129), "multiple of num_heads"),
    (dict(position_embedding="rotary"), "position_embedding='rotary'"),
    (dict(attention_impl="flash"), "attention_impl='flash'"),
    (dict(attention_impl="cudnn"), "attention_dropout_rate"),
    (dict(hidden_act="relu"), "hidden_act='relu'"),
    (dict(dtype="int8"), "dtype='int8'"),
    (dict(hidden_dropout_rate=1.5), "hidden_dropout_rate"),
])
def test_bad_model_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**overrides)


def test_unknown_size_and_key_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        bert.model_config("huge")
    with pytest.raises(ValueError, match="unknown model config keys .*num_layer'"):
        bert.BertConfig.from_dict({"num_layer": 3})


def test_sequence_longer_than_max_positions_is_a_clear_error():
    cfg = _cfg(max_position_embeddings=8)
    ids = jnp.zeros((1, 9), jnp.int32)
    with pytest.raises(ValueError, match="sequence length 9 exceeds .*max_position_embeddings=8"):
        bert.BertModel(cfg).init(jax.random.PRNGKey(0), ids, ids, ids)


def test_token_ids_outside_vocab_rejected_at_data_boundary():
    bert.check_token_ids(np.array([[0, 5, 999]]), 1000)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 1000\).*1000"):
        bert.check_token_ids(np.array([[0, 5, 1000]]), 1000)
    with pytest.raises(ValueError, match="-1"):
        bert.check_token_ids(np.array([[-1, 5]]), 1000)


def test_tied_logits_custom_gradient_matches_autodiff():
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(11, 8)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(11,)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(6, 11)), jnp.float32)
    plain = lambda h, t, b: jnp.sum(w * (h @ t.T + b))  # noqa: E731
    custom = lambda h, t, b: jnp.sum(w * bert._tied_logits(h, t, b))  # noqa: E731
    np.testing.assert_allclose(custom(h, table, bias), plain(h, table, bias), rtol=1e-5)
    for a, b in zip(jax.grad(custom, (0, 1, 2))(h, table, bias),
                    jax.grad(plain, (0, 1, 2))(h, table, bias)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_exact_gelu_is_the_erf_definition():
    from scipy.special import erf
    x = np.linspace(-12, 12, 20001).astype(np.float32)
    ref = 0.5 * x.astype(np.float64) * (1 + erf(x.astype(np.float64) / np.sqrt(2)))
    np.testing.assert_allclose(bert.gelu_erf(jnp.asarray(x)), ref, atol=2e-6, rtol=0)
    np.testing.assert_allclose(bert.gelu_erf(jnp.asarray(x)),
                               jax.nn.gelu(jnp.asarray(x), approximate=False), atol=2e-6)
    # Derivative Phi(x) + x phi(x).
    dref = 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(jax.vmap(jax.grad(bert.gelu_erf))(jnp.asarray(x)), dref,
                               atol=2e-6)
    assert bert.gelu_erf(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16
