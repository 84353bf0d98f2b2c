"""Run a command as N JAX processes on this machine: the multi-host path without a cluster.

    python scripts/launch_local.py --num_processes=2 --cpu_devices_per_process=4 -- \
        python scripts/pretrain.py --config configs/pretrain.py:tiny --workdir runs/tiny_2proc \
        --config.parallel.distributed=True

Each process gets the environment a cluster launcher would give it: JAX_COORDINATOR_ADDRESS
(127.0.0.1 and a free port; the coordinator binds to loopback only), JAX_NUM_PROCESSES and
JAX_PROCESS_ID, which `parallel.initialize_distributed()` passes to jax.distributed.initialize.
With --cpu_devices_per_process each process simulates that many CPU devices (cross-process
collectives on CPU use gloo, JAX's default). Output lines are prefixed with the process id. If
one process fails, the others are stopped; SIGTERM is forwarded to all of them (the trainer
saves a checkpoint and exits; Ctrl-C reaches them directly). The exit code is the first non-zero
exit code, or 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(i: int, n: int, port: int, cpu_devices: int, base=None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i))
    if cpu_devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [
            f"--xla_force_host_platform_device_count={cpu_devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.buffer.write(prefix.encode() + line)
        out.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_processes", type=int, default=2)
    p.add_argument("--cpu_devices_per_process", type=int, default=0,
                   help="simulate this many CPU devices per process (0: use the real devices)")
    p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("give the command to run after --")
    if args.num_processes < 1:
        p.error(f"--num_processes={args.num_processes}: expected a positive integer")
    port = args.port or free_port()
    procs = []
    for i in range(args.num_processes):
        env = process_env(i, args.num_processes, port, args.cpu_devices_per_process)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    pumps = [threading.Thread(target=_pump, args=(pr.stdout, f"[{i}] ", sys.stdout), daemon=True)
             for i, pr in enumerate(procs)]
    for t in pumps:
        t.start()

    def forward(signum, frame):
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signum)

    # Ctrl-C reaches the children directly (same foreground process group); forwarding it too
    # would interrupt their cleanup. SIGTERM (kill, a scheduler) is sent to us alone.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, forward)
    code = 0
    while any(pr.poll() is None for pr in procs):
        failed = [pr.returncode for pr in procs if pr.returncode not in (None, 0)]
        if failed and not code:
            # A failed peer leaves the others blocked in a collective until JAX's heartbeat
            # timeout; stop them now.
            code = failed[0]
            print(f"launch_local: a process exited with {code}; stopping the others",
                  file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
            deadline = time.time() + 30
            while time.time() < deadline and any(pr.poll() is None for pr in procs):
                time.sleep(0.1)
            for pr in procs:
                if pr.poll() is None:
                    pr.kill()
        time.sleep(0.1)
    for t in pumps:
        t.join(5)
    return code or next((pr.returncode for pr in procs if pr.returncode), 0)


if __name__ == "__main__":
    sys.exit(main())
