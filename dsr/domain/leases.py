"""A running task's lease: proof that the attempt working on it is alive.

The attempt renews the lease from a thread beside its work (every third of its length), so a
long COPY or a slow processor keeps it. When the process dies (killed, out of memory, the
machine gone), renewals stop and the lease runs out within one length; the retry of the same
job, or the watchdog (``dsr.domain.recovery``), may then take the task over. A renewal that finds
the task taken over stops: that attempt's results are no longer wanted (every write of the
attempt is conditioned on its attempt number, so they would be discarded anyway).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session, sessionmaker

from dsr.models import Task, TaskStatus, utcnow

log = logging.getLogger(__name__)

# Long enough to ride out a database restart of a few seconds, short enough that a dead worker's
# task is taken over well within a minute (DSR_TASK_LEASE_SECONDS).
DEFAULT_LEASE = timedelta(seconds=30)
# A task marked running without a lease was claimed by a version of dsr before leases (a rolling
# release): its job cannot run longer than the queue's job timeout (an hour), so after that it is dead.
UNLEASED_RUN = timedelta(hours=1)


def lapsed(lease_expires_at: datetime | None, started_at: datetime | None, now: datetime) -> bool:
    """Whether the attempt holding a running task is dead as far as its lease can tell."""
    if lease_expires_at is not None:
        return lease_expires_at < now
    return started_at is None or started_at < now - UNLEASED_RUN


def runner() -> str:
    """Where an attempt runs, for the operator: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"[:200]


class Lease:
    """Keeps task ``task_id``'s lease for ``attempt`` fresh while the ``with`` block runs."""

    def __init__(self, sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int,
                 duration: timedelta = DEFAULT_LEASE) -> None:
        self.sessions, self.task_id, self.attempt, self.duration = sessions, task_id, attempt, duration
        self.lost = threading.Event()  # set once the task was taken over by another attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dsr-lease-{task_id.hex[:8]}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.duration.total_seconds())

    def renew(self) -> bool:
        """Push the lease one length ahead; False when the task is no longer this attempt's."""
        with self.sessions.begin() as session:
            result = cast(CursorResult[Any], session.execute(
                update(Task)
                .where(Task.id == self.task_id, Task.attempts == self.attempt, Task.status == TaskStatus.RUNNING.value)
                .values(lease_expires_at=utcnow() + self.duration)
            ))
            return result.rowcount > 0

    def _run(self) -> None:
        interval = max(self.duration.total_seconds() / 3, 0.1)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.warning("task %s attempt %d was taken over; its lease is no longer renewed",
                                self.task_id, self.attempt)
                    self.lost.set()
                    return
            except Exception as exc:  # the database is briefly away: try again at the next beat
                log.warning("renewing the lease of task %s failed: %s", self.task_id, exc)
