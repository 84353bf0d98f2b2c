"""SIGTERM (a preemption notice) as a flag that a training loop checks between steps.

Cloud schedulers send SIGTERM some seconds before killing a preemptible job; the loop reads
the flag after each step, saves a checkpoint and returns normally instead of dying mid-save.
Its own module because any loop (pretraining, fine-tuning) that checkpoints can use it.
"""
from __future__ import annotations

import logging
import signal

log = logging.getLogger("bertjax.preemption")


class SigtermFlag:
    """`with SigtermFlag() as stop:` ... `if stop.flag:` save and leave. Restores the previous
    handler on exit. Outside the main thread (no handlers there) the flag never rises."""

    def __init__(self):
        self.flag = False
        self._old = None

    def __enter__(self):
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
