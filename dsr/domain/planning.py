"""Planning: data map x request type -> one Task per store, fanned out as parallel jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from dsr.datamap import DataMap
from dsr.domain import audit, work
from dsr.domain.errors import InvalidTransition, NotFound
from dsr.models import Request, RequestStatus, RequestType, Task, TaskAction, TaskStatus
from dsr.outbox import schedule

SYSTEM = "system"

# Which connector action answers which right. Rights not listed here are not automated yet:
# they wait for a person (and the audit trail says so).
ACTIONS: dict[str, TaskAction] = {
    RequestType.ACCESS: TaskAction.COLLECT,
    RequestType.PORTABILITY: TaskAction.COLLECT,
}
# Request types the workers carry out: an erasure is previewed and approved first (dsr.domain.erasing).
AUTOMATED = frozenset({*ACTIONS, RequestType.ERASURE})


def plan(session: Session, request: Request, datamap: DataMap, *, now: datetime) -> list[Task]:
    """Create the tasks of a verified request and schedule them; a no-op if already planned."""
    if request.status != RequestStatus.VERIFIED:
        return []
    action = ACTIONS.get(request.type)
    if action is None:
        audit.record(session, "request.manual_handling", actor=SYSTEM, request_id=request.id, at=now,
                     data={"reason": f"{request.type} requests are not automated yet"})
        return []
    tasks = [
        Task(request_id=request.id, store=name, action=action.value, status=TaskStatus.QUEUED.value)
        for name in datamap.stores
    ]
    session.add_all(tasks)
    session.flush()
    request.status = RequestStatus.IN_PROGRESS.value
    request.datamap_version = datamap.version
    request.version += 1
    audit.record(session, "request.planned", actor=SYSTEM, request_id=request.id, at=now, data={
        "datamap_version": datamap.version, "tasks": [{"store": t.store, "action": t.action} for t in tasks],
    })
    # The last task to end schedules the assembly (fulfilment.settled): no job waits on others, so a job
    # the queue loses takes no other job with it, and the watchdog re-sends it alone.
    for task in tasks:
        task.job_id = work.collect_id(task.id, 1)
        schedule(session, work.COLLECT, str(task.id), job_id=task.job_id)
    return tasks


def rerun(session: Session, request: Request, task: Task, *, actor: str, now: datetime) -> Task:
    """Run one store's task again (after the store was mended); the request is assembled anew after it."""
    if task.request_id != request.id:
        raise NotFound(f"task {task.id} does not belong to request {request.reference}")
    if task.status != TaskStatus.FAILED:
        raise InvalidTransition(f"task {task.store} is {task.status}; only a failed task can be run again")
    if request.status not in (RequestStatus.FAILED, RequestStatus.IN_PROGRESS):
        raise InvalidTransition(f"request {request.reference} is {request.status}")
    task.status, task.error, task.finished_at = TaskStatus.QUEUED.value, None, None
    # Someone mended the cause: the count of attempts that died starts afresh, and so does the period a
    # waiting task may wait (a processor or a recipient missed its deadline: the office gives it another),
    # or the rerun would fail at once for the deadline that made it fail.
    dropped = ("abandoned", "waiting_since")
    task.checkpoint = {k: v for k, v in (task.checkpoint or {}).items() if k not in dropped} or None
    request.status = RequestStatus.IN_PROGRESS.value
    request.version += 1
    audit.record(session, "task.rerun", actor=actor, request_id=request.id, at=now,
                 data={"store": task.store, "action": task.action, "after_attempts": task.attempts})
    job, task.job_id = work.task_job(task.action, task.id, f"{task.attempts + 1}-rerun")
    schedule(session, job, str(task.id), job_id=task.job_id)
    return task
