"""Transactional outbox: jobs are stored with the state change and sent to the queue after commit.

The queue itself is behind ``Dispatcher`` so this module knows nothing of RQ: the app factory and
the worker command plug the RQ dispatcher in. If sending fails, the rows stay and ``sweep`` sends
them later; jobs are idempotent, so a job sent twice does no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from dsr.models import OutboxJob, utcnow

log = logging.getLogger(__name__)
_PENDING = "dsr.outbox.pending"


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    function: str
    args: tuple[Any, ...]
    depends_on: tuple[str, ...] = ()
    not_before: datetime | None = None


class Dispatcher(Protocol):
    def send(self, job: JobSpec) -> None: ...

    def is_known(self, job_id: str) -> bool:
        """Whether the queue already holds this job (queued, running or deferred)."""
        ...


def schedule(session: Session, function: str, *args: Any, job_id: str, depends_on: Sequence[str] = (),
             not_before: datetime | None = None) -> None:
    """Store a job to run once the current transaction commits (and not before ``not_before``)."""
    session.add(OutboxJob(job_id=job_id, function=function, args=list(args), depends_on=list(depends_on),
                          not_before=not_before))


def install(factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
    """Make every session of ``factory`` send its outbox rows right after a successful commit."""
    from sqlalchemy import event

    @event.listens_for(factory, "after_flush")
    def _collect(session: Session, _ctx: Any) -> None:
        # In after_flush the rows are inserted (ids known) and session.new still lists them.
        new_jobs = [obj for obj in session.new if isinstance(obj, OutboxJob)]
        if new_jobs:
            pending = session.info.setdefault(_PENDING, [])
            transaction = session.get_nested_transaction() or session.get_transaction()
            pending.extend((transaction, obj.id, _spec(obj)) for obj in sorted(new_jobs, key=lambda o: o.id))

    @event.listens_for(factory, "after_commit")
    def _send(session: Session) -> None:
        pending = session.info.pop(_PENDING, [])
        if pending:
            relay(factory, dispatcher, [(row_id, spec) for _tx, row_id, spec in pending])

    @event.listens_for(factory, "after_soft_rollback")
    def _forget(session: Session, previous: SessionTransaction) -> None:
        # A rolled-back savepoint takes back only its own jobs; an outer rollback takes back all.
        pending = session.info.get(_PENDING)
        if not pending:
            return
        if previous.nested:
            session.info[_PENDING] = [p for p in pending if not _inside(p[0], previous)]
        else:
            session.info.pop(_PENDING, None)


def _inside(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def relay(factory: sessionmaker[Session], dispatcher: Dispatcher, pending: list[tuple[int, JobSpec]]) -> int:
    """Send jobs in the order they were written; delete each row once the queue has it."""
    sent: list[int] = []
    try:
        for row_id, spec in pending:
            dispatcher.send(spec)
            sent.append(row_id)
    except Exception as exc:  # the queue is down: rows stay for the sweeper
        log.warning("queue unreachable, %d job(s) left in the outbox: %s", len(pending) - len(sent), exc)
        _note_failure(factory, [row_id for row_id, _ in pending if row_id not in sent], exc)
    if sent:
        with factory.begin() as session:
            session.execute(delete(OutboxJob).where(OutboxJob.id.in_(sent)))
    return len(sent)


def sweep(factory: sessionmaker[Session], dispatcher: Dispatcher, *, older_than: timedelta,
          now: datetime | None = None, limit: int = 500) -> int:
    """Send outbox rows that the after-commit relay could not send (queue down, process died)."""
    cutoff = (now or utcnow()) - older_than
    with factory() as session:
        rows = session.execute(
            select(OutboxJob).where(OutboxJob.created_at <= cutoff).order_by(OutboxJob.id).limit(limit)
        ).scalars().all()
        pending = [(row.id, _spec(row)) for row in rows]
    if not pending:
        return 0
    # A job the queue already holds was sent before the process could delete its row: skip it.
    known = [row_id for row_id, spec in pending if _is_known(dispatcher, spec.job_id)]
    unsent = [(row_id, spec) for row_id, spec in pending if row_id not in known]
    if known:
        with factory.begin() as session:
            session.execute(delete(OutboxJob).where(OutboxJob.id.in_(known)))
    return relay(factory, dispatcher, unsent) if unsent else 0


def _is_known(dispatcher: Dispatcher, job_id: str) -> bool:
    try:
        return dispatcher.is_known(job_id)
    except Exception:  # queue down: treat as unsent; relay() records the failure on the row
        return False


def _spec(row: OutboxJob) -> JobSpec:
    return JobSpec(row.job_id, row.function, tuple(row.args), tuple(row.depends_on), row.not_before)


def _note_failure(factory: sessionmaker[Session], ids: list[int], exc: Exception) -> None:
    try:
        with factory.begin() as session:
            session.execute(
                update(OutboxJob).where(OutboxJob.id.in_(ids))
                .values(attempts=OutboxJob.attempts + 1, last_error=str(exc)[:1000])
            )
    except Exception:  # the database may be the thing that is down; the rows are still there
        log.exception("could not record the outbox failure")
