"""bertjax.dir_lock: one run per directory; stale locks (dead pid, silent other host) taken over,
live ones refused with the holder named; the race for a stale lock has one winner."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bertjax import dir_lock

HOLD = textwrap.dedent("""
    import sys, time
    from bertjax import dir_lock
    lock = dir_lock.hold(sys.argv[1], "holder").acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _holder(directory, seconds=60.0) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)],
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_records_holder_and_is_removed_on_release(tmp_path):
    with dir_lock.hold(tmp_path / "w", "pretraining"):
        rec = json.loads((tmp_path / "w" / dir_lock.LOCK_NAME).read_text())
        assert rec["pid"] == os.getpid() and rec["what"] == "pretraining" and rec["host"]
    assert not (tmp_path / "w").exists()  # made by the lock, empty: removed with it


def test_live_holder_in_another_process_is_refused_naming_it(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(dir_lock.DirLocked, match=rf"holder by pid {p.pid} on host .* since"):
            dir_lock.hold(tmp_path, "second").acquire()
    finally:
        p.kill()
        p.wait()


def test_stale_lock_after_sigkill_is_taken_over(tmp_path):
    p = _holder(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / dir_lock.LOCK_NAME).exists()  # SIGKILL: no cleanup ran
    with dir_lock.hold(tmp_path, "after") as lock:
        rec = json.loads((tmp_path / dir_lock.LOCK_NAME).read_text())
        assert rec["pid"] == os.getpid() and rec["token"] == lock.token


def _foreign_lock(directory, age_s: float):
    path = directory / dir_lock.LOCK_NAME
    path.write_text(json.dumps({"host": "node-17", "pid": 1, "what": "pretraining",
                                "since": "2026-01-01T00:00:00+00:00", "token": "x"}))
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_other_host_recent_lock_is_refused_naming_the_host(tmp_path):
    _foreign_lock(tmp_path, age_s=10)
    with pytest.raises(dir_lock.DirLocked, match="on host node-17"):
        dir_lock.hold(tmp_path, "x").acquire()


def test_other_host_lock_not_refreshed_is_stale(tmp_path):
    _foreign_lock(tmp_path, age_s=dir_lock.STALE_AFTER_S + 5)
    with dir_lock.hold(tmp_path, "x"):
        assert json.loads((tmp_path / dir_lock.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_holds_nest_within_one_process(tmp_path):
    with dir_lock.hold(tmp_path, "study"):
        with dir_lock.hold(tmp_path, "inner"):
            pass
        assert (tmp_path / dir_lock.LOCK_NAME).exists()  # the outer hold still has it
    assert not (tmp_path / dir_lock.LOCK_NAME).exists()


RACE = textwrap.dedent("""
    import sys, time
    from bertjax import dir_lock
    while time.time() < float(sys.argv[2]):
        pass
    try:
        lock = dir_lock.hold(sys.argv[1], "racer").acquire()
        print("won", flush=True)
        time.sleep(3)
    except dir_lock.DirLocked:
        print("refused", flush=True)
""")


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale_lock"])
def test_concurrent_starts_have_exactly_one_winner(tmp_path, stale):
    if stale:
        p = _holder(tmp_path)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused", "refused", "refused", "won"], outs
