import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax import optim
from configs import pretrain


def _cfg(**kw):
    c = pretrain.get_config("tiny").optim
    c.update(kw)
    return c


def test_warmup_then_linear_decay_to_zero():
    sched = optim.make_schedule(_cfg(learning_rate=1e-4, warmup_steps=10), total_steps=110)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(5e-5)
    assert float(sched(10)) == pytest.approx(1e-4)
    assert float(sched(60)) == pytest.approx(5e-5)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-12)


def test_bert_linear_matches_run_pretraining_schedule():
    """BERT's optimization.py: decay 1e-4 * (1 - step/100) from step 0, warmup ramp
    1e-4 * step/10 for step < 10; at the end of warmup lr = peak * (1 - 10/100)."""
    sched = optim.make_schedule(_cfg(schedule="bert_linear", learning_rate=1e-4,
                                     warmup_steps=10), total_steps=100)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(5e-5)
    assert float(sched(9)) == pytest.approx(9e-5)
    assert float(sched(10)) == pytest.approx(9e-5)
    assert float(sched(55)) == pytest.approx(4.5e-5)
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-12)
    # The peak may be a traced value (the GLUE grid keeps it in the optimizer state).
    tx, sched2 = optim.make_optimizer(_cfg(schedule="bert_linear", warmup_steps=10), 100,
                                      peak_lr_in_state=True)
    assert float(sched2(55, 2e-4)) == pytest.approx(9e-5)


def test_decay_mask_excludes_layernorm_and_biases():
    params = {"bert": {"encoder": {"layer_0": {
        "output": {"dense": {"kernel": 1, "bias": 2}, "LayerNorm": {"scale": 3, "bias": 4}}}}},
        "cls": {"predictions": {"output_bias": 5}}}
    m = optim.decay_mask(params)
    out = m["bert"]["encoder"]["layer_0"]["output"]
    assert out["dense"]["kernel"] is True and out["dense"]["bias"] is False
    assert out["LayerNorm"]["scale"] is False and out["LayerNorm"]["bias"] is False
    assert m["cls"]["predictions"]["output_bias"] is False


def test_adamw_decays_kernels_not_biases():
    """With zero gradients only weight decay moves parameters."""
    tx, _ = optim.make_optimizer(_cfg(schedule="constant", learning_rate=0.1,
                                      weight_decay=0.5, grad_clip_norm=0.0), 10)
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "LayerNorm": {"scale": jnp.ones(2)}}
    state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    upd, _ = tx.update(zeros, state, params)
    np.testing.assert_allclose(upd["dense"]["kernel"], -0.05)
    np.testing.assert_allclose(upd["dense"]["bias"], 0.0)
    np.testing.assert_allclose(upd["LayerNorm"]["scale"], 0.0)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_by_name_reduces_a_quadratic(name):
    lr = 0.5 if name == "adagrad" else 0.05  # adagrad steps shrink fast
    tx, _ = optim.make_optimizer(_cfg(name=name, learning_rate=lr, schedule="constant"), 100)
    params = {"w": jnp.array([3.0, -2.0])}
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731
    start = float(loss(params))
    for _ in range(50):
        g = jax.grad(loss)(params)
        upd, state = tx.update(g, state, params)
        params = jax.tree_util.tree_map(lambda a, b: a + b, params, upd)
    assert float(loss(params)) < 0.5 * start


def test_gradient_clipping_bounds_the_update():
    tx, _ = optim.make_optimizer(_cfg(name="sgd", schedule="constant", learning_rate=1.0,
                                      grad_clip_norm=1.0), 10)
    params = {"w": jnp.zeros(4)}
    upd, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
    assert float(jnp.linalg.norm(upd["w"])) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("kw, msg", [(dict(name="adamax"), "optim.name='adamax'"),
                                     (dict(schedule="step"), "optim.schedule='step'"),
                                     (dict(learning_rate=0.0), "learning_rate=0.0")])
def test_bad_optimizer_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        optim.make_optimizer(_cfg(**kw), 10)


def test_peak_learning_rate_in_the_state_serves_a_grid_with_one_compiled_update():
    """make_optimizer(peak_lr_in_state=True): the same updates as an optimizer built for each
    learning rate, from one jitted update function."""
    cfg = _cfg(learning_rate=1.0, warmup_steps=2)
    tx, sched = optim.make_optimizer(cfg, 10, peak_lr_in_state=True)
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    grads = {"dense": {"kernel": jnp.full((2, 2), 0.3), "bias": jnp.full(2, -0.2)}}
    update = jax.jit(tx.update)
    for lr in (3e-4, 1e-2):
        fixed, fixed_sched = optim.make_optimizer(_cfg(learning_rate=lr, warmup_steps=2), 10)
        state = optim.set_peak_learning_rate(tx.init(params), lr)
        fixed_state = fixed.init(params)
        for step in range(4):
            upd, state = update(grads, state, params)
            want, fixed_state = fixed.update(grads, fixed_state, params)
            jax.tree_util.tree_map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12), upd, want)
            assert float(sched(step, lr)) == pytest.approx(float(fixed_sched(step)), rel=1e-6)
        assert float(optim.peak_learning_rate(state)) == pytest.approx(lr)
    assert update._cache_size() == 1
