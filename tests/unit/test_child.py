"""dsr.child: work run beside this process, in a forked child when that is safe, else in a thread.

The fork path is tested in a fresh single-threaded process (``_alone``): the test process itself may
run threads of earlier tests (an embedded worker, a server), and then ``beside`` rightly uses a thread.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from dsr.child import ChildFailed, beside


class Refused(Exception):
    pass


def _alone(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` in a new interpreter (spawned: nothing inherited); its failure fails the test."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(scenario).result(timeout=120)


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


def _forks_and_gets_the_result() -> None:
    assert threading.active_count() == 1
    pending = beside(lambda: _pid_and_square(12))
    assert pending.forked
    pid, square = pending.result()
    assert square == 144 and pid != os.getpid()


def _raises_the_childs_error() -> None:
    def fail() -> None:
        raise Refused("the report could not be written: disk full")

    pending = beside(fail)
    assert pending.forked
    with pytest.raises(Refused, match="disk full"):
        pending.result()


def _sends_an_unpicklable_error_as_its_traceback() -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    def fail() -> None:
        raise Local("only here")

    with pytest.raises(ChildFailed, match="only here"):
        beside(fail).result()


def _names_a_child_that_died_without_an_answer() -> None:
    pending = beside(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert pending.forked
    with pytest.raises(ChildFailed, match="killed by signal 9"):
        pending.result()


def _cancel_stops_and_reaps_the_child() -> None:
    pending = beside(lambda: time.sleep(60))
    assert pending.forked
    started = time.monotonic()
    pending.cancel()
    assert time.monotonic() - started < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(pending._pid, os.WNOHANG)  # type: ignore[attr-defined]  # reaped: no zombie left


def _burn_cpu() -> bool:
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    return gc.isenabled()


def _tells_the_childs_cpu_time_and_can_run_it_without_the_cycle_collector() -> None:
    plain = beside(_burn_cpu)
    assert plain.cpu_seconds is None  # not known before the result
    assert plain.result() is True
    assert plain.cpu_seconds is not None and 0.15 < plain.cpu_seconds < 5
    assert beside(_burn_cpu, collect_cycles=False).result() is False
    assert gc.isenabled()  # only the child ran without it


@pytest.mark.parametrize("scenario", [
    _forks_and_gets_the_result, _raises_the_childs_error, _sends_an_unpicklable_error_as_its_traceback,
    _names_a_child_that_died_without_an_answer, _cancel_stops_and_reaps_the_child,
    _tells_the_childs_cpu_time_and_can_run_it_without_the_cycle_collector,
], ids=lambda f: f.__name__.strip("_"))
def test_a_single_threaded_process_forks(scenario: Callable[[], None]) -> None:
    _alone(scenario)


def _leave_a_child_behind(pid_file: str) -> None:
    pending = beside(lambda: time.sleep(60))
    assert pending.forked
    Path(pid_file).write_text(str(pending._pid))  # type: ignore[attr-defined]
    os._exit(0)  # dies without cancel(), as a work horse killed at its job's timeout would


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; it waits only to be reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = multiprocessing.get_context("spawn").Process(target=_leave_a_child_behind, args=(str(pid_file),))
    parent.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    # Not join(): the child inherited the end of the pipe that join() waits on.
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(child), "the report child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        parent.join(10)


def test_with_another_thread_running_the_work_runs_in_a_thread() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        pending = beside(lambda: _pid_and_square(7), collect_cycles=False)
        assert not pending.forked
        assert pending.result() == (os.getpid(), 49)
        assert pending.cpu_seconds is None
        assert gc.isenabled()  # a thread never turns the process's collector off
        with pytest.raises(Refused):
            beside(lambda: (_ for _ in ()).throw(Refused("in a thread too"))).result()
    finally:
        stop.set()
        other.join()
