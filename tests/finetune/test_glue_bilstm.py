"""GLUE's and own data's `head='bilstm'` (issue 20, Table 5's "+ BiLSTM"): the model, its
padding invariance, that it learns, the config fields and their checks, the fingerprint of
linear-head configs, and the pretraining_tasks study's "+ BiLSTM" row."""
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import study
from bertjax.finetune import grid, pretrained, transfer
from bertjax.finetune.glue import kind as glue_kind
from bertjax.models import bert, heads
from configs import finetune as finetune_config
from configs import pretrain

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "glue"))
from glue_fixtures import write_task  # noqa: E402

VOCAB, LENGTH = 40, 12


def _cfg(causal=False):
    return bert.BertConfig.from_dict(bert.model_config(
        "tiny", vocab_size=VOCAB, num_layers=1, hidden_size=16, num_heads=2,
        intermediate_size=32, hidden_dropout_rate=0.0, attention_dropout_rate=0.0,
        causal=causal))


def _batch(n=4, lengths=(12, 7, 3, 1), seed=0):
    r = np.random.default_rng(seed)
    ids = r.integers(1, VOCAB, (n, LENGTH)).astype(np.int32)
    mask = (np.arange(LENGTH)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    segs = (np.arange(LENGTH)[None] >= np.asarray(lengths)[:, None] // 2).astype(np.int32)
    return ids * mask, segs * mask, mask


def _init(model, ids, segs, mask):
    return jax.jit(model.init)(jax.random.PRNGKey(0), ids, segs, mask)["params"]


@pytest.mark.parametrize("num_labels", [3, 1])
def test_shapes_and_parameters(num_labels):
    model = transfer.build_model("full", _cfg(), num_labels, head="bilstm", lstm_hidden=8)
    assert isinstance(model, heads.BertForSequenceBiLSTM)
    ids, segs, mask = _batch()
    # Shapes only: traced, never compiled.
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, segs, mask)["params"]
    layers = params["summary"]["bilstm"]
    assert sorted(layers) == ["layer_0", "layer_1"]  # two layers, as the paper's
    assert layers["layer_0"]["forward"]["cell"]["ii"]["kernel"].shape == (16, 8)  # encoder in
    assert layers["layer_1"]["backward"]["cell"]["ii"]["kernel"].shape == (16, 8)  # 2 x 8 in
    assert params["classifier"]["kernel"].shape == (16, num_labels)  # [fwd 8, bwd 8] -> labels
    out = jax.eval_shape(lambda p: model.apply({"params": p}, ids, segs, mask), params)
    assert out.dtype == jnp.float32
    assert out.shape == ((4, num_labels) if num_labels > 1 else (4,))
    # lstm_hidden=0: the encoder's hidden size per direction.
    wide = transfer.build_model("partial", _cfg(), 2, head="bilstm")
    wide = jax.eval_shape(wide.init, jax.random.PRNGKey(0), ids, segs, mask)["params"]
    assert wide["summary"]["bilstm"]["layer_0"]["forward"]["cell"]["ii"]["kernel"].shape == (
        16, 16)
    assert isinstance(transfer.build_model("full", _cfg(), 2), bert.BertForSequenceClassification)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.slow
def test_padding_does_not_change_the_logits(causal):
    model = transfer.build_model("full", _cfg(causal), 2, head="bilstm", lstm_hidden=8)
    ids, segs, mask = _batch()
    params = _init(model, ids, segs, mask)
    apply = jax.jit(lambda i, s, m: model.apply({"params": params}, i, s, m))
    out = np.asarray(apply(ids, segs, mask))
    # The same rows padded 9 positions further, with junk ids and segments in the padding.
    pad = lambda a, v: np.pad(a, ((0, 0), (0, 9)), constant_values=v)  # noqa: E731
    ids2, segs2, mask2 = pad(ids, 0), pad(segs, 0), pad(mask, 0)
    junk = np.random.default_rng(1).integers(1, VOCAB, ids2.shape).astype(np.int32)
    ids2 = np.where(mask2 > 0, ids2, junk)
    segs2 = np.where(mask2 > 0, segs2, 1)
    out2 = np.asarray(apply(ids2, segs2, mask2))
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-6)
    # Changing a real token does change them (the check above can fail).
    ids3 = ids.copy()
    ids3[1, 3] = ids[1, 3] % (VOCAB - 1) + 1
    out3 = np.asarray(apply(ids3, segs, mask))
    assert np.abs(out3[1] - out[1]).max() > 1e-6
    np.testing.assert_allclose(out3[0], out[0], rtol=1e-6, atol=1e-7)  # other rows: same


def test_summary_is_the_forward_last_and_backward_first_states():
    """The pooled vector is [forward state at the last real token, backward state at the
    first], read from the BiLSTM's own per-token outputs."""
    from bertjax.models.bilstm import BiLSTM, BiLSTMSummary
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6, 5)), jnp.float32)
    mask = jnp.asarray(np.arange(6)[None] < np.array([[6], [2], [0]]), jnp.int32)
    summary = BiLSTMSummary(4)
    p = jax.jit(summary.init)(jax.random.PRNGKey(0), x, mask)["params"]
    got = np.asarray(jax.jit(summary.apply)({"params": p}, x, mask))
    per_token = np.asarray(jax.jit(BiLSTM(4).apply)({"params": p["bilstm"]}, x, mask))
    np.testing.assert_array_equal(got[0], np.concatenate([per_token[0, 5, :4],
                                                          per_token[0, 0, 4:]]))
    np.testing.assert_array_equal(got[1], np.concatenate([per_token[1, 1, :4],
                                                          per_token[1, 0, 4:]]))
    assert np.all(got[2] == 0)  # a row of padding (an eval batch's filler)


def _synthetic(num_labels, n=32, seed=0):
    """Label: does token 5 occur in the row (classification); regression: its count / 3."""
    r = np.random.default_rng(seed)
    lengths = r.integers(3, LENGTH + 1, n)
    ids, segs, mask = _batch(n, lengths, seed)
    count = ((ids == 5) & (mask > 0)).sum(-1)
    if num_labels == 1:
        return ids, segs, mask, (count / 3.0).astype(np.float32)
    return ids, segs, mask, (count > 0).astype(np.int32)


@pytest.mark.parametrize("task", ["SST-2", "STS-B"])
@pytest.mark.slow
def test_the_head_learns_a_tiny_task(task):
    spec = glue_kind.KIND.get_spec(task)
    ids, segs, mask, labels = _synthetic(spec.num_labels)
    c = finetune_config.get_config(f"{task},tiny")
    c.update(head="bilstm", lstm_hidden=8)
    model = glue_kind.KIND.build_model(c, _cfg(), spec)
    assert isinstance(model, heads.BertForSequenceBiLSTM)
    loss_fn = glue_kind.KIND.loss_fn(spec)
    batch = {"labels": jnp.asarray(labels), "weights": jnp.ones(len(labels), jnp.float32)}
    params = _init(model, ids, segs, mask)
    tx = optax.adam(3e-3)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            out = model.apply({"params": p}, ids, segs, mask)
            return loss_fn(out, batch, jnp.float32(len(labels)))
        value, g = jax.value_and_grad(loss)(params)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for _ in range(30):
        params, state, value = step(params, state)
        losses.append(float(value))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("task", ["SST-2", "all", "custom", "IMDB"])
def test_config_fields_and_their_checks(task):
    c = finetune_config.get_config(f"{task},tiny")
    assert (c.head, c.lstm_hidden) == ("linear", 0)
    if task == "custom":
        c.update(train_file="t.csv", dev_file="d.csv")
    grid.validate_config(c)  # the defaults pass
    for key, value, message in [
            ("head", "gru", r"^config.head='gru': expected one of \('linear', 'bilstm'\)$"),
            ("lstm_hidden", -1, r"^config.lstm_hidden=-1: expected 0 \(the encoder's hidden "
                                r"size\) or a positive number of units per direction$")]:
        bad = finetune_config.get_config(f"{task},tiny")
        bad.update(train_file="t.csv", dev_file="d.csv") if task == "custom" else None
        bad[key] = value
        with pytest.raises(ValueError, match=message) as e:
            grid.validate_config(bad)
        assert "\n" not in str(e.value)
    feature = finetune_config.get_config(f"{task},tiny,feature")
    feature.update(train_file="t.csv", dev_file="d.csv") if task == "custom" else None
    feature.head = "bilstm"
    with pytest.raises(ValueError, match="config.head='bilstm' with config.mode='feature'"):
        grid.validate_config(feature)


def test_linear_head_configs_keep_their_fingerprint():
    """Finished GLUE runs from before the head fields existed stay cached: a linear-head
    config hashes as it did without the fields; a BiLSTM one differs."""
    init = pretrained.Init(model_config=None, bert_params=None, source="random",
                           tokenizer=types.SimpleNamespace(identity=lambda: {"sha256": "x"}))
    c = finetune_config.get_config("SST-2,tiny")
    old = finetune_config.get_config("SST-2,tiny")
    del old["head"], old["lstm_hidden"]
    assert grid.config_fingerprint(c, init) == grid.config_fingerprint(old, init)
    c.head = "bilstm"
    assert grid.config_fingerprint(c, init) != grid.config_fingerprint(old, init)
    # SQuAD's (and CoNLL's) configs always had the fields: they stay in its fingerprint.
    squad = finetune_config.get_config("SQuAD,tiny")
    squad_old = finetune_config.get_config("SQuAD,tiny")
    del squad_old["head"], squad_old["lstm_hidden"]
    assert grid.config_fingerprint(squad, init) != grid.config_fingerprint(squad_old, init)


def test_pretraining_tasks_study_has_the_bilstm_row_for_the_ltr_point():
    s = pretrain.get_study("pretraining_tasks")
    ltr = pretrain.LTR_POINT
    assert s["points"][2] == ltr and list(s["modes"]) == ["full"]
    (v,) = study.variants_of(s, ltr, s["modes"])
    assert v["label"] == "+ BiLSTM"
    assert v["modes"] == {"full": {"mode": "full", "head": "bilstm"}}
    assert v["modes"]["full"] == pretrain.GLUE_MODES["full_bilstm"]
    assert study.variants_of(s, {}, s["modes"]) == []  # MLM + NSP: no second row
    assert study.variants_of(s, ltr, {"feature": {}}) == []  # --modes without full
    # The variant's config is a valid fine-tuning config with the BiLSTM head.
    c = study._glue_config(finetune_config.get_config("all,tiny"), "SST-2", v["modes"]["full"])
    assert (c.task, c.mode, c.head) == ("SST-2", "full", "bilstm")
    grid.validate_config(c)
    # The transfer study keeps its three modes (no BiLSTM one).
    assert list(pretrain.get_study("transfer")["modes"]) == ["full", "feature", "partial"]


def _fake_results(cfg, workdir):
    """grid.run's results.json, its score saying which head ran (0.5 BiLSTM, 0.25 linear)."""
    score = 0.5 if cfg.head == "bilstm" else 0.25
    run = {"learning_rate": 1e-3, "batch_size": 16, "dev": {"spearman": score}}
    r = {"metrics": {"pearson": score, "spearman": score}, "primary": "spearman",
         "selected": {"learning_rate": 1e-3, "batch_size": 16}, "runs": [run]}
    path = workdir / cfg.task / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r))


def test_study_writes_the_bilstm_row_beside_the_papers(tmp_path, monkeypatch):
    """run_study with the pretraining and the fine-tuning stubbed: the LTR point is
    fine-tuned a second time with head=bilstm (its own directory), and the table has that
    row, named after the point, in the columns of the paper's "+ BiLSTM" row."""
    import pathlib
    calls = []

    def fake_run(cfg, glue_dir, init, workdir, tokenizer=""):
        calls.append((pathlib.Path(workdir).relative_to(tmp_path).as_posix(), cfg.head))
        _fake_results(cfg, pathlib.Path(workdir))

    def fake_train(cfg, workdir):
        os.makedirs(workdir, exist_ok=True)
        ev = {"ltr_loss": 3.0} if cfg.objective == "ltr" else {"mlm_loss": 3.0}
        return types.SimpleNamespace(step=3, last_train={}, last_eval=ev, budget=None,
                                     preempted=False)

    monkeypatch.setattr(grid, "run", fake_run)
    write_task(tmp_path / "glue", "STS-B")
    glue = finetune_config.get_config("all,tiny")
    cfg = pretrain.get_config("tiny")
    out = study.run_study("pretraining_tasks", pretrain.get_study("pretraining_tasks"), cfg,
                          glue, str(tmp_path / "glue"), str(tmp_path / "s"), ["STS-B"],
                          train_fn=fake_train, baselines_dir=str(tmp_path / "r"))
    ltr = "objective=ltr,causal=True,nsp=False"
    assert [r["point"] for r in out["rows"][:4]] == ["base", "nsp=False", ltr,
                                                     f"{ltr} + BiLSTM"]
    assert [r["init"] for r in out["rows"]] == ["pretrained"] * 4 + ["random"] * 2
    assert (f"s/{ltr}/glue_full_bilstm", "bilstm") in calls
    assert sorted(h for _, h in calls) == ["bilstm"] + ["linear"] * 5  # 3 points, 2 baselines
    bilstm, linear = out["rows"][3], out["rows"][2]
    assert bilstm["STS-B spearman"] == 50.0 and linear["STS-B spearman"] == 25.0
    assert bilstm["ltr_loss"] == linear["ltr_loss"] == 3.0  # the same checkpoint
    md = (tmp_path / "s" / "study.md").read_text()
    lines = md.splitlines()
    measured = next(i for i, line in enumerate(lines) if f"| {ltr} + BiLSTM |" in line)
    paper = next(i for i, line in enumerate(lines) if "paper: + BiLSTM" in line)
    assert measured < paper and "84.9" in lines[paper]  # the paper's SQuAD F1 for + BiLSTM
    ref = next(r for r in out["reference_rows"] if r["point"].startswith("paper: + BiLSTM"))
    assert set(ref) - {"point", "init"} <= set(out["columns"])  # the same column names


@pytest.mark.slow  # a real fine-tuning run (compiles a train and an eval step)
@pytest.mark.parametrize("task", ["SST-2", "STS-B"])
def test_finetune_run_with_the_bilstm_head(tmp_path, task):
    """grid.run end to end on the fixture task with head=bilstm: the run records the head
    and its dev metrics are finite."""
    from glue_fixtures import micro_config
    write_task(tmp_path / "glue", task)
    c = micro_config(task, num_seeds=1, max_steps=3, predict_test=False, head="bilstm",
                     lstm_hidden=8)
    grid.run(c, str(tmp_path / "glue"), "", str(tmp_path / "w"))
    r = json.loads((tmp_path / "w" / task / "results.json").read_text())
    assert (r["config"]["head"], r["mode"]) == ("bilstm", "full")
    assert r["metrics"] and all(np.isfinite(v) for v in r["metrics"].values())
