"""Table 7's feature choices against hand computations, and against BertModel's outputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models import bert, layer_features

L, B, T, H = 5, 2, 3, 4   # 5 encoder layers: hidden_states has 6 entries


@pytest.fixture(scope="module")
def hs():
    return np.random.default_rng(0).normal(size=(L + 1, B, T, H)).astype(np.float32)


@pytest.mark.parametrize("choice,expected", [
    ("embeddings", lambda h: h[0]),
    ("last", lambda h: h[5]),
    ("second_to_last", lambda h: h[4]),
    ("sum_last_four", lambda h: h[2] + h[3] + h[4] + h[5]),
    ("concat_last_four", lambda h: np.concatenate([h[2], h[3], h[4], h[5]], axis=-1)),
])
def test_parameter_free_choices(hs, choice, expected):
    got = layer_features.select_features(jnp.asarray(hs), choice)
    np.testing.assert_allclose(got, expected(hs), rtol=1e-6)
    assert got.shape[-1] == layer_features.feature_size(choice, H)
    module = layer_features.LayerFeatures(choice)
    assert module.init(jax.random.PRNGKey(0), hs) == {}
    np.testing.assert_allclose(module.apply({}, hs), expected(hs), rtol=1e-6)


def test_weighted_sum_all_is_the_scalar_mix_of_the_encoder_layers(hs):
    module = layer_features.LayerFeatures("weighted_sum_all")
    params = module.init(jax.random.PRNGKey(0), hs)["params"]
    assert params["scalar_mix"]["scalar_weights"].shape == (L,)   # not the embedding output
    np.testing.assert_allclose(module.apply({"params": params}, hs), hs[1:].mean(0), rtol=1e-5)
    s = np.array([0.5, -1.0, 2.0, 0.0, 1.0], np.float32)
    w = np.exp(s) / np.exp(s).sum()
    got = module.apply({"params": {"scalar_mix": {"scalar_weights": s, "gamma": np.float32(1.5)}}}, hs)
    np.testing.assert_allclose(got, 1.5 * np.einsum("k,kbth->bth", w, hs[1:]), rtol=1e-5)
    with pytest.raises(ValueError, match="has parameters"):
        layer_features.select_features(hs, "weighted_sum_all")


def test_sequence_output_replaces_the_top_layer(hs):
    top = np.full((B, T, H), 3.0, np.float32)
    np.testing.assert_allclose(layer_features.select_features(hs, "last", top), top)
    np.testing.assert_allclose(layer_features.select_features(hs, "sum_last_four", top),
                               hs[2] + hs[3] + hs[4] + top, rtol=1e-6)
    np.testing.assert_allclose(layer_features.select_features(hs, "second_to_last", top), hs[4])


@pytest.mark.parametrize("choice,layers,match", [
    ("sum_last_four", 3, "needs at least 4 encoder layers; the model has 3"),
    ("concat_last_four", 2, "needs at least 4"),
    ("second_to_last", 1, "needs at least 2"),
    ("mean", 12, r"features='mean': expected one of \('embeddings'"),
])
def test_bad_choice(choice, layers, match):
    with pytest.raises(ValueError, match=match):
        layer_features.check_feature_choice(choice, layers)


def test_on_bert_hidden_states():
    """Pre-LN, where the top hidden state lacks the final LayerNorm (post-LN's top hidden
    state is the sequence output by construction: Encoder returns it as both)."""
    c = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2,
                        intermediate_size=32, pre_layer_norm=True)
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) + 5
    seg, mask = np.zeros_like(ids), np.ones_like(ids)
    model = bert.BertModel(c)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), ids, seg, mask)["params"]
    seq, _, inter = jax.jit(lambda p: model.apply({"params": p}, ids, seg, mask,
                                                  return_intermediates=True))(params)
    hidden = inter["hidden_states"]
    assert hidden.shape == (5, 2, 6, 16)
    last = layer_features.select_features(hidden, "last", seq)
    np.testing.assert_allclose(last, seq)
    assert not np.allclose(hidden[-1], seq, atol=1e-3)
    concat = layer_features.select_features(hidden, "concat_last_four", seq)
    assert concat.shape == (2, 6, 64)
