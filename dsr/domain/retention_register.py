"""The retention register (ER-05, AT-30, AT-33, AT-38): what an erasure kept, and its erasure on the day.

``record`` (from ``erasing.conclude``, once the check has passed): for every table an erasure kept under
a retention rule, the kept records counted per deletion date. A table whose map names the column that
dates its records (``erasure: dated_by``) is counted per day of that column, in one GROUP BY, and each
day's date computed from the rule (``dsr.domain.retention_dates``); every other kept table gets one
entry without a date: kept for the contract (the contract's end decides), records without a date (a
consent not withdrawn, an active flag), rules without a duration, tables that follow another's records
(invoice lines follow their invoice). A person decides those; the register shows them.

A later erasure request of the same subject takes over the earlier request's entries of the tables it
covers: where it erased the table (the contract has ended, say), they become ``erased``; where it kept
the table again, ``superseded`` by its own entries, counted afresh.

``run_due`` (daily, from the sweeper, or ``dsr retention run``): for each entry that is kept and due,
the store erases the subject's records of that table whose date is before the first day still kept
(set-based, one statement per table), with the identities the erasure request resolved; the tables
that follow it (invoice lines) go with the records they belong to. The entries become ``erased``, and
an audit event ``retention.erased`` says how many (counts and references only, AT-51). Idempotent; a
store that fails leaves its entries kept for the next run, and the run goes on with the others.

Holds (a disputed bill, a tax audit, legal claims: ``holds`` of a rule) are not known to dsr yet; a
future hold keeps the entries it covers past their date.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from dsr.datamap import DataMap
from dsr.datamap.model import RetentionRule
from dsr.domain import audit, erasure
from dsr.domain.retention_dates import dated, erasable_on, first_day_kept
from dsr.models import Request, RequestType, RetentionEntry, RetentionStatus, Task, TaskStatus, utcnow
from dsr.stores import Connector, NotSupported, Subject
from dsr.stores.base import TableErasure

log = logging.getLogger(__name__)

SYSTEM = "system"
KEPT, ERASED, SUPERSEDED = (s.value for s in (RetentionStatus.KEPT, RetentionStatus.ERASED,
                                              RetentionStatus.SUPERSEDED))


# --- recording what an erasure kept --------------------------------------------------------------

def record(session: Session, request: Request, tasks: list[Task], datamap: DataMap,
           connector_for: Callable[[str], Connector], now: datetime, *,
           timezone: str = "Europe/Berlin") -> list[RetentionEntry]:
    """Register what the checked erasure ``request`` kept; returns the new entries (none if they are
    there already). Counts per deletion date, never a value."""
    if session.scalar(select(exists().where(RetentionEntry.request_id == request.id))):
        return []
    preview: Mapping[str, Any] = request.preview or {}
    kept_since = now.astimezone(ZoneInfo(timezone)).date()
    entries: list[RetentionEntry] = []
    covered: dict[tuple[str, str], int | None] = {}  # (store, table) -> records kept (None: erased)
    for task in tasks:
        if task.status != TaskStatus.DONE or (task.checkpoint or {}).get("by") != erasure.BY_CONNECTOR:
            continue  # a processor's or a person's part: not kept by dsr
        planned = ((preview.get("stores") or {}).get(task.store) or {}).get("tables") or {}
        counts = task.counts.get("erasure") or {}
        subject = _subject(request, task.store)
        for table, step in planned.items():
            kept = int((counts.get(table) or {}).get("retained", 0))
            if step["method"] in ("delete", "null"):
                covered[(task.store, table)] = None
                continue
            if step["method"] != "retain" or not step.get("until"):
                continue  # not the subject's data (staff), or not carried out here
            covered[(task.store, table)] = kept
            if not kept:
                continue
            rule = datamap.retention.get(step["until"])
            for day, records in sorted(_by_date(datamap, connector_for, subject, task.store, table, rule,
                                                kept).items(), key=lambda d: (d[0] is None, d[0] or date.min)):
                entries.append(RetentionEntry(
                    request_id=request.id, store=task.store, table_name=table, category=step["category"],
                    rule=step["until"], provision=step.get("provision"), records=records, kept_since=kept_since,
                    erasable_on=day, status=KEPT, updated_at=now))
    taken = _take_over(session, request, covered, now)
    session.add_all(entries)
    session.flush()
    audit.record(session, "retention.recorded", actor=SYSTEM, request_id=request.id, at=now, data={
        "entries": [{"store": e.store, "table": e.table_name, "rule": e.rule, "records": e.records,
                     "erasable_on": e.erasable_on.isoformat() if e.erasable_on else None} for e in entries],
        **taken})
    return entries


def _subject(request: Request, store: str) -> Subject:
    """The subject as the erasure request resolved it for ``store`` (customer number, phone, ...)."""
    identities = ((request.preview or {}).get("subject") or {}).get(store) or {"email": request.email.strip().lower()}
    return Subject(identities, case_id=str(request.id), received_at=request.received_at, request_type=request.type)


def _by_date(datamap: DataMap, connector_for: Callable[[str], Connector], subject: Subject, store: str,
             table: str, rule: RetentionRule | None, kept: int) -> dict[date | None, int]:
    """Deletion date -> records, for the kept records of one table (None: no date known)."""
    spec = datamap.stores[store].tables.get(table)
    own = spec.erasure if spec is not None else None
    if rule is None or own is None or not own.dated_by or own.until != rule.id or not dated(rule):
        return {None: kept}
    try:
        days = connector_for(store).retained(subject, table, own.dated_by)
    except NotSupported as exc:
        log.warning("retention register: %s.%s kept undated: %s", store, table, exc)
        return {None: kept}
    dates: Counter[date | None] = Counter()
    for day, records in days:
        dates[erasable_on(rule, day)] += records
    return dict(dates)


def _take_over(session: Session, request: Request, covered: Mapping[tuple[str, str], int | None],
               now: datetime) -> dict[str, int]:
    """The subject's earlier entries still kept, of the tables this erasure covered: erased where it
    erased them (or kept none), superseded where it kept them again (its own entries count now)."""
    earlier = session.execute(
        select(RetentionEntry).join(Request, Request.id == RetentionEntry.request_id)
        .where(func.lower(Request.email) == request.email.strip().lower(), Request.type == RequestType.ERASURE.value,
               RetentionEntry.request_id != request.id, RetentionEntry.status == KEPT)
        .with_for_update(of=RetentionEntry)).scalars().all()
    erased = superseded = 0
    for entry in earlier:
        key = (entry.store, entry.table_name)
        if key not in covered:
            continue  # this erasure did not reach that store: the earlier entry still stands
        if covered[key]:
            entry.status, superseded = SUPERSEDED, superseded + 1
        else:
            entry.status, entry.erased_at, erased = ERASED, now, erased + 1
        entry.updated_at = now
    return {"earlier_erased": erased, "earlier_superseded": superseded}


# --- the request's entries, for the API --------------------------------------------------------

def entries_for(session: Session, request_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = session.execute(select(RetentionEntry).where(RetentionEntry.request_id == request_id).order_by(
        RetentionEntry.store, RetentionEntry.table_name, RetentionEntry.erasable_on.is_(None),
        RetentionEntry.erasable_on)).scalars()
    return [{"store": e.store, "table": e.table_name, "category": e.category, "rule": e.rule,
             "provision": e.provision, "records": e.records, "kept_since": e.kept_since,
             "erasable_on": e.erasable_on, "status": e.status, "erased_at": e.erased_at} for e in rows]


# --- the daily run -----------------------------------------------------------------------------

@dataclass
class RunReport:
    """What a run did (or, dry, would do): per request and store, the tables erased with the entries,
    the records they registered and the records the store deleted; what failed; what a person decides."""

    today: date
    dry_run: bool = False
    erased: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(int(e["deleted"]) for e in self.erased)


def run_due(sessions: sessionmaker[Session], datamap: DataMap, connector_for: Callable[[str], Connector],
            today: date, *, dry_run: bool = False, now: datetime | None = None) -> RunReport:
    """Erase what is kept and due by ``today`` (see the module's doc). ``dry_run``: count, change nothing."""
    report = RunReport(today, dry_run)
    with sessions() as session:
        groups = session.execute(
            select(RetentionEntry.request_id, RetentionEntry.store, Request.reference)
            .join(Request, Request.id == RetentionEntry.request_id)
            .where(RetentionEntry.status == KEPT, RetentionEntry.erasable_on <= today)
            .distinct().order_by(Request.reference, RetentionEntry.store)).all()
    for request_id, store, reference in groups:
        try:
            with sessions.begin() as session:
                _run_store(session, datamap, connector_for, request_id, store, today, report, dry_run,
                           now or utcnow())
        except Exception as exc:  # this store's entries stay kept for the next run; the others go on
            log.warning("retention run: store %s (request %s) failed: %s", store, request_id, exc)
            report.failed.append({"reference": reference, "store": store,
                                  "error": f"{exc.__class__.__name__}: {exc}"})
    return report


def _run_store(session: Session, datamap: DataMap, connector_for: Callable[[str], Connector],
               request_id: uuid.UUID, store: str, today: date, report: RunReport, dry_run: bool,
               now: datetime) -> None:
    request = session.get(Request, request_id)
    assert request is not None  # the foreign key keeps it
    entries = session.execute(
        select(RetentionEntry).where(RetentionEntry.request_id == request_id, RetentionEntry.store == store,
                                     RetentionEntry.status == KEPT)
        .with_for_update(skip_locked=True)).scalars().all()
    due: dict[str, list[RetentionEntry]] = {}
    for entry in entries:
        if entry.erasable_on is not None and entry.erasable_on <= today:
            due.setdefault(entry.table_name, []).append(entry)
    if not due:
        return  # another run holds them, or took them meanwhile
    if store not in datamap.stores:
        report.skipped += [{"reference": request.reference, "store": store, "table": table,
                            "records": sum(e.records for e in table_entries),
                            "reason": "the store is no longer in the data map: a person decides"}
                           for table, table_entries in due.items()]
        return
    connector = connector_for(store)
    plan: dict[str, TableErasure] = {}
    followers: dict[str, list[RetentionEntry]] = {}
    for table, table_entries in due.items():
        step = _dated_step(datamap, store, table, {e.rule for e in table_entries}, today)
        if step is None:
            report.skipped.append({"reference": request.reference, "store": store, "table": table,
                                   "records": sum(e.records for e in table_entries),
                                   "reason": "the data map no longer dates this table under the entry's rule: "
                                             "a person decides"})
            continue
        plan[table] = step
        for part in connector.parts_of(table):
            undated = [e for e in entries if e.table_name == part and e.erasable_on is None
                       and e.rule in {x.rule for x in table_entries}]
            if undated and part not in due and part not in plan:
                plan[part], followers[part] = TableErasure("delete"), undated
    if not plan:
        return
    subject = _subject(request, store)
    result = connector.preview(subject, plan) if dry_run else connector.erase(subject, plan)
    tables: dict[str, dict[str, Any]] = {}
    for table in plan:
        count = result.tables.get(table)
        registered = due.get(table) or []
        tables[table] = {"entries": len(registered), "registered": sum(e.records for e in registered),
                         "deleted": count.deleted if count else 0, "follows": table in followers}
        report.erased.append({"reference": request.reference, "store": store, "table": table, **tables[table]})
    if dry_run:
        return
    for table_entries in due.values():
        for entry in table_entries:
            if entry.table_name in plan:
                entry.status, entry.erased_at, entry.updated_at = ERASED, now, now
    if followers:
        left = connector.preview(subject, {part: TableErasure("retain") for part in followers}).tables
        for part, part_entries in followers.items():
            remaining = left[part].found if part in left else 0
            for entry in part_entries:
                if remaining:
                    entry.records, entry.updated_at = remaining, now  # lines of invoices not yet due
                else:
                    entry.status, entry.erased_at, entry.updated_at = ERASED, now, now
            tables[part]["left"] = remaining
    audit.record(session, "retention.erased", actor=SYSTEM, request_id=request.id, at=now,
                 data={"store": store, "today": today.isoformat(), "tables": tables})


def _dated_step(datamap: DataMap, store: str, table: str, rules: set[str], today: date) -> TableErasure | None:
    """The dated erasure of a table's due records: delete those dated before the first day still kept
    under the map's rule. None where the map no longer dates the table under the entries' rule."""
    spec = datamap.stores[store].tables.get(table)
    own = spec.erasure if spec is not None else None
    if own is None or not own.dated_by or own.until is None or rules != {own.until} \
            or own.until not in datamap.retention:
        return None
    cutoff = first_day_kept(datamap.retention[own.until], today)
    return None if cutoff is None else TableErasure("delete", before=(own.dated_by, cutoff))
