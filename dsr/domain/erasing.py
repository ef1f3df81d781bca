"""Carrying out an erasure request (Art. 17 GDPR): preview, approval, each store's erasure, the check.

1. ``prepare`` (the request's planning job): resolves the subject's identities once, asks the store
   that knows whether the contract has ended (data map ``contract:``), plans every store
   (``dsr.domain.erasure``) and has each connector count what it would do (``preview``, which changes
   nothing). The preview, per store and table (deleted, emptied, kept, why, until when), waits on the
   request for the DPO; a setting approves it at once unless a store is over the bound.
2. ``approve`` (the DPO, or the setting): one erase task per store. A store whose erasure reads another
   store (a files store finds its blobs through the database's index) runs first; the other waits.
3. ``erase`` (one job per task): the connector erases set-based, in one transaction per store, and
   counts. A processor answers later (``Pending``), as in a collection.
4. ``conclude`` (the assembly job, once every task has ended): each store is previewed again to show
   that nothing erasable remains and the kept records are the same; then the confirmation letter.

Only counts, methods and references reach the request, the tasks and the audit trail (AT-51), never a
value of the subject's data. An erasure waits until an access or portability request of the same
subject that is under way has been answered (AT-08): the subject gets the copy first.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from dsr.datamap import DataMap
from dsr.domain import audit, erasure, notices, suppression, work
from dsr.domain.errors import DomainError, InvalidTransition, NotFound
from dsr.domain.fulfilment import WORKER, _fail, _rowcount, _wait, claim, may_start, settled
from dsr.domain.leases import DEFAULT_LEASE, Lease
from dsr.domain.packaging import Storage
from dsr.exports.sealed import seal
from dsr.models import (
    Artifact,
    Request,
    RequestStatus,
    RequestType,
    RetentionEntry,
    RetentionStatus,
    Task,
    TaskAction,
    TaskStatus,
    utcnow,
)
from dsr.outbox import schedule
from dsr.stores import Connector, NotSupported, Pending, Refused, StoreUnavailable, Subject
from dsr.stores.base import ErasureResult, TooMany

log = logging.getLogger(__name__)

SYSTEM = "system"
# Requests whose answer is a copy of the data: an erasure of the same subject waits for them (AT-08).
COPIES = (RequestType.ACCESS.value, RequestType.PORTABILITY.value)
UNDER_WAY = (RequestStatus.VERIFIED.value, RequestStatus.IN_PROGRESS.value)


class OverBound(DomainError):
    """The preview shows a store would lose or change more records than the bound allows."""


def copy_under_way() -> ColumnElement[bool]:
    """SQL, beside ``select(Request)``: an access or portability request of the same subject is
    verified and not yet answered."""
    other = aliased(Request)
    return exists().where(other.email == Request.email, other.id != Request.id, other.type.in_(COPIES),
                          other.status.in_(UNDER_WAY))


# --- 1. preview ------------------------------------------------------------------------------------

def prepare(sessions: sessionmaker[Session], datamap: DataMap, connector_for: Callable[[str], Connector],
            resolve: Callable[[Subject, str], Subject], request_id: uuid.UUID, *, auto_approve: bool,
            bound: int | None, now: datetime | None = None) -> Request | None:
    """Preview the erasure of a verified request; None when there is nothing to do yet (not verified,
    previewed already, or a copy of the subject's data is still being made). Reads only: a job that
    dies here is simply run again."""
    with sessions() as session:
        request = session.get(Request, request_id)
        if request is None:
            raise NotFound(f"no request with id {request_id}")
        if request.status != RequestStatus.VERIFIED or request.type != RequestType.ERASURE:
            return None
        if _waits_for_copy(session, request):
            log.info("%s waits for the access request of the same subject", request.reference)
            return None
        subject = Subject.from_email(request.email, case_id=str(request.id), received_at=request.received_at,
                                     request_type=request.type)
    contract_ended = _contract_ended(datamap, connector_for, resolve, subject)
    plans = erasure.plan(datamap, contract_ended=contract_ended)
    stores: dict[str, Any] = {}
    identities: dict[str, dict[str, str]] = {}
    for name, store_plan in plans.items():
        own = resolve(subject, name)
        identities[name] = dict(own.identities)
        stores[name] = _preview_store(store_plan, connector_for(name), own, datamap)
    order = erasure.waits_for(datamap)
    for name, after in order.items():
        stores[name]["after"] = after
    over = sorted(n for n, s in stores.items() if bound and s["touched"] > bound)
    preview = {"contract_ended": contract_ended, "bound": bound or None, "over_bound": over,
               "datamap_version": datamap.version, "stores": stores, "subject": identities}
    at = now or utcnow()
    with sessions.begin() as session:
        request = session.get(Request, request_id, with_for_update=True)
        if request is None or request.status != RequestStatus.VERIFIED:
            return request
        if _waits_for_copy(session, request):
            return None  # an access request was verified meanwhile: its end plans this again (AT-08)
        request.preview = preview
        request.datamap_version = datamap.version
        request.status = RequestStatus.AWAITING_APPROVAL.value
        request.version += 1
        audit.record(session, "erasure.previewed", actor=SYSTEM, request_id=request.id, at=at, data={
            "contract_ended": contract_ended, "over_bound": over,
            "stores": {n: _totals(s["tables"]) for n, s in stores.items()}})
        if auto_approve and not over:
            approve(session, request, datamap, actor=SYSTEM, now=at)
        return request


def _waits_for_copy(session: Session, request: Request) -> bool:
    return bool(session.scalar(select(Request.id).where(Request.id == request.id, copy_under_way())))


def _contract_ended(datamap: DataMap, connector_for: Callable[[str], Connector],
                    resolve: Callable[[Subject, str], Subject], subject: Subject) -> bool:
    """Whether the subject's contract has ended, as the store the map names tells (every record of the
    subject ended; no record: no contract). Without ``contract:`` in the map it counts as running, so
    data kept for the contract stays until a person decides."""
    c = datamap.contract
    if c is None:
        return False
    values = connector_for(c.store).values(resolve(subject, c.store), c.table, c.column)
    return all(str(v) in c.ended for v in values)


def _preview_store(store_plan: erasure.StorePlan, connector: Connector, subject: Subject,
                   datamap: DataMap) -> dict[str, Any]:
    by, notes = store_plan.by, []
    counts: Mapping[str, Any] = {}
    if by in (erasure.BY_CONNECTOR, erasure.BY_PROCESSOR):
        try:
            result = connector.preview(subject, store_plan.actions())
        except NotSupported as exc:
            by, notes = erasure.BY_HAND, [f"{store_plan.store}: {exc}; a person erases here"]
        else:
            counts, notes = result.tables, list(result.notes)
    tables: dict[str, dict[str, Any]] = {}
    for step in store_plan.steps:
        count = counts.get(step.table)
        action = step.action
        rule = datamap.retention.get(step.until) if step.until else None
        tables[step.table] = {
            "category": step.category, "method": step.method if by != erasure.BY_HAND else by,
            "found": count.found if count else 0, "deleted": count.deleted if count else 0,
            "changed": count.changed if count else 0, "retained": count.retained if count else 0,
            "kept": dict(step.kept) if step.kept else None,
            "provision": step.provision or (rule.reference if rule else None), "until": step.until,
            "fields": list(action.fields) if action else [],
            "replacements": dict(action.replacements) if action else {},
        }
    touched = sum(t["deleted"] + t["changed"] for t in tables.values())
    return {"by": by, "tables": tables, "touched": touched, "notes": notes}


def _totals(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    return {k: sum(int(t.get(k, 0)) for t in tables.values()) for k in ("deleted", "changed", "retained")}


# --- 2. approval -----------------------------------------------------------------------------------

def approve(session: Session, request: Request, datamap: DataMap, *, actor: str, now: datetime,
            allow_over_bound: bool = False) -> list[Task]:
    """Approve the previewed erasure: one task per store, started in the store order, and one Art. 19
    notice per recipient told once they are done (``notices``). Over the bound only with
    ``allow_over_bound`` (the DPO looked: the erasure then runs without a bound)."""
    if request.status != RequestStatus.AWAITING_APPROVAL or not request.preview:
        raise InvalidTransition(f"request {request.reference} is {request.status}; only a previewed erasure "
                                "waiting for approval can be approved")
    if _waits_for_copy(session, request):
        raise InvalidTransition(f"an access or portability request of the same subject is being answered; "
                                f"approve {request.reference} once it is (the subject gets the copy first)")
    preview: dict[str, Any] = request.preview
    over = list(preview.get("over_bound") or [])
    if over and not allow_over_bound:
        stores = ", ".join(f"{n} ({preview['stores'][n]['touched']} records)" for n in over)
        raise OverBound(f"the erasure would delete or change more records than the bound of {preview['bound']} "
                        f"in {stores}; check the preview, then approve with allow_over_bound")
    bound = None if allow_over_bound else preview.get("bound")
    tasks = []
    for name, store in preview["stores"].items():
        plan = {t: {"method": s["method"], "fields": s["fields"], "replacements": s["replacements"]}
                for t, s in store["tables"].items() if s["method"] in ("delete", "null", "retain")}
        after = [f"{TaskAction.ERASE.value}:{other}" for other in store.get("after") or []]
        tasks.append(Task(request_id=request.id, store=name, action=TaskAction.ERASE.value,
                          status=(TaskStatus.WAITING if after else TaskStatus.QUEUED).value,
                          checkpoint={"by": store["by"], "plan": plan, "after": after, "bound": bound}))
    session.add_all(tasks)
    session.flush()
    tasks += notices.plan(session, request, datamap, tasks, actor=actor, now=now)
    request.status = RequestStatus.IN_PROGRESS.value
    request.version += 1
    audit.record(session, "erasure.approved", actor=actor, request_id=request.id, at=now,
                 data={"allow_over_bound": allow_over_bound, "bound": bound})
    audit.record(session, "request.planned", actor=actor, request_id=request.id, at=now, data={
        "datamap_version": request.datamap_version,
        "tasks": [{"store": t.store, "action": t.action, "after": (t.checkpoint or {}).get("after")} for t in tasks]})
    for task in tasks:
        if task.status == TaskStatus.QUEUED:
            job, task.job_id = work.task_job(task.action, task.id, 1)
            schedule(session, job, str(task.id), job_id=task.job_id)
    return tasks


# --- 3. one store's erasure ------------------------------------------------------------------------

def erase(sessions: sessionmaker[Session], connector_for: Callable[[str], Connector], task_id: uuid.UUID, *,
          final_attempt: bool, holder: str | None = None, lease: timedelta = DEFAULT_LEASE,
          processor_deadline: timedelta = timedelta(days=10), after_attempt: int | None = None) -> Task | None:
    """Run one erase task; None when there was nothing to do (done, held by another live attempt, or
    waiting for the stores it must follow)."""
    if not may_start(sessions, task_id):
        return None
    claimed = claim(sessions, task_id, holder=holder, lease=lease, after_attempt=after_attempt)
    if claimed is None:
        return None
    identities = (claimed.preview.get("subject") or {}).get(claimed.store) or dict(claimed.subject.identities)
    subject = replace(claimed.subject, identities=identities)
    plan = erasure.decoded(claimed.checkpoint.get("plan") or {})
    by, bound = claimed.checkpoint.get("by"), claimed.checkpoint.get("bound")
    attempt, store = claimed.attempt, claimed.store
    with Lease(sessions, task_id, attempt, lease):
        try:
            if by == erasure.BY_HAND:
                # A person erases here and completes the task with evidence (as a manual collection).
                raise Pending(f"manual:{store}", None, f"{store}: a person erases the subject's data here and "
                                                       "completes this task with a note and evidence")
            result = connector_for(store).erase(subject, plan, bound=bound)
        except Pending as pending:
            days = connector_for(store).store.deadline_days if by != erasure.BY_HAND else None
            return _wait(sessions, task_id, attempt, pending, timedelta(days=days) if days else processor_deadline)
        except (TooMany, NotSupported, Refused) as exc:
            _fail(sessions, task_id, attempt, exc, True)  # retrying changes nothing: a person must look
            raise
        except StoreUnavailable as exc:
            _fail(sessions, task_id, attempt, exc, final_attempt)
            raise
        except Exception as exc:
            _fail(sessions, task_id, attempt, exc, final_attempt)
            raise
    return _done(sessions, task_id, attempt, store, claimed.request_id, result)


def _done(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, store: str, request_id: uuid.UUID,
          result: ErasureResult) -> Task | None:
    tables = {t: asdict(c) for t, c in result.tables.items()}
    totals = _totals(tables)
    with sessions.begin() as session:
        done = _rowcount(session.execute(
            update(Task)
            .where(Task.id == task_id, Task.attempts == attempt, Task.status == TaskStatus.RUNNING.value)
            .values(status=TaskStatus.DONE.value, finished_at=utcnow(), lease_expires_at=None,
                    counts={"erasure": tables, **totals, "notes": result.notes,
                            **({"evidence": result.evidence} if result.evidence else {})})))
        task = session.get(Task, task_id)
        if done and task is not None:
            # Counts and references only: never a value of what was erased (AT-51).
            audit.record(session, "task.completed", actor=WORKER, request_id=request_id,
                         data={"store": store, "action": "erase", "attempt": attempt, **totals,
                               **({"evidence": True} if result.evidence else {})})
            settled(session, task, str(attempt))
        return task


# --- 4. the check, and the letter ------------------------------------------------------------------

def conclude(session: Session, request: Request, tasks: list[Task], datamap: DataMap,
             connector_for: Callable[[str], Connector], storage: Storage, *, seal_key: bytes,
             artifact_ttl: timedelta, backup_days: int | None, clock: Callable[[], datetime],
             timezone: str = "Europe/Berlin", suppression_key: bytes | None = None) -> Request:
    """Every erase task has ended and none failed: preview each store again (nothing erasable may
    remain, the kept records must be those counted), then write the confirmation letter."""
    tasks, told = notices.split(tasks)  # the Art. 19 notices are not stores; the letter names the recipients told
    preview = dict(request.preview or {})
    now = clock()
    remaining, verified = {}, {}
    for task in tasks:
        if (task.checkpoint or {}).get("by") != erasure.BY_CONNECTOR:
            continue
        plan = erasure.decoded((task.checkpoint or {})["plan"])
        identities = (preview.get("subject") or {}).get(task.store) or {"email": request.email.strip().lower()}
        check = connector_for(task.store).preview(Subject(identities, case_id=str(request.id)), plan)
        erased = task.counts.get("erasure") or {}
        left = {t: c.deleted + c.changed for t, c in check.tables.items() if c.deleted + c.changed}
        # The subject's kept records must be the ones counted, except data that is not the subject's
        # (our staff, reached through notes the erasure deleted: fewer of them are linked to the subject).
        moved = {t: c.retained for t, c in check.tables.items()
                 if c.retained != int((erased.get(t) or {}).get("retained", 0)) and not _not_theirs(datamap, task, t)}
        if left or moved:
            remaining[task.store] = {"erasable": left, "kept_changed": moved}
        verified[task.store] = sum(c.retained for c in check.tables.values())
    if remaining:
        request.status = RequestStatus.FAILED.value
        request.version += 1
        audit.record(session, "erasure.verification_failed", actor=WORKER, request_id=request.id, at=now,
                     data={"stores": remaining})
        return request
    audit.record(session, "erasure.verified", actor=WORKER, request_id=request.id, at=now,
                 data={"kept": verified})
    if suppression_key is not None:
        suppression.record(session, request, tasks, suppression_key, now=now)
    from dsr.domain import retention_register  # ER-05: what was kept, and from when it may be erased

    retention_register.record(session, request, tasks, datamap, connector_for, now, timezone=timezone)
    outcome = {**_outcome(preview, tasks), "recipients": told}
    _dates(session, request, outcome)
    from dsr.exports.confirmation import build_confirmation, confirmation_data

    facts = {"reference": request.reference, "received_at": request.received_at, "legal_end": request.legal_end,
             "answered_at": now}
    work_dir = storage.request_work_dir(request.id)
    letter = work_dir / "confirmation" / f"{request.reference}-erasure-{request.locale}.pdf"
    info = build_confirmation(confirmation_data(datamap, facts, outcome, request.locale, backup_days=backup_days,
                                                timezone=timezone), letter)
    filename = f"{request.reference}-erasure-confirmation.pdf"
    target = storage.package_path(request.id, filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    seal(letter, target, seal_key)
    now = clock()
    session.add(Artifact(
        request_id=request.id, kind="confirmation", filename=filename, media_type="application/pdf",
        path=str(target.relative_to(storage.root)), size=info.size, sha256=info.sha256,
        datamap_version=request.datamap_version or datamap.version, created_at=now, expires_at=now + artifact_ttl))
    request.preview = {**preview, "outcome": {k: v for k, v in outcome.items() if k != "recipients"}}
    request.status = RequestStatus.COMPLETED.value
    request.completed_at = now
    request.version += 1
    totals = {k: sum(int(t.counts.get(k, 0)) for t in tasks) for k in ("deleted", "changed", "retained")}
    audit.record(session, "artifact.created", actor=WORKER, request_id=request.id, at=now, data={
        "kind": "confirmation", "size": info.size, "sha256": info.sha256, "pages": info.pages})
    audit.record(session, "request.completed", actor=WORKER, request_id=request.id, at=now, data=totals)
    shutil.rmtree(work_dir, ignore_errors=True)
    return request


def _dates(session: Session, request: Request, outcome: dict[str, Any]) -> None:
    """The register's deletion days of each kept table, for the letter (AT-30): ``erasable`` [(day, records)]."""
    entries = session.execute(select(RetentionEntry).where(
        RetentionEntry.request_id == request.id, RetentionEntry.status == RetentionStatus.KEPT.value,
        RetentionEntry.erasable_on.is_not(None))).scalars()
    for e in entries:
        table = ((outcome["stores"].get(e.store) or {}).get("tables") or {}).get(e.table_name)
        if table is not None and e.erasable_on is not None:
            table.setdefault("erasable", []).append([e.erasable_on.isoformat(), e.records])


def _not_theirs(datamap: DataMap, task: Task, table: str) -> bool:
    store = datamap.stores.get(task.store)
    spec = store.tables.get(table) if store else None
    return spec is not None and datamap.categories[spec.category].erasure == "not_applicable"


def _outcome(preview: Mapping[str, Any], tasks: list[Task]) -> dict[str, Any]:
    """What the letter reports: the preview's reasons with the counts each store gave when it erased."""
    stores: dict[str, Any] = {}
    for task in tasks:
        planned = (preview.get("stores") or {}).get(task.store) or {"tables": {}, "by": erasure.BY_CONNECTOR}
        erased = task.counts.get("erasure") or {}
        tables = {}
        for name in {*planned["tables"], *erased}:
            step = planned["tables"].get(name) or {"method": planned["by"], "category": None, "kept": None,
                                                   "provision": None, "until": None}
            count = erased.get(name) or {}
            tables[name] = {"category": step.get("category"), "method": step["method"],
                            **{k: int(count.get(k, 0)) for k in ("found", "deleted", "changed", "retained")},
                            "until": step.get("until"), "provision": step.get("provision"), "kept": step.get("kept")}
        stores[task.store] = {"by": planned["by"], "status": task.status, "tables": tables,
                              "notes": list(task.counts.get("notes") or [])}
    return {"contract_ended": bool(preview.get("contract_ended")), "stores": stores, "recipients": []}


def wake_waiting_erasures(session: Session, request: Request) -> int:
    """``request`` (an access or portability answer) has ended: erasures of the same subject that waited
    for it are planned now (AT-08)."""
    if request.type not in COPIES:
        return 0
    waiting = session.execute(select(Request).where(
        Request.email == request.email, Request.type == RequestType.ERASURE.value,
        Request.status == RequestStatus.VERIFIED.value)).scalars().all()
    for other in waiting:
        schedule(session, work.ADVANCE, str(other.id), job_id=work.advance_id(other.id, f"after-{request.reference}"))
    return len(waiting)

