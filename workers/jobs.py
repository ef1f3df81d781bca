"""The jobs the queue runs. Each takes ids only and is safe to run more than once."""

from __future__ import annotations

import uuid
from datetime import timedelta

from rq import get_current_job

from dsr.domain import fulfilment, intake, planning
from dsr.models import utcnow
from dsr.runtime import current


def advance(request_id: str) -> str:
    """Move a request to its next step: for now, plan the tasks of a verified request."""
    rt = current()
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


def assemble(request_id: str) -> str:
    rt = current()
    request = fulfilment.assemble(rt.sessions, rt.datamap, rt.storage, uuid.UUID(request_id),
                                  artifact_ttl=rt.artifact_ttl, seal_key=rt.seal_key, report=rt.report_options)
    return f"{request.reference}: {request.status}"
