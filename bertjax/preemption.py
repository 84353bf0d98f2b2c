"""SIGTERM (a preemption notice) and Ctrl-C (SIGINT) as a stop that a training loop checks
between steps.

Cloud schedulers send SIGTERM some seconds before killing a preemptible job; the loop asks after
each step, saves a checkpoint and returns normally instead of dying mid-save. The first Ctrl-C
is the same stop, asked for by a person: it saves at the next step boundary, and the entry
point then exits with code 130 (cli.EXIT_INTERRUPTED, the shell's code for "ended by SIGINT";
SIGTERM's stop exits 0, as a job that will be resumed). A second Ctrl-C aborts at once (KeyboardInterrupt) without saving;
checkpoints already finished are untouched, since Orbax writes each step under a temporary name
and renames it only when complete, and a half-written one is ignored on resume.

Several processes must stop at the same step (they save together): there JAX's preemption
service, started by jax.distributed.initialize, catches SIGTERM on any of them and picks the
step; a Python SIGTERM handler here would hide the signal from it, so a first Ctrl-C is passed
on to it as a SIGTERM to this process. Its own module because any loop (pretraining,
fine-tuning) that checkpoints can use it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal

import jax

log = logging.getLogger("bertjax.preemption")

_stopped_by: str | None = None  # "SIGINT" / "SIGTERM": the signal that stopped a loop here


def stopped_by() -> str | None:
    """The signal ("SIGINT" or "SIGTERM") that made a loop of this process stop early, if any."""
    return _stopped_by


class StopFlag:
    """Around a whole run: `with StopFlag() as stop:` (setup) `with stop.at_step_boundaries():`
    (the loop) `if stop.reached(step):` save and leave. Restores the previous handlers on exit.

    Before the loop (preparation, compile) there is nothing to save since the last checkpoint,
    so Ctrl-C raises KeyboardInterrupt at once, and SIGTERM keeps its default action. Python
    ignores a KeyboardInterrupt that lands inside a __del__ or a gc callback; the flag is set
    as well, so such a Ctrl-C still stops the loop at its first boundary, with a checkpoint.
    Outside the main thread (no handlers there) a single-process run never stops this way."""

    def __init__(self):
        self.flag = False
        self.signal: str | None = None  # which signal asked for the stop
        self._old: dict = {}
        self._in_loop = False
        self._multi = jax.process_count() > 1

    def reached(self, step: int) -> bool:
        """Call once per step, on every process; True from the step at which to stop."""
        if self._multi:
            from jax.experimental import multihost_utils
            self.flag = multihost_utils.reached_preemption_sync_point(step)
            if self.flag and self.signal is None:
                self.signal = "SIGTERM"
        if self.flag:
            global _stopped_by
            _stopped_by = self.signal
        return self.flag

    def _install(self, signum, handler) -> None:
        try:
            self._old[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: no handlers
            pass

    def _restore(self, signum) -> None:
        if signum in self._old:
            signal.signal(signum, self._old.pop(signum))

    def __enter__(self):
        global _stopped_by
        _stopped_by = None  # a new run (a sweep runs several in one process)
        self._install(signal.SIGINT, self._sigint)
        return self

    def __exit__(self, *exc):
        for signum in list(self._old):
            self._restore(signum)

    @contextlib.contextmanager
    def at_step_boundaries(self):
        """While the loop runs: the first Ctrl-C, and SIGTERM, stop at the next step boundary.
        (With several processes JAX's preemption service handles SIGTERM.)"""
        self._in_loop = True
        if not self._multi:
            self._install(signal.SIGTERM, self._sigterm)
        try:
            yield self
        finally:
            self._in_loop = False
            self._restore(signal.SIGTERM)

    def _sigterm(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and exiting after this step")
        self.signal, self.flag = self.signal or "SIGTERM", True

    def _sigint(self, signum, frame):
        again = self.signal == "SIGINT"
        self.signal = "SIGINT"
        if again or not self._in_loop:
            self.flag = self.flag or not self._multi
            raise KeyboardInterrupt
        log.warning("Ctrl-C: saving a checkpoint at the end of this step, then exiting "
                    "(Ctrl-C again stops at once, without saving)")
        if self._multi:  # JAX's preemption service makes every process stop at one step
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            self.flag = True
