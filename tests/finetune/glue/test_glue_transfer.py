import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bertjax import optim
from bertjax.finetune import trainer, pretrained, transfer
from bertjax.finetune.glue import data, tasks
from bertjax.models import bert


def _cfg(**kw):
    return bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=120, num_layers=3, hidden_size=32, num_heads=2, intermediate_size=64,
        **kw))


def test_scalar_mix_is_gamma_times_softmax_weighted_sum():
    h = np.random.default_rng(0).normal(size=(4, 2, 3, 5)).astype(np.float32)
    s, gamma = np.array([0.3, -1.0, 2.0, 0.1], np.float32), np.float32(1.7)
    out = transfer.ScalarMix().apply({"params": {"scalar_weights": s, "gamma": gamma}}, h)
    w = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(out, gamma * np.einsum("k,kbth->bth", w, h), rtol=1e-5,
                               atol=1e-6)
    params = transfer.ScalarMix().init(jax.random.PRNGKey(0), h)["params"]
    np.testing.assert_allclose(transfer.ScalarMix().apply({"params": params}, h), h.mean(0),
                               rtol=1e-5, atol=1e-6)  # initialised as an equal mix


def test_partial_mode_trains_exactly_the_top_layers_and_head():
    cfg = _cfg()
    model = transfer.build_model("partial", cfg, 2)
    ids = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids)["params"])
    trainable, frozen = transfer.split_params(
        shapes, transfer.trainable_predicate("partial", cfg, trainable_layers=1))
    groups = lambda keys: sorted({"/".join(k.split("/")[:3]) for k in keys})  # noqa: E731
    assert groups(trainable) == ["bert/encoder/layer_2", "bert/pooler/dense", "classifier/bias",
                                 "classifier/kernel"]
    assert groups(frozen) == ["bert/embeddings/LayerNorm", "bert/embeddings/token_type_embeddings",
                              "bert/embeddings/word_embeddings", "bert/encoder/layer_0",
                              "bert/encoder/layer_1"]
    all_top = transfer.trainable_predicate("partial", cfg, trainable_layers=3)
    assert [k for k in traverse_util.flatten_dict(shapes, sep="/") if not all_top(k)] == [
        k for k in traverse_util.flatten_dict(shapes, sep="/") if k.startswith("bert/embeddings/")]
    with pytest.raises(ValueError, match="trainable_layers=4: expected 0..3"):
        transfer.trainable_predicate("partial", cfg, trainable_layers=4)
    with pytest.raises(ValueError, match="scan_layers=True"):
        transfer.trainable_predicate("partial", _cfg(scan_layers=True), trainable_layers=1)


def test_weight_decay_mask_excludes_layer_norm_bias_and_mix():
    """optim.decay_mask, the one rule, on the flat keys fine-tuning uses."""
    mask = optim.decay_mask({
        "bert/encoder/layer_0/attention/self/query/kernel": 0,
        "bert/encoder/layer_0/attention/self/query/bias": 0,
        "bert/embeddings/LayerNorm/scale": 0, "bert/embeddings/word_embeddings/embedding": 0,
        "scalar_mix/scalar_weights": 0, "scalar_mix/gamma": 0, "classifier/kernel": 0})
    assert sorted(k for k, v in mask.items() if v) == [
        "bert/embeddings/word_embeddings/embedding",
        "bert/encoder/layer_0/attention/self/query/kernel", "classifier/kernel"]


@pytest.mark.parametrize("mode", ["full", "feature"])
def test_decay_mask_agrees_with_the_former_glue_rule_on_every_glue_parameter(mode):
    """The rule glue/transfer.py had (decay unless the key ends in /bias or names LayerNorm or
    the scalar mix) and optim.decay_mask pick the same parameters of the real models."""
    cfg = _cfg()
    ids = jnp.zeros((1, 8), jnp.int32)
    model = transfer.build_model(mode, cfg, 3)
    flat = traverse_util.flatten_dict(jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), ids, ids, ids)["params"]), sep="/")
    former = {k: not (k.endswith("/bias") or "LayerNorm" in k or "scalar_mix" in k) for k in flat}
    assert optim.decay_mask(flat) == former
    assert any(former.values()) and not all(former.values())


def _steps(micro, glue_dir, glue_tokenizer, mode, n=3, **overrides):
    """n train steps on the SST-2 fixture; -> (initial params, final params, tuner, state,
    batch)."""
    root, _ = glue_dir
    config = micro("SST-2", mode=mode, warmup_fraction=0.0, **overrides)
    cfg = bert.BertConfig.from_dict(dict(config.model.to_dict(),
                                         vocab_size=glue_tokenizer.vocab_size))
    init = pretrained.Init(cfg, None, glue_tokenizer, "random")
    spec = tasks.get_task("SST-2")
    inputs = data.prepare_inputs(config, spec, tasks.load_task(spec, root), glue_tokenizer)
    tuner = trainer.FineTuner(config, init, inputs, 16)
    state = tuner.create_state(seed=0, lr=1e-2)
    before = jax.device_get(transfer.merge_params(state.params, state.frozen))
    rows, length = data.batch_plan(inputs.train, 16, inputs.buckets,
                                   np.random.default_rng(0))[0]
    b = tuner.put_batch(data.make_batch(inputs.train, rows, 16, length))
    for _ in range(n):  # one batch shape: one compile
        state, _ = tuner.dp.step(state, b)
    after = jax.device_get(transfer.merge_params(state.params, state.frozen))
    return (traverse_util.flatten_dict(before, sep="/"),
            traverse_util.flatten_dict(after, sep="/"), tuner, state, b)


@pytest.mark.slow
def test_feature_mode_leaves_the_encoder_bit_identical_and_skips_its_backward(
        micro, glue_dir, glue_tokenizer):
    before, after, tuner, state, b = _steps(micro, glue_dir, glue_tokenizer, "feature")
    enc_keys = [k for k in before if k.startswith("bert/")]
    assert enc_keys and all(np.array_equal(before[k], after[k]) for k in enc_keys)
    head = [k for k in before if not k.startswith("bert/")]
    assert {k.split("/")[0] for k in head} == {"scalar_mix", "dense", "classifier"}
    assert all(not np.array_equal(before[k], after[k]) for k in head)
    # The encoder is not in the optimizer at all: no Adam moments are kept for it.
    opt_keys = {k for leaf in jax.tree_util.tree_leaves(
        state.opt_state, is_leaf=lambda x: isinstance(x, dict)) if isinstance(leaf, dict)
        for k in leaf}
    assert opt_keys and not any(k.startswith("bert/") for k in opt_keys)
    # Nor is its gradient computed: before XLA optimises anything (so a gradient computed and
    # then dropped would still count), the feature-mode step costs about one encoder forward
    # pass, where full fine-tuning costs about three (forward and backward).
    flops = {"feature": tuner.dp.step.lower(state, b).cost_analysis()["flops"]}
    _, _, tuner, state, b = _steps(micro, glue_dir, glue_tokenizer, "full", n=0)
    flops["full"] = tuner.dp.step.lower(state, b).cost_analysis()["flops"]
    assert flops["feature"] < 0.5 * flops["full"], flops


def test_partial_mode_updates_only_the_top_layers(micro, glue_dir, glue_tokenizer):
    before, after, *_ = _steps(micro, glue_dir, glue_tokenizer, "partial", trainable_layers=1)
    changed = sorted({"/".join(k.split("/")[:3]) for k in before
                      if not np.array_equal(before[k], after[k])})
    assert changed == ["bert/encoder/layer_1", "bert/pooler/dense", "classifier/bias",
                       "classifier/kernel"]


def test_build_model_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode='frozen'"):
        transfer.build_model("frozen", _cfg(), 2)
    cfg = dataclasses.replace(_cfg(), hidden_dropout_rate=0.0)
    assert isinstance(transfer.build_model("full", cfg, 1), bert.BertForSequenceClassification)
