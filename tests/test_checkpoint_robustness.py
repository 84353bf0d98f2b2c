"""Checkpoints under failure: unwritable directory, failed saves (async and sync, disk full),
half-written steps. A failed save stops the run with one message; the previous checkpoint stays
complete, restores and resumes."""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler
from pretrain_helpers import tiny_pretrain_config

from bertjax import checkpoint, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def prepared_dir(default_prepared):
    return default_prepared


def _config(prepared_dir, **overrides):
    return tiny_pretrain_config(prepared_dir, **{
        "train.steps": 8, "train.checkpoint_every": 2,
        "train.keep_checkpoints": 1,  # the strictest case: the failing save may not delete step 2
        "train.async_checkpointing": True, **overrides})


def _logged_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    return [r["step"] for r in rows if r["split"] == "train" and "loss" in r]


def _steps_on_disk(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _fail_writes_of_step(monkeypatch, step):
    """The metadata writer raises ENOSPC inside step `step`'s directory (in Orbax's background
    commit thread when saving asynchronously), as a full disk would."""
    real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if f"/{step}." in str(directory) or str(directory).endswith(f"/{step}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)


def _resume_and_check(prepared_dir, workdir, from_step, **overrides):
    """The kept checkpoint restores, training continues from it to the end."""
    _, _, _, meta = checkpoint.load_pretrained(workdir)
    assert meta["source"] == "bertjax pretraining"
    before = len(_logged_steps(workdir))
    result = train.train_and_evaluate(_config(prepared_dir, **overrides), workdir)
    assert result.step == 8
    assert _logged_steps(workdir)[before:] == list(range(from_step + 1, 9))


def test_unwritable_checkpoint_directory_fails_before_anything_runs(tmp_path, prepared_dir):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("a file where the checkpoint directory should be")
    never_prepared = tmp_path / "prepared_here"
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match=rf"checkpoint directory {workdir}/checkpoints cannot be written"):
        train.train_and_evaluate(_config(str(never_prepared)), str(workdir))
    assert not never_prepared.exists()  # no data preparation, no compile, no step
    assert sorted(os.listdir(workdir)) == ["checkpoints"]


def test_read_only_checkpoint_directory_fails_before_anything_runs(tmp_path, prepared_dir):
    workdir = tmp_path / "ro"
    (workdir / "checkpoints").mkdir(parents=True)
    mounted = False
    if os.geteuid() == 0:  # root writes through permission bits: mount a read-only fs instead
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                str(workdir / "checkpoints")], capture_output=True)
        mounted = mount.returncode == 0
        if not mounted:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
    else:
        os.chmod(workdir / "checkpoints", 0o555)
    try:
        with pytest.raises(checkpoint.CheckpointSaveError,
                           match=rf"{workdir}/checkpoints cannot be written \(Read-only file "
                                 rf"system|{workdir}/checkpoints cannot be written \(Permission"):
            train.train_and_evaluate(_config(prepared_dir), str(workdir))
        assert not (workdir / "metrics.jsonl").exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(workdir / "checkpoints")], check=True)
        else:
            os.chmod(workdir / "checkpoints", 0o755)


def test_entry_point_reports_an_unwritable_workdir_in_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
         "--config", os.path.join(REPO, "configs", "pretrain.py") + ":tiny",
         "--workdir", "runs/tiny"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    # The workdir lock, taken first, is what finds that runs/tiny cannot be made.
    assert len(lines) == 1 and f"{tmp_path}/runs/tiny cannot be written" in lines[0]
    assert "Traceback" not in proc.stderr


def test_failed_background_save_is_reported_at_the_next_step_boundary(tmp_path, monkeypatch,
                                                                     capfd, caplog):
    # RunCheckpoints alone, no training: check() (called after every step) must raise once the
    # background write has failed, without another save being needed to find out.
    _fail_writes_of_step(monkeypatch, 3)
    ckpts = checkpoint.RunCheckpoints(tmp_path / "ckpts", async_save=True)
    state = types.SimpleNamespace(step=np.int32(3), params={"w": np.ones((4, 4), np.float32)},
                                  opt_state={"m": np.zeros(4, np.float32)},
                                  rng=np.zeros(2, np.uint32))
    ckpts.save(3, state, checkpoint.IteratorState(0, {"pos": 3}), {"source": "test"})
    deadline = time.time() + 120
    with pytest.raises(checkpoint.CheckpointSaveError) as err:
        while time.time() < deadline:  # step boundaries 4, 5, ...
            ckpts.check(4)
            time.sleep(0.01)
    ckpts.close()
    assert str(err.value).startswith(
        f"writing the checkpoint of step 3 to {tmp_path}/ckpts failed (OSError: [Errno 28] No "
        "space left on device); stopped at step 4; no earlier checkpoint exists")
    assert os.listdir(tmp_path / "ckpts") in ([], ["3.orbax-checkpoint-tmp"])
    # One message: Orbax's per-thread error logs and tracebacks are not shown.
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "orbax" in r.pathname]


@pytest.mark.slow
def test_failed_async_save_keeps_the_previous_checkpoint(tmp_path, prepared_dir, monkeypatch):
    workdir = str(tmp_path / "async_keep")
    with monkeypatch.context() as m:
        _fail_writes_of_step(m, 4)
        with pytest.raises(checkpoint.CheckpointSaveError,
                           match=r"checkpoint of step 4 .* failed .*No space left on device.*; "
                                 r"stopped at step [4-6]; the last complete checkpoint \(step "
                                 r"2\) is intact"):
            train.train_and_evaluate(_config(prepared_dir, **{"train.async_checkpointing": True}),
                                     workdir)
    assert "2" in _steps_on_disk(workdir) and "4" not in _steps_on_disk(workdir)
    _resume_and_check(prepared_dir, workdir, 2)


@pytest.mark.slow
def test_failed_sync_save_stops_at_that_step_and_keeps_the_previous_checkpoint(
        tmp_path, prepared_dir, monkeypatch):
    workdir = str(tmp_path / "sync")
    with monkeypatch.context() as m:
        _fail_writes_of_step(m, 4)
        with pytest.raises(checkpoint.CheckpointSaveError,
                           match=r"checkpoint of step 4 .* failed .*No space left on device.*; "
                                 r"stopped at step 4; the last complete checkpoint \(step 2\)"):
            train.train_and_evaluate(
                _config(prepared_dir, **{"train.async_checkpointing": False}), workdir)
    assert max(_logged_steps(workdir)) == 4
    assert "2" in _steps_on_disk(workdir) and "4" not in _steps_on_disk(workdir)
    _resume_and_check(prepared_dir, workdir, 2, **{"train.async_checkpointing": False})


@pytest.mark.slow  # four runs; the failing-writer tests above cover the same path by default
@pytest.mark.parametrize("async_save", [False, True])
def test_a_full_disk_stops_the_run_and_the_previous_checkpoint_resumes(tmp_path, prepared_dir,
                                                                      async_save):
    # A real full disk: a tmpfs with room for one checkpoint of the tiny model (~53 MB:
    # parameters and two Adam moments in float32) but not two.
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("no permission to mount a tmpfs")
    try:
        workdir = str(disk / "run")
        with pytest.raises(checkpoint.CheckpointSaveError,
                           match=r"checkpoint of step 4 .* failed .*; stopped at step \d+; the "
                                 r"last complete checkpoint \(step 2\) is intact"):
            train.train_and_evaluate(
                _config(prepared_dir, **{"train.async_checkpointing": async_save}), workdir)
        assert "2" in _steps_on_disk(workdir) and "4" not in _steps_on_disk(workdir)
        moved = str(tmp_path / "moved")  # the user frees space: here, by moving the run
        shutil.copytree(workdir, moved)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    _resume_and_check(prepared_dir, moved, 2,
                      **{"train.async_checkpointing": async_save})


@pytest.mark.slow  # ~18 s; the library-level row is tests/bad_inputs/test_bad_checkpoints.py
def test_half_written_step_is_ignored_on_resume(tmp_path, prepared_dir):
    workdir = str(tmp_path / "half")
    train.train_and_evaluate(_config(prepared_dir, **{"train.steps": 4}), workdir)
    ckpts = os.path.join(workdir, "checkpoints")
    assert _steps_on_disk(workdir) == ["4"]
    # What a kill during step 6's save leaves: Orbax's temporary name, some items written.
    partial = os.path.join(ckpts, "6.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(ckpts, "4"), partial)
    shutil.rmtree(os.path.join(partial, "train_state"))
    _resume_and_check(prepared_dir, workdir, 4)
