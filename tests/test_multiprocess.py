"""Multi-host training for real: 2 JAX processes on localhost x 4 CPU devices each.

The processes are started by scripts/launch_local.py (the README's line for trying the
multi-host path on one machine) running scripts/pretrain.py with
--config.parallel.distributed=True; cross-process collectives go through gloo. The reference is
ONE process with 8 devices and data.shards=2, which reads the same global batches as two
processes (see pretraining.make_iterator). Dropout is off, so the losses must agree to float
tolerance (the cross-process all-reduce may sum in another order).

Run as a script, this file is the worker: it records the first host batches each process
feeds to its devices (to check the sharding), then runs scripts/pretrain.py unchanged.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DUMP_ENV = "BERTJAX_TEST_BATCH_DUMP"
DUMP_STEPS = 3
RUN_TIMEOUT_S = 420
BATCH_KEYS = ("input_ids", "segment_ids", "masked_positions", "masked_ids", "nsp_label")


def _worker(argv):
    """Spy on DataParallel.put_batch, then run scripts/pretrain.py with `argv`."""
    import runpy

    import jax
    from bertjax import parallel

    dump_dir, seen = os.environ.get(DUMP_ENV), []
    real_put = parallel.DataParallel.put_batch

    def put_batch(self, host_batch):
        if dump_dir and len(seen) < DUMP_STEPS:  # the prefetch thread keeps the step order
            seen.append({k: np.array(host_batch[k]) for k in BATCH_KEYS})
            if len(seen) == DUMP_STEPS:
                np.savez(os.path.join(dump_dir, f"batches_{jax.process_index()}.npz"),
                         **{f"{k}_{i}": b[k] for i, b in enumerate(seen) for k in BATCH_KEYS})
        return real_put(self, host_batch)

    parallel.DataParallel.put_batch = put_batch
    script = os.path.join(REPO, "scripts", "pretrain.py")
    sys.argv = [script] + argv
    runpy.run_path(script, run_name="__main__")


# ----------------------------------------------------------------------------------------------
# Helpers for the tests.

@pytest.fixture
def prepared_dir(default_prepared):
    """The built-in corpus, prepared once for the session (every run below only trains)."""
    return default_prepared


def _pretrain_args(workdir, prepared_dir, *, steps, mode="jit", fsdp=False, distributed,
                   checkpoint_every=1000):
    return [f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny",
            f"--workdir={workdir}", f"--config.data.prepared_dir={prepared_dir}",
            f"--config.parallel.distributed={distributed}",
            f"--config.parallel.mode={mode}", f"--config.parallel.fsdp={fsdp}",
            "--config.data.shards=2",
            "--config.model.hidden_dropout_rate=0", "--config.model.attention_dropout_rate=0",
            "--config.data.max_seq_len=64", "--config.data.max_predictions_per_seq=10",
            "--config.train.batch_size=16", f"--config.train.steps={steps}",
            "--config.train.log_every=1", "--config.train.eval_every=1000",
            "--config.train.eval_steps=1", f"--config.train.checkpoint_every={checkpoint_every}",
            "--config.optim.warmup_steps=2"]


def _env(dump_dir=None, devices=None):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        env[DUMP_ENV] = dump_dir
    return env


def _one_process(args, dump_dir=None):
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    return cmd, _env(dump_dir, devices=8)


def _two_processes(args, dump_dir=None):
    cmd = [sys.executable, os.path.join(REPO, "scripts", "launch_local.py"),
           "--num_processes=2", "--cpu_devices_per_process=4", "--",
           sys.executable, os.path.abspath(__file__)] + args
    return cmd, _env(dump_dir)


@contextlib.contextmanager
def _started(cmd, env, log_path):
    """Popen in its own process group; the whole group is SIGKILLed on the way out."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(proc, log_path, timeout=RUN_TIMEOUT_S):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run did not finish in {timeout} s; log tail:\n{_tail(log_path)}")
    assert proc.returncode == 0, f"exit {proc.returncode}; log tail:\n{_tail(log_path)}"


def _tail(path, n=3000):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")[-n:]


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _train_losses(workdir):
    """step -> list of (loss, mlm_loss, nsp_loss, grad_norm), one entry per time it was logged."""
    out = {}
    for r in _rows(workdir):
        if r["split"] == "train" and "loss" in r:
            out.setdefault(r["step"], []).append(
                (r["loss"], r["mlm_loss"], r["nsp_loss"], r["grad_norm"]))
    return out


def _batches(dump_dir, process):
    with np.load(os.path.join(dump_dir, f"batches_{process}.npz")) as z:
        return [{k: z[f"{k}_{i}"] for k in BATCH_KEYS} for i in range(DUMP_STEPS)]


def _compare(ref, got, steps):
    """Max abs difference of the logged figures over `steps`; fails beyond float tolerance."""
    worst = 0.0
    for step in steps:
        for values in got[step]:
            np.testing.assert_allclose(values, ref[step][0], rtol=2e-5, atol=1e-6,
                                       err_msg=f"step {step}")
            worst = max(worst, float(np.max(np.abs(np.subtract(values, ref[step][0])))))
    return worst


# ----------------------------------------------------------------------------------------------
# The tests.

def test_global_batch_depends_on_the_shard_count_not_the_process_count(prepared_dir):
    from bertjax.data import pretraining
    from configs import pretrain
    data = pretrain.get_config("tiny").data
    data.tokenizer = os.path.join(REPO, data.tokenizer)
    kw = dict(global_batch_size=8, seed=3, max_seq_len=64, max_predictions_per_seq=10)
    one = pretraining.make_iterator(data, prepared_dir, process_count=1, shards=2, **kw)
    parts = [pretraining.make_iterator(data, prepared_dir, process_index=i, process_count=2, **kw)
             for i in (0, 1)]
    for _ in range(3):
        a, b0, b1 = next(one), next(parts[0]), next(parts[1])
        assert len(b0["input_ids"]) == len(b1["input_ids"]) == 4
        for k in a:
            np.testing.assert_array_equal(a[k], np.concatenate([b0[k], b1[k]]), err_msg=k)
    # The combined iterator's state round-trips like a single one (checkpoints hold it).
    state, expected = one.get_state(), next(one)
    again = pretraining.make_iterator(data, prepared_dir, process_count=1, shards=2, **kw)
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["input_ids"], expected["input_ids"])
    with pytest.raises(ValueError, match=r"data.shards=3: expected a multiple of the 2 processes"):
        pretraining.make_iterator(data, prepared_dir, process_count=2, shards=3, **kw)


def test_distributed_without_a_cluster_environment_is_one_clear_error(tmp_path):
    env = _env()
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
         f"--config={os.path.join(REPO, 'configs', 'pretrain.py')}:tiny",
         f"--workdir={tmp_path / 'run'}", "--config.parallel.distributed=True"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "JAX_COORDINATOR_ADDRESS" in proc.stderr and "JAX_NUM_PROCESSES" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()

@pytest.mark.slow
def test_two_processes_match_one_process_with_eight_devices(tmp_path, prepared_dir):
    steps = 4
    ref_dir, mp_dir = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    ref_cmd = _one_process(_pretrain_args(ref_dir, prepared_dir, steps=steps, distributed=False),
                           dump_dir=str(tmp_path / "dump_ref"))
    mp_cmd = _two_processes(_pretrain_args(mp_dir, prepared_dir, steps=steps, distributed=True),
                            dump_dir=str(tmp_path / "dump_mp"))
    t0 = time.time()
    # Both at once: on a small machine each spends much of its time compiling or waiting.
    with _started(*ref_cmd, tmp_path / "ref.log") as ref, \
            _started(*mp_cmd, tmp_path / "mp.log") as mp:
        _wait(ref, tmp_path / "ref.log")
        _wait(mp, tmp_path / "mp.log")
    wall = time.time() - t0

    # Each process fed its devices its own half of every global batch: disjoint rows, and
    # together exactly the one-process batch.
    ref_b = _batches(str(tmp_path / "dump_ref"), 0)
    p0, p1 = (_batches(str(tmp_path / "dump_mp"), i) for i in (0, 1))
    for step in range(DUMP_STEPS):
        assert len(p0[step]["input_ids"]) == len(p1[step]["input_ids"]) == 8
        rows0 = {r.tobytes() for r in p0[step]["input_ids"]}
        assert not rows0 & {r.tobytes() for r in p1[step]["input_ids"]}, step
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(
                np.concatenate([p0[step][k], p1[step][k]]), ref_b[step][k], err_msg=(step, k))

    # Process 0 alone wrote metrics: every event once, one TensorBoard file.
    rows = _rows(mp_dir)
    train_steps = [r["step"] for r in rows if r["split"] == "train" and "loss" in r]
    assert train_steps == list(range(1, steps + 1)), train_steps
    assert [r["step"] for r in rows if r["split"] == "eval"] == [steps]
    events = [f for f in os.listdir(os.path.join(mp_dir, "tensorboard"))
              if f.startswith("events.out.tfevents")]
    assert len(events) == 1, events
    log = _tail(tmp_path / "mp.log", 10**6)
    assert "8 devices, 2 processes" in log, log[-2000:]

    ref, got = _train_losses(ref_dir), _train_losses(mp_dir)
    worst = _compare(ref, got, range(1, steps + 1))
    print(json.dumps({"mode": "jit", "wall_s": round(wall, 1), "max_abs_diff": worst,
                      "one_process": {s: ref[s][0][0] for s in ref},
                      "two_processes": {s: got[s][0][0] for s in got}}))
    # The two-process checkpoint holds one data-iterator state per process.
    items = os.listdir(os.path.join(mp_dir, "checkpoints", str(steps), "data_iter"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(items), items


@pytest.mark.slow
@pytest.mark.parametrize("mode, fsdp", [("jit", False), ("pmap", False), ("jit", True)],
                         ids=["jit", "pmap", "fsdp"])
def test_two_processes_killed_and_restarted_reproduce_one_process(tmp_path, prepared_dir,
                                                                  mode, fsdp):
    steps, ckpt_every = 9, 3
    ref_dir, mp_dir = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    ref_cmd = _one_process(_pretrain_args(ref_dir, prepared_dir, steps=steps, mode=mode,
                                          fsdp=fsdp, distributed=False))
    mp_args = _pretrain_args(mp_dir, prepared_dir, steps=steps, mode=mode, fsdp=fsdp,
                             distributed=True, checkpoint_every=ckpt_every)
    t0 = time.time()
    first_ckpt = os.path.join(mp_dir, "checkpoints", str(ckpt_every))
    with _started(*ref_cmd, tmp_path / "ref.log") as ref:
        with _started(*_two_processes(mp_args), tmp_path / "mp1.log") as mp:
            deadline = time.time() + RUN_TIMEOUT_S
            # Orbax renames a step directory into place once every process has written it.
            while not os.path.isdir(first_ckpt) and mp.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert os.path.isdir(first_ckpt), _tail(tmp_path / "mp1.log")
            os.killpg(mp.pid, signal.SIGKILL)  # launcher and both training processes
            mp.wait()
        killed_at = max(_train_losses(mp_dir))
        saved = sorted(int(d) for d in os.listdir(os.path.join(mp_dir, "checkpoints"))
                       if d.isdigit())
        assert killed_at < steps and saved and max(saved) < steps, (killed_at, saved)
        with _started(*_two_processes(mp_args), tmp_path / "mp2.log") as mp:
            _wait(mp, tmp_path / "mp2.log")
        _wait(ref, tmp_path / "ref.log")
    wall = time.time() - t0

    log = _tail(tmp_path / "mp2.log", 10**6)
    resumed = sorted({int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log)})
    assert resumed == [max(saved)], (resumed, saved)  # both processes, the latest checkpoint
    ref, got = _train_losses(ref_dir), _train_losses(mp_dir)
    assert sorted(got) == list(range(1, steps + 1))
    # Steps after the resume point were logged twice (killed run, restarted run): all must
    # equal the one-process run.
    worst = _compare(ref, got, range(1, steps + 1))
    print(json.dumps({"mode": mode, "fsdp": fsdp, "wall_s": round(wall, 1),
                      "killed_after_step": killed_at, "resumed_from": resumed[0],
                      "max_abs_diff": worst,
                      "one_process": {s: ref[s][0][0] for s in ref},
                      "two_processes": {s: [v[0] for v in got[s]] for s in got}}))


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.slow
def test_sigterm_on_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path,
                                                                              prepared_dir):
    # A preemption notice may reach the hosts at different steps, or only one of them; all
    # must save the same step together and exit cleanly (a process that stopped alone would
    # leave the others blocked in the next collective).
    mp_dir = str(tmp_path / "two_processes")
    args = _pretrain_args(mp_dir, prepared_dir, steps=10_000, distributed=True)
    with _started(*_two_processes(args), tmp_path / "mp.log") as mp:
        deadline = time.time() + RUN_TIMEOUT_S
        while time.time() < deadline and mp.poll() is None:
            if os.path.exists(os.path.join(mp_dir, "metrics.jsonl")) and \
                    len(_train_losses(mp_dir)) >= 3:
                break
            time.sleep(0.1)
        workers = _children(mp.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGTERM)  # process 1 only, not the launcher
        _wait(mp, tmp_path / "mp.log", timeout=240)
    log = _tail(tmp_path / "mp.log", 10**6)
    stopped = re.findall(r"\[(\d)\] .*preempted at step (\d+)", log)
    assert sorted(p for p, _ in stopped) == ["0", "1"] and len({s for _, s in stopped}) == 1, \
        log[-3000:]
    step = int(stopped[0][1])
    assert os.path.isdir(os.path.join(mp_dir, "checkpoints", str(step)))
    print(json.dumps({"sigterm_to": "process 1", "both_stopped_at": step}))


if __name__ == "__main__":
    _worker(sys.argv[1:])
