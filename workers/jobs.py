"""The jobs the queue runs. Each takes ids only and is safe to run more than once."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from rq import get_current_job
from sqlalchemy.orm import Session

from dsr.domain import erasing, fulfilment, intake, notices, planning
from dsr.models import Request, RequestType, Task, utcnow
from dsr.runtime import Runtime, current


def advance(request_id: str) -> str:
    """Move a verified request to its next step: plan its tasks, or preview its erasure."""
    rt = current()
    with rt.sessions() as session:
        kind = intake.get(session, uuid.UUID(request_id)).type
    if kind == RequestType.ERASURE:
        previewed = erasing.prepare(rt.sessions, rt.datamap, rt.connector, rt.resolve, uuid.UUID(request_id),
                                    auto_approve=rt.settings.erasure_auto_approve,
                                    bound=rt.settings.erasure_bound or None)
        return f"{previewed.reference}: {previewed.status}" if previewed else "nothing to do yet"
    with rt.sessions.begin() as session:
        request = intake.get(session, uuid.UUID(request_id), for_update=True)
        tasks = planning.plan(session, request, rt.datamap, now=utcnow())
        return f"{request.reference}: {len(tasks)} task(s) planned"


def collect(task_id: str, after_attempt: int | None = None) -> str:
    rt = current()
    job = get_current_job()
    final = job is None or not job.retries_left
    task = fulfilment.collect(rt.sessions, rt.connector, rt.storage, uuid.UUID(task_id), final_attempt=final,
                              processor_deadline=timedelta(days=rt.settings.processor_deadline_days),
                              resolve=rt.resolve, after_attempt=after_attempt,
                              categories=rt.datamap.categories, retention=rt.datamap.retention,
                              holder=job.id if job else None,
                              lease=timedelta(seconds=rt.settings.task_lease_seconds))
    if task is None:
        return "nothing to do: done, overtaken, or held by a live attempt of another job"
    return f"{task.store}: {task.status}, {task.counts.get('total', 0)} record(s)"


def erase(task_id: str, after_attempt: int | None = None) -> str:
    rt = current()
    job = get_current_job()
    final = job is None or not job.retries_left
    task = erasing.erase(rt.sessions, rt.connector, uuid.UUID(task_id), final_attempt=final,
                         holder=job.id if job else None, lease=timedelta(seconds=rt.settings.task_lease_seconds),
                         processor_deadline=timedelta(days=rt.settings.processor_deadline_days),
                         after_attempt=after_attempt)
    if task is None:
        return "nothing to do: done, held by a live attempt, or waiting for the stores it follows"
    return f"{task.store}: {task.status}"


def notify(task_id: str, after_attempt: int | None = None) -> str:
    """Tell one recipient of an erasure (Art. 19 GDPR)."""
    rt = current()
    job = get_current_job()
    final = job is None or not job.retries_left
    task = notices.notify(rt.sessions, rt.datamap, rt.mailer, uuid.UUID(task_id), final_attempt=final,
                          holder=job.id if job else None, lease=timedelta(seconds=rt.settings.task_lease_seconds),
                          processor_deadline=timedelta(days=rt.settings.processor_deadline_days),
                          after_attempt=after_attempt, timezone=rt.settings.timezone)
    if task is None:
        return "nothing to do: done, held by a live attempt, or waiting for the erasure"
    return f"notice to {task.store}: {task.status}"


def assemble(request_id: str) -> str:
    rt = current()
    conclude = functools.partial(_conclude_erasure, rt)
    request = fulfilment.assemble(rt.sessions, rt.datamap, rt.storage, uuid.UUID(request_id),
                                  artifact_ttl=rt.artifact_ttl, seal_key=rt.seal_key, report=rt.report_options,
                                  conclude_erasure=conclude)
    return f"{request.reference}: {request.status}"


def _conclude_erasure(rt: Runtime, session: Session, request: Request, tasks: list[Task],
                      clock: Callable[[], datetime]) -> Request:
    return erasing.conclude(session, request, tasks, rt.datamap, rt.connector, rt.storage, seal_key=rt.seal_key,
                            artifact_ttl=rt.artifact_ttl, backup_days=rt.settings.backup_days, clock=clock,
                            timezone=rt.settings.timezone, suppression_key=rt.suppression_key)
