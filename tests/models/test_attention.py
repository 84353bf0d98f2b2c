import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models import attention


def _qkv(b=2, t=10, h=3, d=8, seed=0, dtype=jnp.float32):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [jax.random.normal(k, (b, t, h, d), dtype) for k in ks]


def _mask(b=2, t=10, lengths=(10, 6)):
    return (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(np.int32)


def _naive(q, k, v, mask):
    """Per-example loops in numpy float64: the closed form softmax(qk^T/sqrt(d)) v."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        keep = np.asarray(mask[b]).astype(bool)
        for h in range(q.shape[2]):
            s = q[b, :, h] @ k[b, keep, h].T / np.sqrt(q.shape[-1])
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[b, :, h] = p @ v[b, keep, h]
    return out


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_paths_agree_with_closed_form(impl):
    q, k, v = _qkv()
    mask = _mask()
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    np.testing.assert_allclose(out, _naive(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_einsum_and_xla_agree_in_bfloat16():
    q, k, v = _qkv(dtype=jnp.bfloat16)
    mask = _mask()
    a = attention.dot_product_attention(q, k, v, mask, implementation="einsum")
    b = attention.dot_product_attention(q, k, v, mask, implementation="xla")
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=3e-2)


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_fully_padded_rows_never_nan(impl):
    q, k, v = _qkv()
    mask = _mask(lengths=(10, 0))
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    assert bool(jnp.all(jnp.isfinite(out)))
    g = jax.grad(lambda q: attention.dot_product_attention(
        q, k, v, mask, implementation=impl).sum())(q)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_attention_dropout_scales_and_zeroes():
    q, k, v = _qkv()
    mask = _mask()
    kwargs = dict(implementation="einsum", dropout_rate=0.5, deterministic=False)
    a = attention.dot_product_attention(q, k, v, mask, dropout_rng=jax.random.PRNGKey(0), **kwargs)
    b = attention.dot_product_attention(q, k, v, mask, dropout_rng=jax.random.PRNGKey(1), **kwargs)
    ref = attention.dot_product_attention(q, k, v, mask, implementation="einsum")
    assert not np.allclose(a, b)
    # Inverted dropout keeps the expectation: the mean over many rngs approaches the reference.
    outs = jax.vmap(lambda r: attention.dot_product_attention(
        q, k, v, mask, dropout_rng=r, **kwargs))(jax.random.split(jax.random.PRNGKey(2), 4000))
    np.testing.assert_allclose(np.mean(outs, 0), ref, atol=0.08)
    assert float(np.mean(np.abs(np.mean(outs, 0) - ref))) < 0.015


def test_fused_paths_refuse_probability_dropout():
    with pytest.raises(ValueError, match="attention_dropout_rate=0.1"):
        attention.check_implementation("xla", 0.1)
    with pytest.raises(ValueError, match="'nope' is not known"):
        attention.check_implementation("nope", 0.0)
    attention.check_implementation("cudnn", 0.0)
