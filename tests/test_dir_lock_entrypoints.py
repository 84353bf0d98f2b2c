"""One run per workdir, as a user meets it: scripts/pretrain.py and scripts/prepare_pretraining_
data.py as subprocesses. A second run refuses at once with one line naming the holder, and the
first run's files stay byte for byte as they were."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.bad_inputs.bad_input_helpers import assert_one_line_error, checksums, run_script
from tests.test_dir_lock import _holder

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config", f"{REPO / 'configs' / 'pretrain.py'}:tiny", "--config.train.batch_size=8",
        "--config.train.log_every=1", "--config.train.eval_every=1000",
        "--config.train.eval_steps=1", "--config.train.checkpoint_every=2",
        "--config.optim.warmup_steps=1"]  # warmup shorter than these few steps: no warning line


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)
    return env


@pytest.mark.slow
def test_resume_while_another_run_holds_the_workdir_is_refused_and_changes_nothing(tmp_path):
    run = run_script("pretrain.py", *TINY, "--workdir", "w", "--config.train.steps=2",
                     cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    before = checksums(tmp_path / "w")
    holder = _holder(tmp_path / "w")  # a run resuming in this workdir, still going
    try:
        second = run_script("pretrain.py", *TINY, "--workdir", "w", "--config.train.steps=4",
                            cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(second, "is in use", f"pid {holder.pid}", "on host")
    after = checksums(tmp_path / "w")
    after.pop(".bertjax.lock")  # the killed holder's (stale) lock
    assert after == before


@pytest.mark.slow
def test_two_pretraining_runs_started_together_on_a_fresh_workdir(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "pretrain.py"), *TINY, "--workdir", "w",
           "--config.train.steps=4"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    refused = next(err for rc, err in results if rc == 1)
    lines = [line for line in refused.splitlines() if line.strip()]
    assert len(lines) == 1 and "is in use: pretraining by pid" in lines[0], refused
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text()
            .splitlines()]
    steps = [r["step"] for r in rows if r["split"] == "train" and "loss" in r]
    assert steps == [1, 2, 3, 4]  # one run's rows, once each
    assert not (tmp_path / "w" / ".bertjax.lock").exists()


def test_preparation_into_a_held_prepared_dir_is_refused(tmp_path):
    holder = _holder(tmp_path / "prep")
    try:
        p = run_script("prepare_pretraining_data.py", "--config",
                       f"{REPO / 'configs' / 'pretrain.py'}:tiny", "--output", "prep",
                       cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(p, "prep is in use: holder by pid")
    assert sorted(os.listdir(tmp_path / "prep")) == [".bertjax.lock"]
