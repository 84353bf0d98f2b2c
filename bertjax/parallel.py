"""Data parallelism over every device of every host, around one per-device step function.

Two ways to run the same `step(state, batch, axis_name)`:
  'jit'  (default) jax.jit over a 1-D device Mesh with axis 'data': the batch is sharded on its
         leading axis, the state replicated or, with fsdp=True, sharded over 'data' too
         (parameters and optimizer state split along their largest divisible axis; XLA
         inserts the all-gathers and reduce-scatters). axis_name=None: the step sees the
         global batch and XLA does the cross-device reduction.
  'pmap' jax.pmap with axis 'data': each device sees its slice of the batch and the step
         reduces gradients and metrics itself with lax.psum over axis_name='data'.
Both give the same result as one device (tested on 8 simulated CPU devices).
"""
from __future__ import annotations

import functools
import math
import os
import queue
import threading
from typing import Any, Callable, Iterator

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
MODES = ("jit", "pmap")


def initialize_distributed() -> None:
    """jax.distributed.initialize() for a multi-process run.

    JAX itself reads only JAX_COORDINATOR_ADDRESS (and the SLURM / Open MPI / Cloud TPU / k8s
    environments); outside those, the process count and id come from JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which scripts/launch_local.py and hand-written launch lines set."""
    def env_int(key):
        value = os.environ.get(key)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"environment variable {key}={value!r}: expected an integer") from None
    try:
        jax.distributed.initialize(num_processes=env_int("JAX_NUM_PROCESSES"),
                                   process_id=env_int("JAX_PROCESS_ID"))
    except ValueError as e:  # e.g. "coordinator_address should be defined."
        raise ValueError(
            f"parallel.distributed=True: {e} Outside SLURM, Open MPI, Kubernetes and Cloud TPU "
            "set JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
            "JAX_PROCESS_ID on every process; scripts/launch_local.py does so on one "
            "machine") from None


def barrier(name: str, timeout_s: int = 24 * 3600) -> None:
    """Wait until every process reaches `name`; a no-op in a single-process run.

    Uses the coordination service rather than a device collective, so one process may spend
    long on host work (data preparation) while the others wait."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client behind jax.distributed.initialize
    distributed.global_state.client.wait_at_barrier(f"bertjax_{name}", timeout_s * 1000)


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def check_batch_divisible(global_batch: int, grad_accum: int, mode: str) -> None:
    """Raise before compiling when the global batch cannot be split evenly."""
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if global_batch % n_proc:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the "
                         f"{n_proc} processes (hosts)")
    if global_batch % (n_dev * grad_accum):
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by devices x grad_accum_steps "
            f"= {n_dev} x {grad_accum} = {n_dev * grad_accum} (parallel.mode={mode!r})")


def _fsdp_spec(shape, n: int) -> P:
    """Shard the largest axis divisible by n; replicate small or indivisible leaves."""
    if not shape or math.prod(shape) < 2 ** 14:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = AXIS
            return P(*spec)
    return P()


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
    n = mesh.shape[AXIS]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, n) if fsdp else P()), abstract_state)


class DataParallel:
    """Holds the mode, mesh and compiled step; moves state and batches to the devices."""

    def __init__(self, mode: str, step_fn: Callable, abstract_state, *, fsdp: bool = False,
                 eval_fn: Callable | None = None, mesh: Mesh | None = None):
        if mode not in MODES:
            raise ValueError(f"parallel.mode={mode!r}: expected one of {MODES}")
        if mode == "pmap" and fsdp:
            raise ValueError("parallel.fsdp=True needs parallel.mode='jit'")
        self.mode = mode
        self.mesh = mesh or make_mesh()
        self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
        self.replicated = NamedSharding(self.mesh, P())
        if mode == "jit":
            self.state_sharding = state_shardings(abstract_state, self.mesh, fsdp)
            kw = {"axis_name": None}
            if fsdp:
                # Gather the parameters for the forward and backward passes, so the
                # activations stay sharded over the batch like plain data parallelism;
                # the stored parameters and optimizer state (and the update) stay sharded.
                # Left to itself, sharding propagation gathered activations instead.
                kw["gather_params"] = functools.partial(
                    jax.lax.with_sharding_constraint, shardings=self.replicated)
            self.step = jax.jit(functools.partial(step_fn, **kw),
                                in_shardings=(self.state_sharding, self.batch_sharding),
                                out_shardings=(self.state_sharding, self.replicated),
                                donate_argnums=(0,))
            if eval_fn is not None:
                self.eval = jax.jit(functools.partial(eval_fn, **kw),
                                    in_shardings=(self.state_sharding, self.batch_sharding),
                                    out_shardings=self.replicated)
        else:
            # Checkpoints hold the state as one global replicated array (what Orbax writes on
            # several hosts; a host-local copy is refused there).
            self.state_sharding = jax.tree_util.tree_map(lambda _: self.replicated,
                                                         abstract_state)
            local_mesh = Mesh(np.asarray(jax.local_devices()), ("local",))
            self._pmap_batch_sharding = NamedSharding(local_mesh, P("local"))
            self.step = jax.pmap(functools.partial(step_fn, axis_name=AXIS), axis_name=AXIS,
                                 donate_argnums=(0,))
            if eval_fn is not None:
                self.eval = jax.pmap(functools.partial(eval_fn, axis_name=AXIS),
                                     axis_name=AXIS)

    # --- state ---------------------------------------------------------------------------
    def put_state(self, state):
        """Host or single-device state -> the layout the step expects."""
        if self.mode == "jit":
            return jax.device_put(state, self.state_sharding)
        # One copy per local device; a restored state is global, so take this host's copy.
        return flax.jax_utils.replicate(jax.tree_util.tree_map(
            lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, state))

    def get_state(self, state):
        """The state as the checkpoint holds it: one copy (pmap: global, replicated)."""
        if self.mode == "jit":
            return state
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_single_device_arrays(
                x.shape[1:], self.replicated, [s.data[0] for s in x.addressable_shards]), state)

    def shardings_for_restore(self):
        """Target shardings for Orbax restore."""
        return self.state_sharding

    # --- batches and metrics ---------------------------------------------------------------
    def put_batch(self, host_batch: dict) -> Any:
        """This host's numpy batch -> device arrays (a global sharded array under jit)."""
        if self.mode == "jit":
            return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                    for k, v in host_batch.items()}
        n = jax.local_device_count()
        return {k: jax.device_put(v.reshape((n, -1) + v.shape[1:]), self._pmap_batch_sharding)
                for k, v in host_batch.items()}

    def metrics_to_host(self, metrics) -> dict:
        metrics = jax.device_get(metrics)
        if self.mode == "pmap":
            metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
        return metrics


class prefetch:  # noqa: N801 (used like a generator function)
    """Run `put(next(it))` in a background thread, `size` batches ahead.

    `it` yields (item, tag); the tag travels with its batch so that the data-iterator state
    saved in a checkpoint belongs to the last batch consumed, not the last one prefetched.
    close() stops and joins the thread: a thread still calling into JAX while the interpreter
    exits can abort the process."""

    _DONE = object()

    def __init__(self, it: Iterator, put: Callable, size: int = 2):
        self._it, self._put, self._size = it, put, size
        self._q: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._thread = None
        if size > 0:
            self._thread = threading.Thread(target=self._work, daemon=True, name="prefetch")
            self._thread.start()

    def _work(self):
        try:
            for item, tag in self._it:
                if self._stop.is_set():
                    return
                payload = (self._put(item), tag)
                while not self._stop.is_set():  # timed puts: a closed consumer never strands us
                    try:
                        self._q.put(payload, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            self._q.put(self._DONE)
        except BaseException as e:  # surface input-pipeline errors in the training loop
            self._q.put(e)

    def __iter__(self):
        return self

    def __next__(self):
        if self._thread is None:
            item, tag = next(self._it)
            return self._put(item), tag
        item = self._q.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
