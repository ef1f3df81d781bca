"""The watchdog: finds work that no live job will finish and hands it to a new job.

A request must never wait silently: a worker killed mid-task, a queue restarted without its data, a
database away when a job wanted to record its end. The outbox covers jobs that never reached the
queue; this covers the rest, from the database's view of what should be happening:

- a **running** task whose lease ran out: its attempt died. It is queued again and resumes from its
  checkpoint (or fails after ``MAX_ABANDONED`` deaths: something in it kills workers);
- a **queued** task, or a **waiting** task with a poll, whose job the queue no longer holds: the job
  is sent again;
- an **in-progress** request whose tasks have all ended but which nobody assembled: assembled;
- a **verified** request that nobody planned: planned.

Every action is idempotent (tasks are claimed by compare-and-set) and audited. The queue is known
only through ``job_is_live``, so this module knows nothing of RQ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dsr.domain import audit, work
from dsr.domain.erasing import copy_under_way
from dsr.domain.fulfilment import TERMINAL, abandon
from dsr.domain.leases import UNLEASED_RUN
from dsr.models import OutboxJob, Request, RequestStatus, RequestType, Task, TaskStatus, utcnow
from dsr.outbox import schedule

log = logging.getLogger(__name__)

WATCHDOG = "watchdog"


@dataclass
class Recovered:
    abandoned: int = 0  # running tasks whose attempt died, queued again (or failed after dying too often)
    resent: int = 0  # queued or waiting tasks whose job the queue had lost
    assembled: int = 0  # requests whose tasks had all ended, assembly sent again
    planned: int = 0  # verified requests whose planning job was lost

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        return ", ".join(f"{getattr(self, f.name)} {f.name}" for f in fields(self))


def recover(sessions: sessionmaker[Session], job_is_live: Callable[[str], bool], *, grace: timedelta,
            automated: Collection[str], now: datetime | None = None, limit: int = 200) -> Recovered:
    """One pass. ``grace``: how long a row must have been left alone before a missing job counts as lost
    (a job is sent just after its commit). ``automated``: the request types that are planned into tasks.
    ``job_is_live`` raises when the queue cannot be asked; then nothing but expired leases is acted on."""
    now = now or utcnow()
    done = Recovered()
    done.abandoned = _expired_leases(sessions, now, limit)
    done.resent = _lost_task_jobs(sessions, job_is_live, now - grace, limit)
    done.assembled = _unassembled(sessions, job_is_live, now - grace, limit)
    done.planned = _unplanned(sessions, job_is_live, now - grace, automated, limit)
    if done:
        log.warning("watchdog: %s", done)
    return done


def _expired_leases(sessions: sessionmaker[Session], now: datetime, limit: int) -> int:
    count = 0
    with sessions.begin() as session:
        tasks = session.execute(
            select(Task).where(Task.status == TaskStatus.RUNNING.value, or_(
                Task.lease_expires_at < now,
                and_(Task.lease_expires_at.is_(None),
                     or_(Task.started_at.is_(None), Task.started_at < now - UNLEASED_RUN))))
            .order_by(Task.lease_expires_at).limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        for task in tasks:
            count += 1
            if abandon(session, task, actor=WATCHDOG, now=now):
                _send_collect(session, task, after_attempt=None)
    return count


def _lost_task_jobs(sessions: sessionmaker[Session], job_is_live: Callable[[str], bool], before: datetime,
                    limit: int) -> int:
    count = 0
    with sessions.begin() as session:
        tasks = session.execute(
            select(Task).where(
                or_(Task.status == TaskStatus.QUEUED.value,
                    and_(Task.status == TaskStatus.WAITING.value, Task.job_id.is_not(None))),
                Task.updated_at < before,
                ~exists().where(OutboxJob.job_id == Task.job_id),
            ).order_by(Task.updated_at).limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        for task in tasks:
            if task.job_id is not None and job_is_live(task.job_id):
                continue
            count += 1
            audit.record(session, "task.requeued", actor=WATCHDOG, request_id=task.request_id, data={
                "store": task.store, "status": task.status, "lost_job": task.job_id})
            # A waiting task's poll follows its attempt (a callback may overtake it); a queued one starts anew.
            _send_collect(session, task, after_attempt=task.attempts if task.status == TaskStatus.WAITING else None)
    return count


def _send_collect(session: Session, task: Task, *, after_attempt: int | None) -> None:
    job, task.job_id = work.task_job(task.action, task.id, f"{task.attempts + 1}-recovered")
    args = (str(task.id), after_attempt) if after_attempt is not None else (str(task.id),)
    schedule(session, job, *args, job_id=task.job_id)


def _unassembled(sessions: sessionmaker[Session], job_is_live: Callable[[str], bool], before: datetime,
                 limit: int) -> int:
    count = 0
    open_task = exists().where(Task.request_id == Request.id, Task.status.not_in(TERMINAL))
    last_end = select(func.max(Task.finished_at)).where(Task.request_id == Request.id).scalar_subquery()
    with sessions.begin() as session:
        requests = session.execute(
            select(Request).where(Request.status == RequestStatus.IN_PROGRESS.value, ~open_task,
                                  last_end < before).limit(limit)
        ).scalars().all()
        for request in requests:
            job_id = work.assemble_id(request.id, "recovered")
            if _in_outbox(session, f"dsr-assemble-{request.id}-") or job_is_live(job_id):
                continue
            count += 1
            audit.record(session, "request.assembly_requeued", actor=WATCHDOG, request_id=request.id, data={})
            schedule(session, work.ASSEMBLE, str(request.id), job_id=job_id)
    return count


def _unplanned(sessions: sessionmaker[Session], job_is_live: Callable[[str], bool], before: datetime,
               automated: Collection[str], limit: int) -> int:
    count = 0
    with sessions.begin() as session:
        requests = session.execute(
            select(Request).where(Request.status == RequestStatus.VERIFIED.value, Request.type.in_(automated),
                                  Request.updated_at < before,
                                  # an erasure waiting for the same subject's copy is not lost (AT-08)
                                  ~and_(Request.type == RequestType.ERASURE.value, copy_under_way()))
            .limit(limit)
        ).scalars().all()
        for request in requests:
            job_id = work.advance_id(request.id, "recovered")
            if (_in_outbox(session, f"dsr-advance-{request.id}-") or job_is_live(work.advance_id(request.id, "plan"))
                    or job_is_live(job_id)):
                continue
            count += 1
            audit.record(session, "request.planning_requeued", actor=WATCHDOG, request_id=request.id, data={})
            schedule(session, work.ADVANCE, str(request.id), job_id=job_id)
    return count


def _in_outbox(session: Session, job_id_prefix: str) -> bool:
    return bool(session.scalar(select(exists().where(OutboxJob.job_id.startswith(job_id_prefix, autoescape=True)))))
