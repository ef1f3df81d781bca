"""Carrying out the planned work: collect one store's data, then assemble the package.

Both steps are idempotent. A task is claimed with a compare-and-set on its status, writes into a
directory of its own attempt, and is marked done only by that attempt; so a job that runs twice,
or a retry after a crash, never mixes two attempts' files.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from sqlalchemy import CursorResult, Result, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dsr.datamap import Category, DataMap, FieldRule
from dsr.datamap.model import RetentionRule
from dsr.domain import audit, delivery, work
from dsr.domain.errors import DomainError, InvalidTransition, NotFound
from dsr.domain.leases import DEFAULT_LEASE, Lease, lapsed, runner
from dsr.domain.packaging import ReportOptions, Storage, build_package
from dsr.exports import aging
from dsr.exports.csv_files import CsvDirectorySink, kinds_path
from dsr.exports.disclosure import DisclosingSink
from dsr.models import Artifact, Request, RequestStatus, RequestType, Task, TaskAction, TaskStatus, utcnow
from dsr.outbox import schedule
from dsr.stores import Connector, Pending, Refused, StoreUnavailable, Subject

log = logging.getLogger(__name__)

WORKER = "worker"


CLAIMABLE = (TaskStatus.QUEUED.value, TaskStatus.WAITING.value)
TERMINAL = (TaskStatus.DONE.value, TaskStatus.FAILED.value)
# A task whose attempts die this often (killed, out of memory, timed out) fails instead of being taken
# over again: something in it kills its worker, and a person must look.
MAX_ABANDONED = 3
# When a store that was answering later cannot be reached, ask again after this long (until its deadline).
UNREACHABLE_RETRY = 300


def collect(
    sessions: sessionmaker[Session],
    connector_for: Callable[[str], Connector],
    storage: Storage,
    task_id: uuid.UUID,
    *,
    final_attempt: bool,
    processor_deadline: timedelta = timedelta(days=10),
    resolve: Callable[[Subject, str], Subject] = lambda subject, _store: subject,
    after_attempt: int | None = None,
    categories: Mapping[str, Category] | None = None,
    retention: Mapping[str, RetentionRule] | None = None,
    holder: str | None = None,
    lease: timedelta = DEFAULT_LEASE,
) -> Task | None:
    """Run one collect task. Returns None when there was nothing to do: done elsewhere, held by a live
    attempt of another job, or a poll that a callback or another poll overtook (``after_attempt`` names
    the attempt a poll follows).

    ``holder`` is the queue job running this; a task still marked running for the same job was left by
    that job's earlier run, which died (the queue retries a job under its id), and is taken over at once.
    Any other running task is taken over only once its lease has run out. With ``categories`` and
    ``retention`` (the data map's), records older than their retention allows are counted
    (``counts.past_retention``) and the DPO office is told (``dsr.exports.aging``)."""
    claimed = claim(sessions, task_id, holder=holder, lease=lease, after_attempt=after_attempt)
    if claimed is None:
        return None
    checkpoint = claimed.checkpoint
    waiting = checkpoint if "waiting_since" in checkpoint else None
    earlier = dict(checkpoint.get("resume") or {})
    with Lease(sessions, task_id, claimed.attempt, lease):
        return _run_collect(sessions, connector_for, storage, task_id, claimed.attempt, claimed.store,
                            claimed.request_id, claimed.request_type, claimed.options, waiting, earlier,
                            claimed.subject, final_attempt=final_attempt, processor_deadline=processor_deadline,
                            resolve=resolve, categories=categories, retention=retention)


@dataclass(frozen=True)
class Claimed:
    """A task this attempt now holds (status running, its lease taken), and what running it needs."""

    attempt: int
    store: str
    request_id: uuid.UUID
    request_type: str
    options: dict[str, Any]  # the subject's choices, e.g. full_numbers (AC-21)
    checkpoint: dict[str, Any]
    subject: Subject
    preview: dict[str, Any]  # the request's (an erasure's plan and the subject's identities)


def claim(sessions: sessionmaker[Session], task_id: uuid.UUID, *, holder: str | None, lease: timedelta,
          after_attempt: int | None = None) -> Claimed | None:
    """Take a task for this attempt, by compare-and-set on its status; None when there is nothing to do
    (done elsewhere, held by a live attempt of another job, or a poll another run overtook)."""
    now = utcnow()
    with sessions.begin() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None or (after_attempt is not None and task.attempts != after_attempt):
            return None
        if task.status == TaskStatus.RUNNING:
            own = holder is not None and task.job_id == holder
            if not own and not lapsed(task.lease_expires_at, task.started_at, now):
                log.info("task %s is held by job %s (%s), lease until %s", task.id, task.job_id, task.runner,
                         task.lease_expires_at)
                return None
            if not abandon(session, task, actor=WORKER, now=now):
                return None
        elif task.status not in CLAIMABLE:
            return None
        task.status, task.attempts, task.started_at, task.error = TaskStatus.RUNNING.value, task.attempts + 1, now, None
        task.job_id, task.lease_expires_at, task.runner = holder, now + lease, runner()
        request = session.get(Request, task.request_id)
        assert request is not None
        return Claimed(task.attempts, task.store, task.request_id, request.type, dict(request.details or {}),
                       dict(task.checkpoint or {}),
                       Subject.from_email(request.email, case_id=str(request.id), received_at=request.received_at,
                                          request_type=request.type),
                       dict(request.preview or {}))


def abandon(session: Session, task: Task, *, actor: str, now: datetime) -> bool:
    """The attempt running ``task`` died without a word (its lease ran out, or its job is being run
    again). Record it; True when the task may run again, False when it failed for dying too often."""
    count = int((task.checkpoint or {}).get("abandoned", 0)) + 1
    task.checkpoint = {**(task.checkpoint or {}), "abandoned": count}
    audit.record(session, "task.abandoned", actor=actor, request_id=task.request_id, at=now, data={
        "store": task.store, "attempt": task.attempts, "runner": task.runner, "job": task.job_id, "times": count,
    })
    task.lease_expires_at = None
    if count < MAX_ABANDONED:
        task.status = TaskStatus.QUEUED.value
        return True
    task.status, task.finished_at = TaskStatus.FAILED.value, now
    task.error = (f"the worker running this task stopped {count} times before it finished (killed, out of memory "
                  "or timed out); find the cause in the workers' logs, then run the task again")
    audit.record(session, "task.failed", actor=actor, request_id=task.request_id, at=now,
                 data={"store": task.store, "attempt": task.attempts, "error": "abandoned"})
    settled(session, task, f"{task.attempts}-abandoned")
    return False


def settled(session: Session, task: Task, run: str) -> None:
    """``task`` has just ended (done or failed): if it was its request's last open task, schedule the
    assembly. The request row is locked first, so of two tasks ending at once exactly one sees the
    other ended and schedules it (each count runs after the other's commit)."""
    session.flush()
    session.execute(select(Request.id).where(Request.id == task.request_id).with_for_update())
    _release(session, task)
    still_open = session.scalar(select(func.count()).select_from(Task).where(
        Task.request_id == task.request_id, Task.status.not_in(TERMINAL)))
    if not still_open:
        schedule(session, work.ASSEMBLE, str(task.request_id),
                 job_id=work.assemble_id(task.request_id, f"{task.id.hex[:8]}-{run}"))


def task_key(task: Task) -> str:
    """How other tasks name this one in their checkpoint's ``after``: ``<action>:<store>``."""
    return f"{task.action}:{task.store}"


def may_start(sessions: sessionmaker[Session], task_id: uuid.UUID) -> bool:
    """Whether a task that waits for others (checkpoint ``after``) may run now. One run again by hand
    before those are done goes back to waiting for them (``_release`` starts it)."""
    with sessions.begin() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None:
            return False
        after = (task.checkpoint or {}).get("after") or []
        if not after or task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return True
        done = {task_key(t) for t in session.execute(select(Task).where(
            Task.request_id == task.request_id, Task.status == TaskStatus.DONE.value)).scalars()}
        if all(key in done for key in after):
            return True
        task.status, task.job_id = TaskStatus.WAITING.value, None
        return False


def _release(session: Session, ended: Task) -> None:
    """Tasks that wait for ``ended`` (checkpoint ``after``, a list of ``task_key``: an erasure's store
    order, a files store before the database that indexes its files) start once every task they wait
    for is done, and fail when one of those failed: their own work needs the other one finished."""
    tasks = list(session.execute(select(Task).where(Task.request_id == ended.request_id)).scalars())
    done = {task_key(t) for t in tasks if t.status == TaskStatus.DONE}
    for task in tasks:
        after = (task.checkpoint or {}).get("after") or []
        if task.status != TaskStatus.WAITING or task.job_id is not None or task_key(ended) not in after:
            continue
        if ended.status == TaskStatus.FAILED:
            task.status, task.finished_at = TaskStatus.FAILED.value, utcnow()
            task.error = (f"not run: the {ended.action} task of {ended.store} failed, and this one must run after "
                          f"it; run that one again, then this one")
            audit.record(session, "task.failed", actor=WORKER, request_id=task.request_id,
                         data={"store": task.store, "attempt": task.attempts, "error": "predecessor_failed"})
            session.flush()
            _release(session, task)
        elif all(key in done for key in after):
            task.status = TaskStatus.QUEUED.value
            job, task.job_id = work.task_job(task.action, task.id, task.attempts + 1)
            schedule(session, job, str(task.id), job_id=task.job_id)


def _run_collect(sessions: sessionmaker[Session], connector_for: Callable[[str], Connector], storage: Storage,
                 task_id: uuid.UUID, attempt: int, store: str, request_id: uuid.UUID, request_type: str,
                 options: dict[str, Any], waiting: dict[str, Any] | None, earlier: dict[str, Any],
                 subject: Subject, *, final_attempt: bool, processor_deadline: timedelta,
                 resolve: Callable[[Subject, str], Subject],
                 categories: Mapping[str, Category] | None,
                 retention: Mapping[str, RetentionRule] | None = None) -> Task | None:
    out = storage.work_dir(request_id, store, attempt)
    shutil.rmtree(out, ignore_errors=True)
    progress = _Progress(sessions, task_id, attempt, storage, out, earlier)
    try:
        subject = resolve(subject, store)
        connector = connector_for(store)
        limits = aging.limits(connector.store, categories, retention, utcnow()) if categories and retention else {}
        sink = DisclosingSink(CsvDirectorySink(out), connector.store, _scope(request_type, categories), options,
                              limits)
        progress.summary, progress.aged = sink.summary, sink.past_retention
        result = connector.collect(subject, sink, progress)
    except Pending as pending:
        days = connector.store.deadline_days
        return _wait(sessions, task_id, attempt, pending, timedelta(days=days) if days else processor_deadline)
    except StoreUnavailable as exc:
        if waiting is None or isinstance(exc, Refused):
            _fail(sessions, task_id, attempt, exc, final_attempt or isinstance(exc, Refused))
            raise
        # It had accepted the request and answers later: an outage is not the end of it before its deadline.
        days = connector.store.deadline_days
        later = Pending(waiting.get("reference", "?"), UNREACHABLE_RETRY, f"unreachable, asking again later: {exc}")
        return _wait(sessions, task_id, attempt, later, timedelta(days=days) if days else processor_deadline)
    except Exception as exc:
        _fail(sessions, task_id, attempt, exc, final_attempt)
        raise
    past = {**progress.past, **sink.past_retention()}
    with sessions.begin() as session:
        done = _rowcount(session.execute(
            update(Task)
            .where(Task.id == task_id, Task.attempts == attempt, Task.status == TaskStatus.RUNNING.value)
            .values(status=TaskStatus.DONE.value, finished_at=utcnow(), lease_expires_at=None,
                    counts={"found": result.found, "files": result.files, "total": result.total,
                            "redactions": {**progress.redactions, **sink.summary()}, "notes": result.notes,
                            **({"out_of_scope": sink.excluded()} if sink.excluded() else {}),
                            **({"past_retention": past} if past else {}),
                            **({"resumed": sorted(progress.carried)} if progress.carried else {})},
                    checkpoint={"output": str(out.relative_to(storage.root))})
        ))
        task = session.get(Task, task_id)
        if done and task is not None:
            audit.record(session, "task.completed", actor=WORKER, request_id=request_id,
                         data={"store": store, "action": "collect", "attempt": attempt, "found": result.found,
                               "files": result.files})
            if past:
                # A finding for the office before the answer goes out: counts and dates, never values.
                audit.record(session, "retention.exceeded", actor=WORKER, request_id=request_id,
                             data={"store": store, "tables": past})
            settled(session, task, str(attempt))
        return task


def _scope(request_type: str, categories: Mapping[str, Category] | None) -> Callable[[FieldRule], bool] | None:
    """Portability (Art. 20) covers only categories the data map marks portable; access covers all."""
    if request_type != RequestType.PORTABILITY or categories is None:
        return None
    return lambda rule: bool(categories.get(rule.category) and categories[rule.category].portable)


class _Progress:
    """Per-unit checkpoints in the task row. A retry adopts the units an earlier attempt finished
    (their files move into the new attempt's folder) and the connector skips them."""

    def __init__(self, sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, storage: Storage,
                 out: Path, earlier: dict[str, Any]) -> None:
        self.sessions, self.task_id, self.attempt, self.storage, self.out = sessions, task_id, attempt, storage, out
        self.units: dict[str, int] = {}
        self.redactions: dict[str, Any] = dict(earlier.get("redactions") or {})
        self.carried: set[str] = set()
        self.summary: Callable[[], dict[str, Any]] = dict
        self.past: dict[str, Any] = dict(earlier.get("past_retention") or {})
        self.aged: Callable[[], dict[str, Any]] = dict
        source = storage.root / earlier["dir"] if earlier.get("dir") else None
        if source is not None and source.is_dir():
            for unit, found in (earlier.get("done") or {}).items():
                if _move_unit(source, out, unit):
                    self.units[unit] = int(found)
                    self.carried.add(unit)
        # What earlier attempts left beyond the units adopted (a table half written when their worker died)
        # is a copy of the subject's data that nobody will use: it goes now.
        for other in out.parent.glob("attempt-*"):
            if other != out:
                shutil.rmtree(other, ignore_errors=True)

    def done(self, unit: str) -> bool:
        return unit in self.carried

    def found(self, unit: str) -> int:
        return self.units[unit]

    def complete(self, unit: str, found: int) -> None:
        self.units[unit] = found
        with self.sessions.begin() as session:
            task = session.get(Task, self.task_id, with_for_update=True)
            if task is None or task.attempts != self.attempt:
                return
            task.checkpoint = {**(task.checkpoint or {}), "resume": {
                "dir": str(self.out.relative_to(self.storage.root)), "done": dict(self.units),
                "redactions": {**self.redactions, **self.summary()},
                "past_retention": {**self.past, **self.aged()}}}


def _move_unit(source: Path, target: Path, unit: str) -> bool:
    """Move a finished unit's output (``<unit>.csv``, its column kinds, its ``<unit>.json`` twin and a
    ``<unit>/`` folder of files) between attempts."""
    moved = False
    for name in (f"{unit}.csv", kinds_path(Path(f"{unit}.csv")).name, f"{unit}.json", unit):
        if (source / name).exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source / name), str(target / name))
            moved = True
    return moved


def _wait(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, pending: Pending,
          deadline: timedelta) -> Task | None:
    """The store answers later: poll again after ``retry_after``, and fail once its deadline passed."""
    now = utcnow()
    with sessions.begin() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None or task.attempts != attempt or task.status != TaskStatus.RUNNING:
            return task  # taken over: another attempt decides
        previous = task.checkpoint or {}
        since = datetime.fromisoformat(previous["waiting_since"]) if "waiting_since" in previous else now
        task.lease_expires_at, task.job_id = None, None
        if now - since > deadline:
            task.status, task.finished_at = TaskStatus.FAILED.value, now
            task.error = (f"the store did not answer within {deadline.days} days (reference {pending.reference})"
                          if task.action != TaskAction.NOTIFY else
                          f"the recipient {task.store} was not told within {deadline.days} days: tell it, run this "
                          "task again and complete it by hand")
            audit.record(session, "task.failed", actor=WORKER, request_id=task.request_id,
                         data={"store": task.store, "attempt": attempt, "error": "deadline"})
            settled(session, task, str(attempt))
            return task
        task.status = TaskStatus.WAITING.value
        # The first answer (a processor's signed receipt) is evidence (LC-61): it is kept, not overwritten.
        # What the task carries (an erasure's plan and order) stays; a collection's resume point does not.
        task.checkpoint = {**{k: v for k, v in previous.items() if k != "resume"},
                           "reference": pending.reference, "waiting_since": since.isoformat(),
                           "first_answer": previous.get("first_answer", pending.note)}
        task.counts = {**(task.counts or {}), "notes": [pending.note] if pending.note else []}
        if "waiting_since" not in previous:
            audit.record(session, "task.waiting", actor=WORKER, request_id=task.request_id,
                         data={"store": task.store, "reference": pending.reference, "answer": pending.note})
        if pending.retry_after is not None:
            # The poll is the job that runs this task next (the watchdog re-sends it if the queue loses it);
            # without one, a callback or a person moves the task on.
            job, task.job_id = work.task_job(task.action, task.id, attempt + 1)
            schedule(session, job, str(task.id), attempt, job_id=task.job_id,
                     not_before=now + timedelta(seconds=pending.retry_after))
        return task


def complete_by_hand(session: Session, task: Task, storage: Storage, *, actor: str, note: str,
                     evidence: Sequence[tuple[str, IO[bytes]]], now: datetime) -> Task:
    """A person did a store's work (a paper archive, a system without an API) and says so, with a note
    and files as evidence. The files go into the package under the store's name; their SHA-256 and
    the note stay with the task, and the request is assembled anew."""
    if task.status != TaskStatus.WAITING:
        raise InvalidTransition(f"task {task.store} is {task.status}; only a waiting task is completed by hand")
    if not note.strip():
        raise DomainError("a note is required: what was searched or done, and what was found")
    attempt = task.attempts
    # A notice's evidence has a folder of its own: its recipient may share its name with a store.
    out = storage.work_dir(task.request_id, task.store if task.action != TaskAction.NOTIFY else f"notice-{task.store}",
                           attempt)
    shutil.rmtree(out, ignore_errors=True)
    files = []
    sink = CsvDirectorySink(out)
    used: set[str] = set()
    for original, content in evidence:
        name, n = original, 1
        while name in used:  # two files of one name must not overwrite each other in the package
            n += 1
            stem, dot, suffix = original.rpartition(".")
            name = f"{stem}-{n}.{suffix}" if dot else f"{original}-{n}"
        used.add(name)
        digest = hashlib.sha256()
        counting = _Hashing(content, digest)
        sink.add_file("evidence", name, cast(BinaryIO, counting))
        files.append({"name": name, "size": counting.size, "sha256": digest.hexdigest()})
    task.status, task.finished_at, task.error, task.job_id = TaskStatus.DONE.value, now, None, None
    task.counts = {**(task.counts or {}), "found": {}, "files": {"evidence": len(files)}, "total": len(files),
                   "note": note.strip(), "evidence": files, "completed_by": actor}
    task.checkpoint = {**(task.checkpoint or {}), "output": str(out.relative_to(storage.root))}
    audit.record(session, "task.completed_by_hand", actor=actor, request_id=task.request_id, at=now, data={
        "store": task.store, "evidence": [{"sha256": f["sha256"], "size": f["size"]} for f in files],
        "note_sha256": hashlib.sha256(note.strip().encode()).hexdigest(),
    })
    if task.action == TaskAction.NOTIFY:
        from dsr.domain import notices  # notices builds on this module

        notices.told_by_hand(session, task, actor=actor, now=now)
    settled(session, task, f"{attempt}-manual")
    return task


class _Hashing:
    """Reads through to ``inner`` while hashing and counting what was read."""

    def __init__(self, inner: IO[bytes], digest: Any) -> None:
        self.inner, self.digest, self.size = inner, digest, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def wake(session: Session, task: Task) -> bool:
    """The store says its answer is ready (a signed callback): collect now instead of at the next poll.

    Idempotent: the task leaves 'waiting', so a repeated callback wakes nothing, and the poll that was
    scheduled for this attempt finds itself overtaken and does nothing."""
    if task.status != TaskStatus.WAITING:
        return False
    task.status = TaskStatus.QUEUED.value
    job, task.job_id = work.task_job(task.action, task.id, f"{task.attempts + 1}-wake")
    schedule(session, job, str(task.id), task.attempts, job_id=task.job_id)
    return True


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _fail(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, exc: Exception,
          final_attempt: bool) -> None:
    """Record a failed attempt: the task is queued for the queue's retry of the same job, or failed after
    the last. If the database cannot take this either, the exception leaves the job all the same: the task
    stays running, the job's retry takes it over, and after the last retry the watchdog does."""
    message = f"{exc.__class__.__name__}: {exc}"[:2000]
    with sessions.begin() as session:
        status = TaskStatus.FAILED if final_attempt else TaskStatus.QUEUED
        changed = _rowcount(session.execute(
            update(Task).where(Task.id == task_id, Task.attempts == attempt, Task.status == TaskStatus.RUNNING.value)
            .values(status=status.value, error=message, finished_at=utcnow() if final_attempt else None,
                    lease_expires_at=None)
        ))
        task = session.get(Task, task_id)
        if changed and task is not None:
            audit.record(session, "task.failed" if final_attempt else "task.retrying", actor=WORKER,
                         request_id=task.request_id,
                         data={"store": task.store, "attempt": attempt, "error": exc.__class__.__name__})
            if final_attempt:
                settled(session, task, str(attempt))


def assemble(
    sessions: sessionmaker[Session], datamap: DataMap, storage: Storage, request_id: uuid.UUID,
    *, artifact_ttl: timedelta, seal_key: bytes, now: datetime | None = None,
    report: ReportOptions | None = None,
    conclude_erasure: Callable[[Session, Request, list[Task], Callable[[], datetime]], Request] | None = None,
) -> Request:
    """Once every task has ended: package what was collected, or mark the request failed.

    ``now`` (tests) stands for every moment of the run; without it the package, the request's
    ``completed_at`` and their audit events carry the moment the package was ready, not when building
    started: a large package takes minutes, and the request was not answered before it existed."""
    given = now
    clock: Callable[[], datetime] = (lambda: given) if given is not None else utcnow
    now = clock()
    with sessions.begin() as session:
        request = session.get(Request, request_id, with_for_update=True)
        if request is None:
            raise NotFound(f"no request with id {request_id}")
        if request.status != RequestStatus.IN_PROGRESS:
            return request  # assembled already, or not planned: nothing to do
        tasks = list(session.execute(select(Task).where(Task.request_id == request_id)).scalars())
        if any(not TaskStatus(t.status).terminal for t in tasks):
            return request  # a store is still working (or waiting): a later assemble job finishes
        failed = [t for t in tasks if t.status != TaskStatus.DONE]
        if failed:
            request.status = RequestStatus.FAILED.value
            request.version += 1
            notices = [t for t in failed if t.action == TaskAction.NOTIFY]  # their store names a recipient
            audit.record(session, "request.failed", actor=WORKER, request_id=request_id, at=now, data={
                "stores": {t.store: t.status for t in failed if t.action != TaskAction.NOTIFY},
                "kept": sorted(t.store for t in tasks if t.status == TaskStatus.DONE and t.action != TaskAction.NOTIFY),
                **({"recipients": {t.store: t.status for t in notices}} if notices else {}),
            })
            _copy_ended(session, request)
            return request
        if request.type == RequestType.ERASURE:
            if conclude_erasure is None:
                raise DomainError(f"request {request.reference} is an erasure; its assembly needs the stores")
            return conclude_erasure(session, request, tasks, clock)
        password = delivery.password_for(request)
        package = build_package(request, tasks, datamap, storage, now, seal_key, password, report or ReportOptions())
        now = clock()  # the package is written and sealed: this is when the request is answered
        artifact_id = uuid.uuid4()
        session.add(Artifact(
            id=artifact_id, request_id=request_id, kind="package", filename=f"{request.reference}.zip",
            media_type="application/zip", path=str(package.path.relative_to(storage.root)), size=package.size,
            sha256=package.sha256, datamap_version=datamap.version, created_at=now, expires_at=now + artifact_ttl,
            password_sealed=delivery.sealed(password, seal_key, artifact_id),
        ))
        request.status = RequestStatus.COMPLETED.value
        request.completed_at = now
        request.version += 1
        audit.record(session, "artifact.created", actor=WORKER, request_id=request_id, at=now, data={
            "kind": "package", "size": package.size, "sha256": package.sha256, "datamap_version": datamap.version,
            "password_protected": password is not None,
        })
        audit.record(session, "request.completed", actor=WORKER, request_id=request_id, at=now,
                     data={"rows": sum(t.counts.get("total", 0) for t in tasks)})
        _copy_ended(session, request)
    # The working copies are in the package now; keep no second copy of the subject's data.
    shutil.rmtree(storage.request_work_dir(request_id), ignore_errors=True)
    return request


def _copy_ended(session: Session, request: Request) -> None:
    """An access or portability answer has ended: an erasure of the same subject waiting for it goes on."""
    from dsr.domain.erasing import wake_waiting_erasures  # erasing builds on this module

    wake_waiting_erasures(session, request)
