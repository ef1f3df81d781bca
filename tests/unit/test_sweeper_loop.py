"""The sweeper's duties fail independently: Redis being away must not stop the purge of expired exports."""
from __future__ import annotations

import contextlib
import threading
from datetime import date
from typing import Any

from dsr.domain.recovery import Recovered
from dsr.domain.retention_register import RunReport
from dsr.queue import Sweeper


class _RedisAway(Sweeper):
    def __init__(self) -> None:
        super().__init__(runtime=None, interval=0.01)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.purged = threading.Event()

    def sweep_once(self) -> int:
        self.calls.append("send")
        raise ConnectionError("Redis is away")

    def recover_once(self) -> Recovered:
        self.calls.append("recover")
        raise ConnectionError("Redis is away")

    def purge_once(self) -> int:
        self.calls.append("purge")
        self.purged.set()
        self.stop()
        return 1


def test_the_purge_runs_when_sending_and_recovery_fail(caplog: Any) -> None:
    sweeper = _RedisAway()
    sweeper.start()
    assert sweeper.purged.wait(5), sweeper.calls
    sweeper.thread.join(5)
    assert sweeper.calls[:3] == ["send", "recover", "purge"]
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("sending the outbox failed" in m for m in failures)
    assert any("recovery failed" in m for m in failures)


class _Days(Sweeper):
    """A sweeper whose clock and retention run are the test's."""

    def __init__(self) -> None:
        super().__init__(runtime=None, interval=60)  # type: ignore[arg-type]
        self.day, self.runs, self.fail = date(2034, 1, 1), [], False

    def _today(self) -> date:
        return self.day

    def retention_once(self, today: date | None = None) -> RunReport:
        self.runs.append(today)
        if self.fail:
            raise ConnectionError("the database is away")
        return RunReport(today or self.day, failed=[{"reference": "DSR-1", "store": "portal_db", "error": "x"}])


def test_the_retention_run_is_once_a_day_and_tried_again_when_it_failed_as_a_whole() -> None:
    sweeper = _Days()
    sweeper.fail = True
    for _ in range(2):
        with contextlib.suppress(ConnectionError):
            sweeper._retention()
    assert sweeper.runs == [date(2034, 1, 1)] * 2  # the run did not happen: the next sweep tries again
    sweeper.fail = False
    sweeper._retention()
    sweeper._retention()  # a store failing inside the run waits for tomorrow, as do the others
    assert sweeper.runs == [date(2034, 1, 1)] * 3
    sweeper.day = date(2034, 1, 2)
    sweeper._retention()
    assert sweeper.runs[-1] == date(2034, 1, 2) and len(sweeper.runs) == 4
