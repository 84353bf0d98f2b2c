"""Data parallelism over every device of every host, around one per-device step function.

Two ways to run the same `step(state, batch, *, collectives)`:
  'jit'  (default) jax.jit over a 1-D device Mesh with axis 'data': the batch is sharded on its
         leading axis, the state replicated or, with fsdp=True, sharded over 'data' too
         (parameters and optimizer state split along their largest divisible axis; XLA
         inserts the all-gathers and reduce-scatters). The step sees the global batch and XLA
         does the cross-device reduction.
  'pmap' jax.pmap with axis 'data': each device sees its slice of the batch and the step
         reduces gradients and metrics with lax.psum.
The step never asks which mode it runs in: it gets a `Collectives` (sum over devices, a
per-device RNG, the FSDP parameter gather) that does the right thing for the mode, so the
same code also runs on one device without DataParallel (`ONE_DEVICE`).
Both modes give the same result as one device (tested on 8 simulated CPU devices).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"
MODES = ("jit", "pmap")


@dataclasses.dataclass(frozen=True)
class Collectives:
    """The cross-device operations a step function uses; DataParallel builds one per mode.

    axis_name: the pmap axis, or None when the step sees the global batch (one device, or jit
    over a mesh, where XLA inserts the reductions). gather_params (FSDP): maps the stored,
    sharded parameters to the layout the forward and backward passes use."""
    axis_name: str | None = None
    gather_params: Callable | None = None

    def sum(self, tree):
        """Sum of per-device values over the devices (identity when there is one view)."""
        return jax.lax.psum(tree, self.axis_name) if self.axis_name else tree

    def per_device_rng(self, rng):
        """A different key on each pmap device (each holds different rows); the same key
        otherwise, where one key already covers the whole global batch."""
        if self.axis_name:
            return jax.random.fold_in(rng, jax.lax.axis_index(self.axis_name))
        return rng

    def gather(self, tree):
        """Per-device rows -> the whole global batch's rows (concatenated in device order)."""
        if self.axis_name:
            return jax.lax.all_gather(tree, self.axis_name, tiled=True)
        return tree

    def params_for_compute(self, params):
        return self.gather_params(params) if self.gather_params is not None else params


ONE_DEVICE = Collectives()


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


def check_mode(mode: str, fsdp: bool, key: str = "parallel") -> None:
    """`key`: where the fields live in the user's config ('parallel', 'config.parallel')."""
    if mode not in MODES:
        raise ValueError(f"{key}.mode={mode!r}: expected one of {MODES}")
    if fsdp and mode != "jit":
        raise ValueError(f"{key}.fsdp=True needs {key}.mode='jit'")


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
    """Holds the mode, mesh and compiled step; moves state and batches to the devices.

    `step_fn(state, batch, *, collectives)` and `eval_fn(state, batch, *, collectives)` are
    compiled once here, each given the `Collectives` of the mode."""

    def __init__(self, mode: str, step_fn: Callable, abstract_state, *, fsdp: bool = False,
                 eval_fn: Callable | None = None, mesh: Mesh | None = None):
        check_mode(mode, fsdp)
        self.mode = mode
        self.mesh = mesh or make_mesh()
        self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
        self.replicated = NamedSharding(self.mesh, P())
        if mode == "jit":
            self.state_sharding = state_shardings(abstract_state, self.mesh, fsdp)
            gather = None
            if fsdp:
                # Gather the parameters for the forward and backward passes, so the
                # activations stay sharded over the batch like plain data parallelism;
                # the stored parameters and optimizer state (and the update) stay sharded.
                # Left to itself, sharding propagation gathered activations instead.
                gather = functools.partial(jax.lax.with_sharding_constraint,
                                           shardings=self.replicated)
            kw = {"collectives": Collectives(gather_params=gather)}
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
            kw = {"collectives": Collectives(axis_name=AXIS)}
            self.step = jax.pmap(functools.partial(step_fn, **kw), axis_name=AXIS,
                                 donate_argnums=(0,))
            if eval_fn is not None:
                self.eval = jax.pmap(functools.partial(eval_fn, **kw), axis_name=AXIS)

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
