"""The left-to-right objective (objective='ltr', preset `ltr`): its loss against a hand
computation, its config checks, the same update under pmap / sharded jit / FSDP, and tiny runs
on the built-in corpus (the loss falls, eval reports next-token perplexity, the checkpoint
records the objective and fine-tuning keeps the causal mask, resume is bitwise)."""
import functools
import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest
from pretrain_helpers import tiny_pretrain_config

from bertjax import checkpoint, losses, metrics, objectives, optim, parallel, train
from bertjax.data import ltr
from bertjax.models import bert
from configs import pretrain

VOCAB, SEQ, BATCH = 211, 16, 8


def _model(**kw):
    return bert.BertForPreTraining(bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=VOCAB, hidden_dropout_rate=0.0, attention_dropout_rate=0.0,
        max_position_embeddings=32, causal=True, **kw)))


def _batch(seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, SEQ + 1, batch)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, VOCAB, (batch, SEQ)).astype(np.int32) * mask
    ids[:, 0] = 2
    return ltr.next_token_batch({"input_ids": ids, "segment_ids": np.zeros_like(ids),
                                 "input_mask": mask, "nsp_label": np.zeros(batch, np.int32)})


def test_ltr_metrics_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    labels = np.array([[1, 4, 0], [2, 2, 3]])
    weights = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    m = losses.ltr_metrics(logits, labels, weights)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    assert float(m["ltr_loss_sum"]) == pytest.approx(float((nll * weights).sum()), rel=1e-6)
    assert float(m["ltr_count"]) == 4.0
    hits = (logits.argmax(-1) == labels) * weights
    assert float(m["ltr_correct"]) == float(hits.sum())
    s = objectives.LTR.summarize({k: float(v) for k, v in m.items()})
    assert s["ltr_perplexity"] == pytest.approx(math.exp(s["ltr_loss"]))


def test_ltr_loss_is_the_sum_of_next_token_losses_over_prefixes():
    """Each term by hand: the model run on the prefix x_0..x_t alone (the rest padding), its
    MLM-head logits at t, -log p(x_{t+1}); summed over the real next tokens."""
    model = _model()
    batch = _batch(batch=2)
    params = model.init(jax.random.PRNGKey(1), batch["input_ids"], batch["segment_ids"],
                        batch["input_mask"], batch["masked_positions"])["params"]
    sums = train._loss_sums(params, batch, jax.random.PRNGKey(0), model=model, use_nsp=False,
                            deterministic=True, collectives=parallel.ONE_DEVICE,
                            objective=objectives.LTR)
    prefix_logits = jax.jit(lambda ids, keep, t: model.apply(
        {"params": params}, ids, ids * 0, keep, t)[0][0, 0])
    total, count = 0.0, 0
    for r in range(2):
        n = int(batch["input_mask"][r].sum())
        for t in range(n - 1):
            keep = (np.arange(SEQ) <= t).astype(np.int32)[None]
            ids = batch["input_ids"][r:r + 1] * keep
            logits = np.asarray(prefix_logits(ids, keep, np.array([[t]], np.int32)), np.float64)
            logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            total -= float(logp[batch["input_ids"][r, t + 1]])
            count += 1
    assert float(sums["ltr_count"]) == count
    assert float(sums["ltr_loss_sum"]) == pytest.approx(total, rel=1e-5)
    assert "mlm_loss_sum" not in sums and "nsp_loss_sum" not in sums


def _run(mode, fsdp=False, devices=None, dtype="float32"):
    model = _model(dtype=dtype)
    tx, sched = optim.make_optimizer(ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
        momentum=0.9, grad_clip_norm=1.0, schedule="constant", warmup_steps=0)), 10)
    init = functools.partial(train.init_state, model=model, tx=tx, seq_len=SEQ,
                             max_predictions=SEQ)
    step = functools.partial(train.train_step, model=model, tx=tx, schedule=sched, grad_accum=1,
                             use_nsp=False, objective=objectives.LTR)
    dp = parallel.DataParallel(mode, step, jax.eval_shape(init, jax.random.PRNGKey(0)),
                               fsdp=fsdp, mesh=parallel.make_mesh(devices) if devices else None)
    state = dp.put_state(jax.jit(init)(jax.random.PRNGKey(0)))
    out = []
    for seed in range(3):
        state, m = dp.step(state, dp.put_batch(_batch(seed)))
        m = dp.metrics_to_host(m)
        out.append(float(m["ltr_loss_sum"] / m["ltr_count"]))
    return np.array(out)


@pytest.mark.slow  # ~2 min on the shared 2-core CPU: five compiles over 8 simulated devices
def test_pmap_sharded_jit_and_fsdp_give_the_one_device_update():
    one = _run("jit", devices=jax.devices()[:1])
    assert np.all(np.isfinite(one)) and one[-1] != one[0]
    for mode, fsdp in (("jit", False), ("jit", True), ("pmap", False)):
        np.testing.assert_allclose(_run(mode, fsdp=fsdp), one, rtol=2e-5, err_msg=mode)
    bf16 = _run("jit", devices=jax.devices()[:1], dtype="bfloat16")
    np.testing.assert_allclose(bf16, one, rtol=2e-2)  # bf16 compute, float32 loss


def test_config_checks_name_the_keys_to_set():
    c = pretrain.get_config("tiny")
    c.objective = "ltr"
    with pytest.raises(ValueError, match=r"objective='ltr' needs model.causal=True.*preset"):
        train.check_config(c)
    c.model.causal = True
    with pytest.raises(ValueError, match=r"objective='ltr' has no next-sentence prediction: "
                                         r"set data.nsp=False"):
        train.check_config(c)
    c.objective = "gpt"
    with pytest.raises(ValueError, match=r"objective='gpt': expected one of \['ltr', 'mlm'\]"):
        train.check_config(c)
    c = pretrain.get_config("tiny")
    c.model.causal = True
    with pytest.raises(ValueError, match=r"objective='mlm' needs model.causal=False"):
        train.check_config(c)
    ltr_cfg = pretrain.get_config("tiny,cpu_demo,ltr")
    assert train.check_config(ltr_cfg).causal
    assert [p.max_predictions for p in train.phases(ltr_cfg)] == [ltr_cfg.data.max_seq_len]


# ---------------------------------------------------------------------------------------------
# Tiny runs on the built-in corpus.

@pytest.fixture
def prepared_dir(default_prepared):
    return default_prepared


def _config(prepared_dir, **overrides):
    return tiny_pretrain_config(prepared_dir, "tiny,cpu_demo,ltr", **{
        "train.steps": 16, "train.log_every": 4, "train.eval_every": 16, "train.eval_steps": 2,
        "train.checkpoint_every": 8, "optim.learning_rate": 2e-3, **overrides})


def _rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split and "loss" in r]


@pytest.mark.slow
def test_tiny_ltr_run_learns_reports_perplexity_and_records_the_objective(tmp_path,
                                                                           prepared_dir):
    workdir = str(tmp_path / "ltr")
    result = train.train_and_evaluate(_config(prepared_dir), workdir)
    rows = _rows(workdir, "train")
    assert [r["step"] for r in rows] == [4, 8, 12, 16]
    # ln(30522) ~ 10.3 at init; 16 steps must clearly lower the next-token loss.
    assert rows[-1]["ltr_loss"] < rows[0]["ltr_loss"] - 1.0, rows
    assert "mlm_loss" not in rows[-1] and "nsp_loss" not in rows[-1]
    (ev,) = _rows(workdir, "eval")
    assert ev["step"] == 16 and np.isfinite(ev["ltr_loss"])
    assert ev["ltr_perplexity"] == pytest.approx(math.exp(ev["ltr_loss"]))
    assert "context_nats" not in ev  # the context probe is MLM-only
    assert result.last_eval["ltr_perplexity"] == pytest.approx(ev["ltr_perplexity"])

    _, cfg, _, meta = checkpoint.load_pretrained(workdir)
    assert cfg.causal and meta["objective"] == "ltr" and meta["config"]["objective"] == "ltr"
    # Fine-tuning models are built from the checkpoint's config: the causal mask stays.
    from bertjax.finetune import pretrained
    from configs import glue
    init = pretrained.resolve_init(glue.get_config("SST-2"), workdir)
    assert init.model_config.causal
    # Hugging Face BERT has no causal mask: the export refuses, writing nothing.
    from bertjax.convert import hf
    with pytest.raises(hf.ConversionError, match=r"causal attention \(model.causal=True"):
        hf.export_checkpoint(workdir, tmp_path / "hf", skip_tokenizer=True)
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_ltr_run_stopped_by_its_budget_resumes_bitwise(tmp_path, prepared_dir):
    """An uninterrupted 6-step run against one stopped by train.budget_flops after step 3 and
    resumed in its workdir: the same losses at every step and the same final parameters."""
    over = {"train.steps": 6, "train.log_every": 1, "train.eval_every": 1000,
            "train.checkpoint_every": 1000, "data.packing": "sequences",
            "optim.learning_rate": 1e-3}
    cfg = _config(prepared_dir, **over)
    phase = train.phases(cfg)[0]
    per_step = cfg.train.batch_size * metrics.pretraining_flops_per_sequence(
        train.check_config(cfg), phase.seq_len, phase.max_predictions)
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    train.train_and_evaluate(cfg, ref)
    first = train.train_and_evaluate(
        _config(prepared_dir, **over, **{"train.budget_flops": 2.5 * per_step}), cut)
    assert first.step == 3 and first.budget["stopped_by_budget"]
    assert train.train_and_evaluate(cfg, cut).step == 6
    a = {r["step"]: r["loss"] for r in _rows(ref, "train")}
    b = {r["step"]: r["loss"] for r in _rows(cut, "train")}
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert a == b
    pa, pb = (checkpoint.load_pretrained(w)[0] for w in (ref, cut))
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
