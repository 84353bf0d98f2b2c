"""Batches moved to the devices in a background thread, each with the iterator state after it.

`prefetch(tagged(it, phase), put)` keeps `size` device batches ready while the current step
runs. Each batch travels with its tag, (phase, it.get_state() after that batch), so that the
data-iterator state a checkpoint saves belongs to the last batch *consumed*, not the last one
prefetched; restoring that state continues with the very next batch.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator


def tagged(it, phase: int) -> Iterator[tuple[Any, tuple[int, Any]]]:
    """Yield (batch, (phase, iterator state after it)) pairs."""
    for batch in it:
        yield batch, (phase, it.get_state())


class prefetch:  # noqa: N801 (used like a generator function)
    """Run `put(next(it))` in a background thread, `size` batches ahead.

    `it` yields (item, tag); the tag is passed through with the item.
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
