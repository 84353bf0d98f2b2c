import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from bertjax import losses


def test_mlm_metrics_match_numpy_and_ignore_zero_weights():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    ids = rng.integers(0, 11, (3, 5))
    w = np.ones((3, 5), np.float32)
    w[:, 3:] = 0  # padding predictions
    m = losses.mlm_metrics(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(w))
    lp = log_softmax(logits.astype(np.float64), -1)
    nll = -np.take_along_axis(lp, ids[..., None], -1)[..., 0]
    assert float(m["mlm_loss"]) == pytest.approx((nll * w).sum() / w.sum(), rel=1e-5)
    acc = ((logits.argmax(-1) == ids) * w).sum() / w.sum()
    assert float(m["mlm_accuracy"]) == pytest.approx(acc)
    assert float(m["mlm_count"]) == 9
    # Changing logits at zero-weight positions changes nothing.
    logits2 = logits.copy()
    logits2[:, 3:] = 100.0
    m2 = losses.mlm_metrics(jnp.asarray(logits2), jnp.asarray(ids), jnp.asarray(w))
    assert float(m2["mlm_loss"]) == pytest.approx(float(m["mlm_loss"]), rel=1e-6)


def test_nsp_metrics_and_glue_losses():
    logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.5]])
    labels = jnp.array([0, 1, 0])
    m = losses.nsp_metrics(logits, labels)
    lp = log_softmax(np.asarray(logits, np.float64), -1)
    expected = -np.mean(lp[np.arange(3), np.asarray(labels)])
    assert float(m["nsp_loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(m["nsp_accuracy"]) == pytest.approx(2 / 3)
    assert float(losses.classification_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.regression_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))) == 2.5


def test_losses_are_float32_for_bfloat16_logits():
    logits = jnp.zeros((2, 3, 7), jnp.bfloat16)
    m = losses.mlm_metrics(logits, jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)))
    assert m["mlm_loss"].dtype == jnp.float32
    assert float(m["mlm_loss"]) == pytest.approx(np.log(7), rel=1e-6)


def _reference_sums(logits, labels, weights):
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    nll = -jnp.take_along_axis(lp, labels[..., None], -1)[..., 0]
    hit = jnp.argmax(logits, -1) == labels
    return jnp.sum(nll * weights), jnp.sum(hit * weights)


@pytest.mark.parametrize("shape", [(6, 13), (2, 5, 97)])
def test_hand_written_gradient_equals_autodiff(shape):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=shape) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]))
    weights = jnp.asarray(rng.integers(0, 2, shape[:-1]) * rng.uniform(0.5, 2, shape[:-1]),
                          jnp.float32)
    got = losses._weighted_xent(logits, labels, weights)
    want = _reference_sums(logits, labels, weights)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Gradient of a combination of both outputs: the accuracy sum must contribute nothing.
    f = lambda fn: jax.grad(lambda x: 2.5 * fn(x, labels, weights)[0]  # noqa: E731
                            + 1.7 * fn(x, labels, weights)[1])(logits)
    np.testing.assert_allclose(f(losses._weighted_xent), f(_reference_sums), atol=1e-6)


def test_gradient_keeps_the_logits_dtype():
    logits = jnp.ones((3, 7), jnp.bfloat16)
    g = jax.grad(lambda x: losses._weighted_xent(x, jnp.array([0, 3, 6]), jnp.ones(3))[0])(logits)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(g, np.float32).sum(-1), 0, atol=1e-2)


def test_accuracy_counts_ties_as_argmax_does():
    # argmax takes the first maximum: a tie counts as correct only for the earliest class.
    logits = jnp.array([[1.0, 3.0, 3.0, 0.0]] * 4 + [[0.0, 0.0, 0.0, 0.0]] * 2)
    labels = jnp.array([1, 2, 0, 3, 0, 2])
    _, correct = losses._weighted_xent(logits, labels, jnp.ones(6))
    assert float(correct) == 2.0   # rows 0 (first of the tie) and 4 (first of all-equal)
    assert float(correct) == float(jnp.sum(jnp.argmax(logits, -1) == labels))


def test_glue_losses_weight_examples_and_divide_by_the_global_weight():
    logits = jnp.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    labels = jnp.array([0, 1, 1])
    w = jnp.array([1.0, 0.0, 1.0])  # the middle row is padding
    xent = -jax.nn.log_softmax(logits)[jnp.arange(3), labels]
    assert float(losses.classification_loss(logits, labels, w)) == pytest.approx(
        float((xent[0] + xent[2]) / 2), rel=1e-6)
    # Under pmap each device divides its slice's sum by the whole global batch's weight.
    assert float(losses.classification_loss(logits, labels, w, jnp.float32(8.0))) == pytest.approx(
        float((xent[0] + xent[2]) / 8), rel=1e-6)
    pred, target = jnp.array([1.0, 2.0, 5.0]), jnp.array([0.0, 4.0, 5.5])
    assert float(losses.regression_loss(pred, target, w)) == pytest.approx((1.0 + 0.25) / 2)
    assert float(losses.regression_loss(pred, target, jnp.zeros(3))) == 0.0  # no division by 0
