"""End-to-end pretraining on the built-in default corpus (tiny model, CPU)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pretrain_helpers import TEST_SHAPES, as_flags, tiny_pretrain_config

from bertjax import train
from configs import pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def prepared_dir(default_prepared):
    """The default corpus, prepared once for the session (tests/conftest.py)."""
    return default_prepared


def _config(prepared_dir, **overrides):
    return tiny_pretrain_config(prepared_dir, **{
        "train.steps": 30, "train.log_every": 10, "train.eval_every": 30, "train.eval_steps": 2,
        "train.checkpoint_every": 15, "optim.learning_rate": 2e-3, "optim.warmup_steps": 5,
        **overrides})


def _rows(workdir, split="train"):
    path = os.path.join(workdir, "metrics.jsonl")
    rows = [json.loads(x) for x in open(path, encoding="utf-8")]
    return [r for r in rows if r["split"] == split and "loss" in r]


@pytest.mark.slow
def test_tiny_run_lowers_the_loss_and_checkpoints_everything(tmp_path, prepared_dir):
    workdir = str(tmp_path / "run")
    result = train.train_and_evaluate(_config(prepared_dir), workdir)
    assert result.step == 30
    rows = _rows(workdir)
    assert [r["step"] for r in rows] == [10, 20, 30]
    # ln(30522) ~ 10.3 at init; 30 steps of the tiny model must clearly lower it.
    assert rows[-1]["mlm_loss"] < rows[0]["mlm_loss"] - 1.0, rows
    for key in ("mlm_accuracy", "nsp_loss", "nsp_accuracy", "learning_rate", "grad_norm",
                "seq_per_s", "tokens_per_s", "step_time_s"):
        assert np.isfinite(rows[-1][key]), key
    assert rows[-1]["mfu"] is None  # CPU: no peak FLOPs in the table
    evals = _rows(workdir, "eval")
    assert evals and evals[-1]["step"] == 30 and np.isfinite(evals[-1]["mlm_loss"])
    assert result.last_eval["mlm_loss"] == pytest.approx(evals[-1]["mlm_loss"])
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(workdir, "tensorboard")))

    # The checkpoint holds everything needed to continue.
    step_dir = os.path.join(workdir, "checkpoints", "30")
    items = set(os.listdir(step_dir))
    assert {"params", "train_state", "data_iter", "metadata"} <= items, items
    assert "process_0-of-1.json" in os.listdir(os.path.join(step_dir, "data_iter"))
    from bertjax import checkpoint
    params, cfg, tok, meta = checkpoint.load_pretrained(workdir)
    assert cfg.size == "tiny" and tok["vocab_size"] == 30522 and "sha256" in tok
    assert meta["config"]["train"]["steps"] == 30
    assert set(params) == {"bert", "cls"}

    # Same workdir, more steps: resumes at 30 instead of starting over.
    result = train.train_and_evaluate(_config(prepared_dir, **{"train.steps": 35}), workdir)
    assert result.step == 35
    assert [r["step"] for r in _rows(workdir)][-2:] == [30, 35]


def _cli(workdir, prepared_dir, steps, extra=()):
    # Kept at seq 64 x batch 16 (not TEST_SHAPES): the SIGKILL below must land between steps 9
    # and 12, and faster steps would make that race tighter.
    shapes = {**TEST_SHAPES, "data.max_seq_len": 64, "data.max_predictions_per_seq": 10,
              "train.batch_size": 16, "train.async_checkpointing": True,
              "train.checkpoint_every": 4, "optim.warmup_steps": 3}
    args = [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
            f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny",
            f"--workdir={workdir}", f"--config.data.prepared_dir={prepared_dir}",
            *as_flags(shapes), f"--config.train.steps={steps}", *extra]
    env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return args, env


def _losses(workdir):
    return {r["step"]: r["loss"] for r in _rows(workdir)}


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path, prepared_dir):
    # prepared_dir is prepared (session fixture): both runs only train.
    ref = str(tmp_path / "ref")
    args, env = _cli(ref, prepared_dir, 12)
    subprocess.run(args, env=env, check=True, capture_output=True)

    killed = str(tmp_path / "killed")
    args, env = _cli(killed, prepared_dir, 12)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 once step 9 is logged
        if os.path.exists(os.path.join(killed, "metrics.jsonl")) and 9 in _losses(killed):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Checkpoint 8 is written asynchronously: the kill may land before or during its save,
    # in which case the run resumes from checkpoint 4 (a partial save must not be used).
    saved = [int(d) for d in os.listdir(os.path.join(killed, "checkpoints")) if d.isdigit()]
    assert saved and max(saved) in (4, 8), saved
    resumed_from = max(saved)
    assert 12 not in _losses(killed) and max(_losses(killed)) > resumed_from
    subprocess.run(args, env=env, check=True, capture_output=True)
    a, b = _losses(ref), _losses(killed)
    assert sorted(a) == list(range(1, 13))
    for step in range(resumed_from + 1, 13):  # after the restart: bitwise on CPU
        assert a[step] == b[step], (step, a[step], b[step])


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, prepared_dir):
    workdir = str(tmp_path / "term")
    args, env = _cli(workdir, prepared_dir, 10_000, extra=["--config.train.checkpoint_every=1000"])
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and len(_losses(workdir)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
    assert steps and max(steps) >= 3 and max(steps) < 1000
    assert b"preempted at step" in err


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared_dir):
    workdir = str(tmp_path / "nan")
    cfg = _config(prepared_dir, **{"optim.learning_rate": 1e30, "optim.schedule": "constant",
                                   "optim.grad_clip_norm": 0.0, "train.log_every": 1,
                                   "train.checkpoint_every": 1, "train.steps": 6})
    with pytest.raises(FloatingPointError, match=r"non-finite .* at step \d+; .*last good "
                                                 r"checkpoint \(step \d+\)"):
        train.train_and_evaluate(cfg, workdir)
    import orbax.checkpoint as ocp
    from bertjax import checkpoint
    steps = ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).all_steps()
    params, _, _, _ = checkpoint.load_pretrained(workdir)
    import jax
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(params)), steps


@pytest.mark.parametrize("overrides, message", [
    ({"train.batch_size": 12}, r"batch_size=12 must be divisible by devices x grad_accum"),
    ({"model.vocab_size": 1000}, r"1000"),
    ({"optim.name": "adamax"}, r"optim.name='adamax'"),
    ({"model.num_heads": 3}, r"multiple of num_heads=3"),
    ({"data.max_seq_len": 1024}, r"sequence length 1024 exceeds"),
])
def test_bad_configs_rejected_before_anything_runs(tmp_path, prepared_dir, overrides, message):
    workdir = tmp_path / "bad"
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_config(prepared_dir, **overrides), str(workdir))
    assert not (workdir / "checkpoints").exists()


def test_unknown_config_key_is_rejected():
    c = pretrain.get_config("tiny")
    c.lock()
    with pytest.raises(AttributeError, match="batchsize"):
        c.train.batchsize = 3


@pytest.mark.slow
def test_reusing_a_workdir_with_an_incompatible_config_is_an_error(tmp_path, prepared_dir):
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(_config(prepared_dir, **{"train.steps": 2}), workdir)
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(ValueError, match=r"different config \(model.hidden_dropout_rate: 0.1 -> 0.0\)"):
        train.train_and_evaluate(
            _config(prepared_dir, **{"train.steps": 4, "model.hidden_dropout_rate": 0.0}), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


@pytest.mark.slow
def test_stop_at_escape_ends_the_run_after_the_first_eval_off_the_plateau(
        tmp_path, prepared_dir, monkeypatch):
    from bertjax import context_probe
    over = {"train.stop_at_escape": True, "train.eval_every": 10}
    # A threshold every eval reaches: the run stops (with a checkpoint) at the first eval.
    monkeypatch.setattr(context_probe, "ESCAPE_NATS", -100.0)
    result = train.train_and_evaluate(_config(prepared_dir, **over), str(tmp_path / "low"))
    assert result.step == 10 and not result.preempted
    assert [r["step"] for r in _rows(str(tmp_path / "low"), "eval")] == [10]
    assert "10" in os.listdir(tmp_path / "low" / "checkpoints")
    # One no eval reaches: the run goes to train.steps as without the flag.
    monkeypatch.setattr(context_probe, "ESCAPE_NATS", 100.0)
    result = train.train_and_evaluate(_config(prepared_dir, **over), str(tmp_path / "high"))
    assert result.step == 30
    assert [r["step"] for r in _rows(str(tmp_path / "high"), "eval")] == [10, 20, 30]
