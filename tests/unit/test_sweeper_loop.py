"""The sweeper's duties fail independently: Redis being away must not stop the purge of expired exports."""
from __future__ import annotations

import threading
from typing import Any

from dsr.domain.recovery import Recovered
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
