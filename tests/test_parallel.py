"""pmap vs sharded jit vs one device, grad accumulation and FSDP: the same update."""
import functools

import jax
import ml_collections
import numpy as np
import pytest

from bertjax import optim, parallel, train
from bertjax.models import bert

VOCAB, SEQ, PREDS, BATCH = 300, 32, 6, 16


def _model():
    cfg = bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=VOCAB, hidden_dropout_rate=0.0, attention_dropout_rate=0.0,
        max_position_embeddings=64))
    return bert.BertForPreTraining(cfg)


def _optim(name="adamw"):
    c = ml_collections.ConfigDict(dict(
        name=name, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
        momentum=0.9, grad_clip_norm=1.0, schedule="warmup_linear_decay", warmup_steps=2))
    return optim.make_optimizer(c, total_steps=10)


def _batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lengths = rng.integers(8, SEQ + 1, BATCH)
        mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
        ids = rng.integers(5, VOCAB, (BATCH, SEQ)).astype(np.int32) * mask
        seg = ((np.arange(SEQ)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
        npred = rng.integers(1, PREDS + 1, BATCH)  # different counts per row: tests weighting
        w = (np.arange(PREDS)[None] < npred[:, None]).astype(np.float32)
        pos = (rng.integers(1, 8, (BATCH, PREDS)) * w).astype(np.int32)
        out.append(dict(input_ids=ids, segment_ids=seg, input_mask=mask, masked_positions=pos,
                        masked_ids=(rng.integers(5, VOCAB, (BATCH, PREDS)) * w).astype(np.int32),
                        masked_weights=w, nsp_label=rng.integers(0, 2, BATCH).astype(np.int32)))
    return out


def _run(mode, grad_accum=1, fsdp=False, devices=None, opt="adamw"):
    model = _model()
    tx, sched = _optim(opt)
    init = functools.partial(train.init_state, model=model, tx=tx, seq_len=SEQ,
                             max_predictions=PREDS)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    step = functools.partial(train.train_step, model=model, tx=tx, schedule=sched,
                             grad_accum=grad_accum, use_nsp=True)
    dp = parallel.DataParallel(mode, step, abstract, fsdp=fsdp,
                               mesh=parallel.make_mesh(devices) if devices else None)
    state = dp.put_state(jax.jit(init)(jax.random.PRNGKey(0)))
    losses = []
    for b in _batches():
        state, out = dp.step(state, dp.put_batch(b))
        out = dp.metrics_to_host(out)
        losses.append(float(out["mlm_loss_sum"] / out["mlm_count"]
                            + out["nsp_loss_sum"] / out["nsp_count"]))
    return np.array(losses), jax.device_get(dp.get_state(state).params)


def _close(a, b, tol=2e-5):
    np.testing.assert_allclose(a[0], b[0], rtol=tol, atol=tol)
    for x, y in zip(jax.tree_util.tree_leaves(a[1]), jax.tree_util.tree_leaves(b[1])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=tol)


@pytest.fixture(scope="module")
def single():
    assert jax.device_count() == 8, "conftest should simulate 8 devices"
    return _run("jit", devices=jax.devices()[:1])


def test_sharded_jit_on_8_devices_matches_one_device(single):
    _close(_run("jit"), single)


def test_pmap_on_8_devices_matches_one_device(single):
    _close(_run("pmap"), single)


def test_fsdp_matches_one_device(single):
    out = _run("jit", fsdp=True)
    _close(out, single)


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(single):
    _close(_run("jit", grad_accum=2), single)
    _close(_run("pmap", grad_accum=2), single)


def test_losses_change_and_fall(single):
    losses, _ = single
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_fsdp_really_shards_large_leaves():
    model = _model()
    tx, _ = _optim()
    abstract = jax.eval_shape(functools.partial(
        train.init_state, model=model, tx=tx, seq_len=SEQ, max_predictions=PREDS),
        jax.random.PRNGKey(0))
    sh = parallel.state_shardings(abstract, parallel.make_mesh(), fsdp=True)
    emb = sh.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert emb.spec != jax.sharding.PartitionSpec()
    assert parallel.state_shardings(abstract, parallel.make_mesh(), fsdp=False).params[
        "bert"]["embeddings"]["word_embeddings"]["embedding"].spec == jax.sharding.PartitionSpec()


def test_indivisible_batch_is_rejected_before_compiling():
    with pytest.raises(ValueError, match=r"batch_size=12 must be divisible by devices x "
                                         r"grad_accum_steps = 8 x 1"):
        parallel.check_batch_divisible(12, 1, "jit")
    with pytest.raises(ValueError, match="8 x 2 = 16"):
        parallel.check_batch_divisible(24, 2, "pmap")


def test_fsdp_gathers_parameters_not_activations():
    # Sharded parameters must be all-gathered for the forward/backward passes while the
    # activations stay split over the batch, as in plain data parallelism.
    import re
    model = _model()
    tx, sched = _optim()
    init = functools.partial(train.init_state, model=model, tx=tx, seq_len=SEQ,
                             max_predictions=PREDS)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    step = functools.partial(train.train_step, model=model, tx=tx, schedule=sched,
                             grad_accum=1, use_nsp=True)
    dp = parallel.DataParallel("jit", step, abstract, fsdp=True)
    state = dp.put_state(jax.jit(init)(jax.random.PRNGKey(0)))
    hlo = dp.step.lower(state, dp.put_batch(_batches(1)[0])).compile().as_text()
    gathered = [(dtype, tuple(int(d) for d in dims.split(",") if d))
                for kind in re.findall(r"= (\(?[^=]*?) all-gather(?:-start)?\(", hlo)
                for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", kind)]
    param_shapes = {x.shape for x in jax.tree_util.tree_leaves(abstract.params)}
    float_gathers = [g for g in gathered if g[0].startswith(("f", "bf"))]
    assert float_gathers, "FSDP should all-gather the sharded parameters"
    assert all(shape in param_shapes for _, shape in float_gathers), float_gathers


def test_mode_check_names_the_key_and_refuses_fsdp_under_pmap():
    parallel.check_mode("jit", True)
    with pytest.raises(ValueError, match=r"config.parallel.mode='vmap': expected one of"):
        parallel.check_mode("vmap", False, key="config.parallel")
    with pytest.raises(ValueError, match=r"parallel.fsdp=True needs parallel.mode='jit'"):
        parallel.check_mode("pmap", True)
