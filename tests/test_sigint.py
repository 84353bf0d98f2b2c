"""Ctrl-C (SIGINT) as a preemption (bertjax/preemption.py, bertjax/cli.py).

The first Ctrl-C inside the training loop saves at the next step boundary and exits 130; before
the loop, or a second time, it stops at once (one line, exit 130) and leaves every finished
checkpoint intact. The subprocess tests send SIGINT to the whole process group, as a terminal's
Ctrl-C does, and check that a rerun reproduces the uninterrupted run's losses bitwise (CPU)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from pretrain_helpers import TEST_SHAPES, as_flags
from test_train import _losses

from bertjax import checkpoint, preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


# ---------------------------------------------------------------------------------------------
# The flag alone (fast): signals sent to this process.
# ---------------------------------------------------------------------------------------------
def test_first_ctrl_c_in_the_loop_sets_the_flag_and_a_second_raises():
    before = signal.getsignal(signal.SIGINT)
    with preemption.StopFlag() as stop:
        with stop.at_step_boundaries():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs between bytecodes
            assert stop.reached(1) and stop.signal == "SIGINT"
            assert preemption.stopped_by() == "SIGINT"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_before_the_loop_raises_at_once_and_still_stops_the_loop():
    with preemption.StopFlag() as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        # Had that KeyboardInterrupt been swallowed (raised inside a gc callback, where Python
        # ignores it), the loop would stop at its first boundary.
        assert stop.reached(1)


def test_sigterm_only_stops_inside_the_loop():
    with preemption.StopFlag() as stop:
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        with stop.at_step_boundaries():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert stop.reached(3) and stop.signal == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ---------------------------------------------------------------------------------------------
# The entry point, interrupted as a user does.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")  # the module-scoped `reference` run uses it
def prepared_dir(default_prepared):
    """The built-in corpus, prepared once for the session (the runs below only train)."""
    return default_prepared


def _args(workdir, prepared_dir, *extra):
    return [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
            f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny",
            f"--workdir={workdir}", f"--config.data.prepared_dir={prepared_dir}",
            *as_flags({**TEST_SHAPES, "train.steps": STEPS, "train.eval_every": 3,
                       "train.eval_steps": 40, "train.checkpoint_every": 2,
                       "train.async_checkpointing": True, "optim.warmup_steps": 3}), *extra]


_ENV = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="", JAX_PLATFORMS="cpu")


def _run(workdir, prepared_dir, *extra):
    proc = subprocess.run(_args(workdir, prepared_dir, *extra), env=_ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prepared_dir):
    """The uninterrupted run's losses (and eval rows) per step."""
    workdir = str(tmp_path_factory.mktemp("ref") / "run")
    _run(workdir, prepared_dir)
    return _losses(workdir)


def _interrupt(workdir, prepared_dir, *extra, after_step, signals=1, gap_s=0.0):
    """Start a run, Ctrl-C it (`signals` times, `gap_s` apart) once `after_step` is logged."""
    proc = subprocess.Popen(_args(workdir, prepared_dir, *extra), env=_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as in a terminal
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and \
                    after_step in _losses(workdir):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        for i in range(signals):
            if i:
                time.sleep(gap_s)
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:  # the first one's stop has already finished
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _saved(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _resume_matches(workdir, prepared_dir, reference, from_step):
    _run(workdir, prepared_dir)
    got = _losses(workdir)
    assert sorted(reference) == list(range(1, STEPS + 1))
    for step in range(from_step + 1, STEPS + 1):  # after the restart: bitwise on CPU
        assert got[step] == reference[step], (step, got[step], reference[step])
    assert not os.path.exists(os.path.join(workdir, ".bertjax.lock"))


def _rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split and "loss" in r]


def _no_traceback(err):
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]


@pytest.mark.slow  # three runs of the entry point (~1 min)
def test_ctrl_c_between_steps_saves_exits_130_and_resume_reproduces_the_losses(
        tmp_path, prepared_dir, reference):
    workdir = str(tmp_path / "run")
    rc, err = _interrupt(workdir, prepared_dir, after_step=4)
    assert rc == 130, err[-3000:]
    _no_traceback(err)
    step = max(_saved(workdir))
    assert 4 <= step < STEPS and f"stopped by Ctrl-C at step {step}; checkpoint saved" in err
    assert max(_losses(workdir)) == step  # it stopped at the step it saved
    assert not os.path.exists(os.path.join(workdir, ".bertjax.lock"))
    _resume_matches(workdir, prepared_dir, reference, step)


@pytest.mark.slow
def test_ctrl_c_during_evaluation_finishes_it_and_saves_at_the_next_step(
        tmp_path, prepared_dir, reference):
    # Step 3's train row is written just before its evaluation (40 batches, twice each: the
    # context probe) starts; the stop for step 3 was already read, so it saves step 4.
    workdir = str(tmp_path / "run")
    rc, err = _interrupt(workdir, prepared_dir, after_step=3)
    assert rc == 130, err[-3000:]
    _no_traceback(err)
    assert _saved(workdir)[-1] == 4, _saved(workdir)
    evals = [r["step"] for r in _rows(workdir, "eval")]
    assert evals == [3]  # the evaluation under way completed and was written
    _resume_matches(workdir, prepared_dir, reference, 4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_second_ctrl_c_stops_at_once_and_keeps_the_last_complete_checkpoint(
        tmp_path, prepared_dir, reference, seed):
    # Asynchronous saves at every step, so the second Ctrl-C (at a random moment shortly after
    # the first) often lands during a save or its background write.
    gap = random.Random(seed).uniform(0.0, 0.5)
    workdir = str(tmp_path / "run")
    rc, err = _interrupt(workdir, prepared_dir, "--config.train.checkpoint_every=1",
                         "--config.train.async_checkpointing=True", after_step=3, signals=2,
                         gap_s=gap)
    assert rc == 130, err[-3000:]
    _no_traceback(err)
    lines = [x for x in err.splitlines() if x.startswith("interrupted (Ctrl-C)")]
    stopped = "stopped by Ctrl-C at step" in err  # the first one may have finished its step
    assert len(lines) == 1 or stopped, err[-3000:]
    assert not os.path.exists(os.path.join(workdir, ".bertjax.lock"))
    # What is on disk as a finished step is complete: it restores.
    last = _saved(workdir)[-1]
    params, _, _, _ = checkpoint.load_pretrained(workdir)
    assert params and last >= 2
    _resume_matches(workdir, prepared_dir, reference, last)


@pytest.mark.slow  # two preparations of a ~5 MB corpus (~40 s)
def test_ctrl_c_during_preparation_stops_in_one_line_and_the_rerun_completes(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tests", "bad_inputs"))
    from bad_input_helpers import bert_corpus
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Enough text that the preparation is still tokenizing when the signal comes, also on a
    # fast machine (with 12 parts it once finished in the 0.5 s before the signal).
    parts = 30
    for i in range(parts):
        (corpus / f"part{i}.txt").write_text(bert_corpus(1000, seed=i))
    out = tmp_path / "out"
    args = [sys.executable, os.path.join(REPO, "scripts", "prepare_pretraining_data.py"),
            f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny",
            f"--config.data.corpus={corpus}", "--config.data.prepare_workers=2",
            f"--output={out}"]
    proc = subprocess.Popen(args, env=_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and \
                not list(out.glob(".work-*/unit-*")):
            time.sleep(0.02)
        time.sleep(0.2)  # the workers are tokenizing
        assert proc.poll() is None, "preparation ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)  # parent and pool workers, as a terminal does
        stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    _no_traceback(err)
    assert [x for x in err.splitlines() if x.startswith("interrupted (Ctrl-C)")], err[-3000:]
    assert stdout == ""  # no JSON result for an unfinished preparation
    # No pool worker outlives it (on a loaded machine they may take a while to exit).
    gone, deadline = False, time.time() + 20
    while not gone and time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            gone = True
    assert gone, "a preparation worker outlived the interrupted parent"
    from bertjax.data import prepare
    assert not prepare.is_prepared(out) and not (out / ".bertjax.lock").exists()

    rerun = subprocess.run(args, env=_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert prepare.metadata(out)["stats"]["documents"] == parts * 1000
    assert not list(out.glob(".work-*"))
