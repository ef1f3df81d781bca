"""dsr.child: work run beside this process, in a forked child when that is safe, else in a thread."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from dsr.child import ChildFailed, beside


class Refused(Exception):
    pass


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


@pytest.fixture
def single_threaded() -> None:
    if threading.active_count() != 1:
        pytest.skip("another thread runs in this test process (the fork would not be safe)")


def test_a_single_threaded_process_forks_and_gets_the_result(single_threaded: None) -> None:
    pending = beside(lambda: _pid_and_square(12))
    assert pending.forked
    pid, square = pending.result()
    assert square == 144 and pid != os.getpid()


def test_the_childs_error_is_raised_in_the_parent(single_threaded: None) -> None:
    def fail() -> None:
        raise Refused("the report could not be written: disk full")

    pending = beside(fail)
    with pytest.raises(Refused, match="disk full"):
        pending.result()


def test_an_error_that_cannot_be_pickled_arrives_as_its_traceback(single_threaded: None) -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    def fail() -> None:
        raise Local("only here")

    with pytest.raises(ChildFailed, match="only here"):
        beside(fail).result()


def test_a_child_that_dies_without_an_answer_is_named(single_threaded: None) -> None:
    pending = beside(lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ChildFailed, match="killed by signal 9"):
        pending.result()


def test_cancel_stops_the_child_and_reaps_it(single_threaded: None) -> None:
    pending = beside(lambda: time.sleep(60))
    started = time.monotonic()
    pending.cancel()
    assert time.monotonic() - started < 30
    pid = pending._pid  # type: ignore[attr-defined]
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind


def test_with_another_thread_running_the_work_runs_in_a_thread() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        pending = beside(lambda: _pid_and_square(7))
        assert not pending.forked
        assert pending.result() == (os.getpid(), 49)
        with pytest.raises(Refused):
            beside(lambda: (_ for _ in ()).throw(Refused("in a thread too"))).result()
    finally:
        stop.set()
        other.join()
