"""Carrying out the planned work: collect one store's data, then assemble the package.

Both steps are idempotent. A task is claimed with a compare-and-set on its status, writes into a
directory of its own attempt, and is marked done only by that attempt; so a job that runs twice,
or a retry after a crash, never mixes two attempts' files.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Result, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsr.datamap import DataMap
from dsr.domain import audit
from dsr.domain.errors import NotFound
from dsr.exports.csv_files import CsvDirectorySink
from dsr.exports.disclosure import DisclosingSink
from dsr.exports.package import PackedFile, build_zip
from dsr.models import Artifact, Request, RequestStatus, Task, TaskStatus, utcnow
from dsr.stores import Connector, Subject

WORKER = "worker"


@dataclass(frozen=True)
class Storage:
    root: Path

    def work_dir(self, request_id: uuid.UUID, store: str, attempt: int) -> Path:
        return self.root / "work" / str(request_id) / store / f"attempt-{attempt}"

    def request_work_dir(self, request_id: uuid.UUID) -> Path:
        return self.root / "work" / str(request_id)

    def package_path(self, request_id: uuid.UUID, filename: str) -> Path:
        return self.root / "packages" / str(request_id) / filename


def collect(
    sessions: sessionmaker[Session],
    connector_for: Callable[[str], Connector],
    storage: Storage,
    task_id: uuid.UUID,
    *,
    final_attempt: bool,
) -> Task | None:
    """Run one collect task. Returns None when there was nothing to do (already done elsewhere)."""
    with sessions.begin() as session:
        claimed = _rowcount(session.execute(
            update(Task)
            .where(Task.id == task_id, Task.status.in_([TaskStatus.QUEUED.value, TaskStatus.RUNNING.value]))
            .values(status=TaskStatus.RUNNING.value, attempts=Task.attempts + 1, started_at=utcnow(), error=None)
        ))
        if not claimed:
            return None
        task = session.get(Task, task_id)
        assert task is not None
        request = session.get(Request, task.request_id)
        assert request is not None
        attempt, store, request_id, email = task.attempts, task.store, task.request_id, request.email

    out = storage.work_dir(request_id, store, attempt)
    shutil.rmtree(out, ignore_errors=True)
    try:
        connector = connector_for(store)
        sink = DisclosingSink(CsvDirectorySink(out), connector.store)
        result = connector.collect(Subject.from_email(email), sink)
    except Exception as exc:
        _fail(sessions, task_id, attempt, exc, final_attempt)
        raise
    with sessions.begin() as session:
        done = _rowcount(session.execute(
            update(Task)
            .where(Task.id == task_id, Task.attempts == attempt, Task.status == TaskStatus.RUNNING.value)
            .values(status=TaskStatus.DONE.value, finished_at=utcnow(),
                    counts={"found": result.found, "files": result.files, "total": result.total,
                            "redactions": sink.summary(), "notes": result.notes},
                    checkpoint={"output": str(out.relative_to(storage.root))})
        ))
        if done:
            audit.record(session, "task.completed", actor=WORKER, request_id=request_id,
                         data={"store": store, "action": "collect", "attempt": attempt, "found": result.found})
        return session.get(Task, task_id)


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _fail(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, exc: Exception,
          final_attempt: bool) -> None:
    message = f"{exc.__class__.__name__}: {exc}"[:2000]
    with sessions.begin() as session:
        status = TaskStatus.FAILED if final_attempt else TaskStatus.QUEUED
        changed = _rowcount(session.execute(
            update(Task).where(Task.id == task_id, Task.attempts == attempt)
            .values(status=status.value, error=message, finished_at=utcnow() if final_attempt else None)
        ))
        task = session.get(Task, task_id)
        if changed and task is not None:
            audit.record(session, "task.failed" if final_attempt else "task.retrying", actor=WORKER,
                         request_id=task.request_id,
                         data={"store": task.store, "attempt": attempt, "error": exc.__class__.__name__})


def assemble(
    sessions: sessionmaker[Session], datamap: DataMap, storage: Storage, request_id: uuid.UUID,
    *, artifact_ttl: timedelta, now: datetime | None = None,
) -> Request:
    """Once every task has ended: package what was collected, or mark the request failed."""
    now = now or utcnow()
    with sessions.begin() as session:
        request = session.get(Request, request_id, with_for_update=True)
        if request is None:
            raise NotFound(f"no request with id {request_id}")
        if request.status != RequestStatus.IN_PROGRESS:
            return request  # assembled already, or not planned: nothing to do
        tasks = list(session.execute(select(Task).where(Task.request_id == request_id)).scalars())
        failed = [t for t in tasks if t.status != TaskStatus.DONE]
        if failed:
            request.status = RequestStatus.FAILED.value
            request.version += 1
            audit.record(session, "request.failed", actor=WORKER, request_id=request_id, at=now, data={
                "stores": {t.store: t.status for t in failed},
            })
            return request
        package = _package(request, tasks, datamap, storage, now)
        session.add(Artifact(
            request_id=request_id, kind="package", filename=package.path.name, media_type="application/zip",
            path=str(package.path.relative_to(storage.root)), size=package.size, sha256=package.sha256,
            datamap_version=datamap.version, created_at=now, expires_at=now + artifact_ttl,
        ))
        request.status = RequestStatus.COMPLETED.value
        request.completed_at = now
        request.version += 1
        audit.record(session, "artifact.created", actor=WORKER, request_id=request_id, at=now, data={
            "kind": "package", "size": package.size, "sha256": package.sha256, "datamap_version": datamap.version,
        })
        audit.record(session, "request.completed", actor=WORKER, request_id=request_id, at=now,
                     data={"rows": sum(t.counts.get("total", 0) for t in tasks)})
    # The working copies are in the package now; keep no second copy of the subject's data.
    shutil.rmtree(storage.request_work_dir(request_id), ignore_errors=True)
    return request


def _package(request: Request, tasks: list[Task], datamap: DataMap, storage: Storage, now: datetime) -> PackedFile:
    sources = {t.store: storage.root / t.checkpoint["output"] for t in tasks if t.checkpoint}
    manifest = {
        "reference": request.reference, "type": request.type, "received_at": request.received_at.isoformat(),
        "produced_at": now.isoformat(), "datamap_version": datamap.version,
        "stores": {t.store: t.counts.get("found", {}) for t in tasks},
    }
    return build_zip(sources, storage.package_path(request.id, f"{request.reference}.zip"), manifest)
