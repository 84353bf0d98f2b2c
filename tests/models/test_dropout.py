import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertjax.models import dropout


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 33, 65), (32, 4, 16, 16)])
@pytest.mark.parametrize("p", [0.9, 0.5, 0.01])
def test_mask_equals_jax_random_bernoulli(shape, p):
    for key in (jax.random.PRNGKey(0), jax.random.fold_in(jax.random.PRNGKey(7), 3),
                jax.random.key(12345)):
        want = jax.random.bernoulli(key, p, shape)
        got = dropout.bernoulli(key, p, shape)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_mask_equals_jax_under_jit_and_vmap():
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    f = lambda k: dropout.bernoulli(k, 0.9, (6, 10))  # noqa: E731
    g = lambda k: jax.random.bernoulli(k, 0.9, (6, 10))  # noqa: E731
    np.testing.assert_array_equal(jax.jit(jax.vmap(f))(keys), jax.vmap(g)(keys))


@pytest.mark.parametrize("key,counter,expected", [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_matches_the_published_known_answers(key, counter, expected):
    # Known-answer vectors of the Random123 reference (kat_vectors, threefry2x32 20 rounds).
    u32 = [jnp.uint32(v) for v in key + counter]
    assert tuple(int(x) for x in dropout.threefry2x32(*u32)) == expected


def test_other_generators_fall_back_to_jax():
    key = jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(dropout.bernoulli(key, 0.8, (4, 9)),
                                  jax.random.bernoulli(key, 0.8, (4, 9)))


def test_keep_rate_is_the_requested_one():
    keep = dropout.bernoulli(jax.random.PRNGKey(1), 0.9, (1000, 1000))
    assert abs(float(jnp.mean(keep)) - 0.9) < 1e-3   # binomial std is 3e-4


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_module_equals_flax_dropout(rate):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 32))
    rngs = {"dropout": jax.random.PRNGKey(9)}
    want = nn.Dropout(rate).apply({}, x, deterministic=False, rngs=rngs)
    got = dropout.Dropout(rate).apply({}, x, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(got, want)
    # The gradient goes through the kept units only, scaled by 1 / keep.
    grad = jax.grad(lambda y: jnp.sum(dropout.Dropout(rate).apply(
        {}, y, deterministic=False, rngs=rngs)))(x)
    np.testing.assert_allclose(grad, np.where(np.asarray(want) != 0, 1 / (1 - rate), 0),
                               rtol=1e-6)


def test_module_edge_rates_and_deterministic():
    x = jnp.ones((3, 4))
    rngs = {"dropout": jax.random.PRNGKey(0)}
    np.testing.assert_array_equal(dropout.Dropout(0.5).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(dropout.Dropout(0.0).apply({}, x, deterministic=False), x)
    np.testing.assert_array_equal(
        dropout.Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs), np.zeros((3, 4)))


def test_mask_is_the_same_when_the_batch_is_sharded():
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jnp.ones((len(jax.devices()) * 2, 8, 16))
    key = jax.random.PRNGKey(4)
    f = jax.jit(lambda y, k: dropout.Dropout(0.3).apply({}, y, deterministic=False,
                                                          rngs={"dropout": k}))
    sharded = f(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), key)
    np.testing.assert_array_equal(sharded, f(x, key))
