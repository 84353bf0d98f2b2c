"""Ctrl-C in a terminal running two processes (scripts/launch_local.py): every process gets
SIGINT; each hands it to JAX's preemption service (as SIGTERM), so both stop at the same step,
save that checkpoint together and exit 130."""
import contextlib
import os
import re
import signal
import subprocess
import time

import pytest
from test_multiprocess import (RUN_TIMEOUT_S, _pretrain_args, _started, _tail, _train_losses,
                               _two_processes, prepared_dir)  # noqa: F401 (a fixture)


@pytest.mark.slow
def test_ctrl_c_stops_both_processes_at_the_same_step_with_a_checkpoint(tmp_path, prepared_dir):
    mp_dir = str(tmp_path / "two_processes")
    args = _pretrain_args(mp_dir, prepared_dir, steps=10_000, distributed=True)
    log_path = tmp_path / "mp.log"
    with _started(*_two_processes(args), log_path) as mp:
        deadline = time.time() + RUN_TIMEOUT_S
        while time.time() < deadline and mp.poll() is None:
            if os.path.exists(os.path.join(mp_dir, "metrics.jsonl")) and \
                    len(_train_losses(mp_dir)) >= 3:
                break
            time.sleep(0.1)
        assert mp.poll() is None, _tail(log_path)
        os.killpg(mp.pid, signal.SIGINT)  # the launcher and both workers, as a terminal does
        with contextlib.suppress(subprocess.TimeoutExpired):
            mp.wait(timeout=240)
        assert mp.returncode == 130, f"exit {mp.returncode}; log tail:\n{_tail(log_path)}"
    log = _tail(log_path, 10**6)
    stopped = re.findall(r"\[(\d)\] .*stopped by Ctrl-C at step (\d+)", log)
    assert sorted(p for p, _ in stopped) == ["0", "1"] and len({s for _, s in stopped}) == 1, \
        log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert os.path.isdir(os.path.join(mp_dir, "checkpoints", stopped[0][1]))
