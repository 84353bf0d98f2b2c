"""SIGTERM (a preemption notice) as a stop that a training loop checks between steps.

Cloud schedulers send SIGTERM some seconds before killing a preemptible job; the loop asks after
each step, saves a checkpoint and returns normally instead of dying mid-save. Several processes
must stop at the same step (they save together): there JAX's preemption service, started by
jax.distributed.initialize, catches SIGTERM on any of them and picks the step; a Python handler
here would hide the signal from it. Its own module because any loop (pretraining, fine-tuning)
that checkpoints can use it.
"""
from __future__ import annotations

import logging
import signal

import jax

log = logging.getLogger("bertjax.preemption")


class SigtermFlag:
    """`with SigtermFlag() as stop:` ... `if stop.reached(step):` save and leave. Restores the
    previous handler on exit. Outside the main thread (no handlers there) a single-process run
    never stops this way."""

    def __init__(self):
        self.flag = False
        self._old = None
        self._multi = jax.process_count() > 1

    def reached(self, step: int) -> bool:
        """Call once per step, on every process; True from the step at which to stop."""
        if self._multi:
            from jax.experimental import multihost_utils
            self.flag = multihost_utils.reached_preemption_sync_point(step)
        return self.flag

    def __enter__(self):
        if self._multi:
            return self
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler
            self._old = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and exiting after this step")
        self.flag = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
