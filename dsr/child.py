"""Run one CPU-bound piece of work beside this process's own, on another core.

``beside(func)`` forks a child that runs ``func`` and hands back its (picklable) result or error
through a pipe; the caller does its own work meanwhile and then waits with ``result()``. The PDF
report is such a piece: WeasyPrint is pure Python and holds the GIL, so in a thread it would stall
the packing of the data files, which in a second process it does not.

A process is forked only when it has no other thread: a thread holding a lock (logging, an import)
at the moment of the fork would leave that lock held for ever in the child. Otherwise (the embedded
worker runs in a thread of the web app) the work runs in a thread: still correct, only slower. An RQ
work horse, which builds packages in production, is single-threaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["ChildFailed", "Pending", "beside"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


class ChildFailed(RuntimeError):
    """The child died without an answer (killed, out of memory) or its error could not be sent."""


class Pending(Generic[T]):
    """The work running beside: ``result()`` waits for it, ``cancel()`` stops it."""

    def result(self) -> T:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    @property
    def forked(self) -> bool:
        return False

    @property
    def cpu_seconds(self) -> float | None:
        """CPU time the forked child used (user + system), once ``result()`` returned; None in a thread."""
        return None


def beside(func: Callable[[], T], *, collect_cycles: bool = True) -> Pending[T]:
    """``collect_cycles=False``: a forked child runs without the cyclic garbage collector, for work
    whose memory is bounded (it is all returned when the child exits); ignored in a thread."""
    if hasattr(os, "fork") and threading.active_count() == 1:
        return _Forked(func, collect_cycles)
    return _Threaded(func)


class _Forked(Pending[T]):
    def __init__(self, func: Callable[[], T], collect_cycles: bool = True) -> None:
        read, write = os.pipe()
        parent = os.getpid()
        self._pid = os.fork()
        if self._pid == 0:  # the child: never returns
            os.close(read)
            _die_with(parent)
            if not collect_cycles:
                gc.disable()
            _answer(func, write)
        os.close(write)
        self._read = read
        self._done = False
        self._cpu: float | None = None

    @property
    def forked(self) -> bool:
        return True

    @property
    def cpu_seconds(self) -> float | None:
        return self._cpu

    def result(self) -> T:
        if self._done:
            raise RuntimeError("result() was already taken")
        with os.fdopen(self._read, "rb") as pipe:
            payload = pipe.read()
        _pid, status, usage = os.wait4(self._pid, 0)
        self._done = True
        self._cpu = usage.ru_utime + usage.ru_stime
        if not payload:
            raise ChildFailed(f"the child process ended without an answer ({_describe(status)})")
        kind, value = pickle.loads(payload)  # noqa: S301 (our own child's answer, through our own pipe)
        if kind == "error":
            raise value
        return value

    def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)
        os.close(self._read)


def _die_with(parent: int) -> None:
    """Linux: the child is killed when its parent dies (an RQ work horse killed at its job's timeout
    must not leave a report being written beside the retry's)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the child ends when its work does
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _answer(func: Callable[[], T], pipe: int) -> None:
    """In the child: run, send ("ok", result) or ("error", exception), and leave at once (no atexit
    handlers, no flushing of the parent's buffers, no closing of its database connections)."""
    code = 0
    try:
        try:
            payload = pickle.dumps(("ok", func()))
        except BaseException as exc:  # sent to the parent, which raises it
            code = 1
            try:
                payload = pickle.dumps(("error", exc))
            except Exception:
                payload = pickle.dumps(("error", ChildFailed("".join(traceback.format_exception(exc)))))
        with os.fdopen(pipe, "wb") as out:
            out.write(payload)
    finally:
        os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class _Threaded(Pending[T]):
    def __init__(self, func: Callable[[], T]) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dsr-beside")
        self._future: Future[T] = self._pool.submit(func)

    def result(self) -> T:
        try:
            return self._future.result()
        finally:
            self._pool.shutdown()

    def cancel(self) -> None:
        self._future.cancel()  # a running thread cannot be stopped: it ends on its own
        self._pool.shutdown(wait=True)
