"""One run per directory: a lock file that a run holds on its workdir (or prepared dir) for as
long as it writes there.

Two runs in one workdir (a double click, a re-submitted job) would race in data preparation,
append to the same metrics.jsonl and overwrite each other's checkpoints. The second run is
refused at once, with one line naming the holder, and writes nothing.

The lock is `<dir>/.bertjax.lock`, a small JSON record (host, pid, what, since), made with an
atomic hard link of a complete temporary file, so no reader ever sees a half-written lock.

Stale locks (the rule, also in docs/bad_inputs.md):
  * same host, pid no longer alive (SIGKILL, OOM kill): stale, taken over at once;
  * another host (a shared filesystem): the holder refreshes the lock's modification time
    every HEARTBEAT_S seconds; a lock not refreshed for STALE_AFTER_S seconds (a lost node) is
    stale. Otherwise the run is refused with the host's name.
A take-over is itself serialised by a second O_EXCL file, so of two runs that both find a stale
lock exactly one wins.

Multi-process runs: the lock is the run's, taken by process 0 only (the others get a lock that
holds nothing). A process may take a lock it already holds (a study fine-tuning inside its own
workdir): the holds nest.
"""
from __future__ import annotations

import atexit
import datetime
import functools
import inspect
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

LOCK_NAME = ".bertjax.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
_TAKEOVER_STALE_S = 30.0   # a take-over takes milliseconds; older means its taker died

_held: dict[str, "DirLock"] = {}   # lock path -> the lock this process holds there
_held_guard = threading.Lock()


class DirLocked(OSError):
    """Another run holds the directory. An OSError: the entry points print it as one line."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as held by an unknown run (never silently taken)


def describe(holder: dict) -> str:
    return (f"{holder.get('what', 'a run')} by pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} since {holder.get('since', '?')}")


def stale_reason(holder: dict, path: str, now: float | None = None) -> str | None:
    """Why the lock at `path` (content `holder`) is stale, or None when its run may be alive."""
    if not holder:
        return None
    if holder.get("host") == socket.gethostname():
        if not _pid_alive(int(holder.get("pid", -1))):
            return f"pid {holder.get('pid')} is no longer running"
        return None
    try:
        age = (now or time.time()) - os.stat(path).st_mtime
    except FileNotFoundError:
        return "gone"
    if age > STALE_AFTER_S:
        return f"not refreshed for {age:.0f} s (> {STALE_AFTER_S:.0f} s)"
    return None


class DirLock:
    def __init__(self, directory, what: str):
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, LOCK_NAME)
        self.what = what
        self.token = uuid.uuid4().hex
        self._depth = 0
        self._stop = threading.Event()
        self._thread = None
        self._outer = None  # a nested hold releases through the lock that holds the file

    # -- acquire / release ---------------------------------------------------------------------
    def acquire(self) -> "DirLock":
        with _held_guard:
            mine = _held.get(self.path)
            if mine is not None:  # nested hold by this process
                mine._depth += 1
                self._outer = mine
                return self
        # A run refused by a later check leaves no empty directory behind (see release).
        self._made_dir = not os.path.isdir(self.directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:  # e.g. a file where the directory should be, a read-only mount
            raise OSError(f"{self.directory} cannot be written ({e.strerror}: {e.filename}); "
                          "expected a directory this run can create and write") from e
        record = {"host": socket.gethostname(), "pid": os.getpid(), "what": self.what,
                  "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "token": self.token}
        for _ in range(3):
            if self._create(record):
                break
            holder = _read(self.path)
            if holder is None:
                continue  # released meanwhile: try again
            reason = stale_reason(holder, self.path)
            if reason is None:
                raise DirLocked(
                    f"{self.directory} is in use: {describe(holder)} holds {self.path}; wait "
                    "for it to finish or use another directory (nothing was written). If that "
                    "run is gone, delete the lock file")
            if self._take_over(holder, record):
                logging.getLogger("bertjax.dir_lock").warning(
                    "took over the stale lock of %s (%s)", describe(holder), reason)
                break
        else:
            raise DirLocked(f"{self.path}: could not take the lock (contended); try again")
        self._depth = 1
        with _held_guard:
            _held[self.path] = self
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name="bertjax-dir-lock")
        self._thread.start()
        atexit.register(self.release_all)
        return self

    def _create(self, record: dict) -> bool:
        """Atomically: the lock appears complete, or (it exists already) not at all."""
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _take_over(self, stale: dict, record: dict) -> bool:
        guard = self.path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                if time.time() - os.stat(guard).st_mtime > _TAKEOVER_STALE_S:
                    os.unlink(guard)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if _read(self.path) != stale:  # someone else took it over first
                return False
            os.unlink(self.path)
            return self._create(record)
        finally:
            os.unlink(guard)

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._outer is not None:
            self._outer, outer = None, self._outer
            outer.release()
            return
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth:
            return
        self._stop.set()
        with _held_guard:
            _held.pop(self.path, None)
        holder = _read(self.path)
        if holder and holder.get("token") == self.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if getattr(self, "_made_dir", False):
            try:
                os.rmdir(self.directory)  # only when empty
            except OSError:
                pass

    def release_all(self) -> None:
        if self._depth:
            self._depth = 1
            self.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class _NoLock:
    """What processes other than 0 of a multi-process run hold: the run's lock is process 0's."""

    def acquire(self):
        return self

    def release(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _is_main() -> bool:
    if "jax" not in sys.modules:  # preparation alone never imports jax: one process
        return True
    import jax
    return jax.process_index() == 0


def hold(directory, what: str):
    """`with dir_lock.hold(workdir, "pretraining"):` (or `.acquire()` ... `.release()`)."""
    return DirLock(directory, what) if _is_main() else _NoLock()


def locked(arg: str, what: str):
    """Decorator: the call holds the lock on its argument `arg` (a directory) throughout. An
    empty value (no directory given) takes no lock; the callee reports it."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            directory = sig.bind(*args, **kwargs).arguments.get(arg)
            if not directory:
                return fn(*args, **kwargs)
            with hold(directory, what):
                return fn(*args, **kwargs)
        return inner
    return wrap
