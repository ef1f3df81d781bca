"""Art. 19 GDPR notices: each recipient of erased data is told of the erasure (N-01..N-03, AT-37).

1. ``plan`` (in ``erasing.approve``): one ``notify`` task per recipient of the data map to whom data of
   a category that the erasure deletes or changes had been disclosed, decided from the preview's
   counts (a category with nothing erased for this subject tells nobody). ``Task.store`` holds the
   recipient's id, not a store. A recipient with ``notify: none`` gets no task: the map records why
   (Art. 19: impossible or disproportionate). Every notice waits for every store's erase task
   (checkpoint ``after``): a recipient hears of the erasure once it is done.
2. ``notify`` (one job per task), by the recipient's ``notify.via`` as it was at approval:
   - ``email``: a mail through ``dsr.mail`` (SMTP, or an .eml file in development) in the recipient's
     language. A failed send is retried by the job's retries, then the task fails (a refusal for good
     at once): the request fails and the DPO office sees it (escalation, AT-37).
   - ``store``: the recipient's own store was told by its erase task (the processor's OpenDSR erasure
     request) and has confirmed: the notice is done at once, with that task's evidence reference.
   - ``manual``: a person tells the recipient and completes the task (``fulfilment.complete_by_hand``,
     with a note and evidence). Not done within the processor deadline, it fails (``_wait``).
3. Each notice records the recipient, channel, time and answer (the SMTP server's reply and the
   Message-ID, the file's name, the store's evidence, the person's note) in the task's counts, and the
   audit event ``notice.sent`` without subject data (N-03). The confirmation letter lists the
   recipients of the done notices, and only those (``split``): it never claims a notice not sent.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dsr.config import project_folder
from dsr.datamap import DataMap, Recipient
from dsr.domain import audit
from dsr.domain.errors import DomainError
from dsr.domain.fulfilment import WORKER, _fail, _wait, claim, may_start, settled, task_key
from dsr.domain.leases import DEFAULT_LEASE, Lease
from dsr.mail import Mail, Mailer, MailError
from dsr.models import Request, Task, TaskAction, TaskStatus, utcnow
from dsr.stores import Pending

log = logging.getLogger(__name__)

NOTIFY = TaskAction.NOTIFY.value
EMAIL, STORE, MANUAL, NONE = "email", "store", "manual", "none"
# A manual notice is checked once, just after its deadline: still waiting then, it fails.
DEADLINE_CHECK = timedelta(minutes=1)


# --- 1. which recipients -----------------------------------------------------------------------------

def plan(session: Session, request: Request, datamap: DataMap, erase_tasks: list[Task], *, actor: str,
         now: datetime) -> list[Task]:
    """The notices of an approved erasure, added to the session: one per recipient told, each waiting
    for every erase task."""
    after = [task_key(t) for t in erase_tasks]
    erased_stores = {t.store for t in erase_tasks}
    tasks, not_told = [], {}
    for rid, categories in sorted(recipients_of_erased(datamap, request.preview or {}).items()):
        recipient = datamap.recipients.get(rid)
        if recipient is None:
            continue  # the loader lets no category name an unknown recipient
        via = recipient.notify.via
        if via == NONE:
            not_told[rid] = NONE
            continue
        counts: dict[str, Any] = {"recipient": rid, "channel": via, "categories": sorted(categories)}
        checkpoint: dict[str, Any] = {"after": after}
        if via == STORE and recipient.notify.store in erased_stores:
            checkpoint["store"] = recipient.notify.store
        elif via == STORE:
            counts["channel"] = MANUAL  # the map changed since the preview: a person tells it instead
            counts["notes"] = [f"{recipient.notify.store}, the store to tell {rid} through, was not erased in this "
                               "request: a person tells the recipient"]
        elif via == EMAIL:
            checkpoint["identifiers"] = known_identifiers(datamap, rid)
        tasks.append(Task(request_id=request.id, store=rid, action=NOTIFY, checkpoint=checkpoint, counts=counts,
                          status=(TaskStatus.WAITING if after else TaskStatus.QUEUED).value))
    session.add_all(tasks)
    session.flush()  # a notice with nothing to wait for (queued) is sent by the caller, with the erase tasks
    audit.record(session, "notice.planned", actor=actor, request_id=request.id, at=now, data={
        "recipients": {t.store: t.counts["channel"] for t in tasks}, "not_told": not_told})
    return tasks


def recipients_of_erased(datamap: DataMap, preview: Mapping[str, Any]) -> dict[str, set[str]]:
    """Recipient -> the categories disclosed to it of which the preview deletes or changes something.

    A deleted record takes every field with it (the table's category and its fields' own); a changed
    one only the fields it changes. The processor that holds a store hears of what is erased there."""
    told: dict[str, set[str]] = defaultdict(set)
    for store_name, planned in (preview.get("stores") or {}).items():
        store = datamap.stores.get(store_name)
        for table_name, step in (planned.get("tables") or {}).items():
            deleted, changed = int(step.get("deleted") or 0), int(step.get("changed") or 0)
            if not deleted + changed:
                continue
            table = store.tables.get(table_name) if store else None
            categories: set[str] = set()
            if table is None:  # the map changed since the preview: the category it counted
                categories = {step["category"]} if step.get("category") else set()
            if table is not None and deleted:
                categories |= {table.category, *(rule.category for rule in table.fields.values())}
            if table is not None and changed:
                categories |= {table.rule(name).category for name in step.get("fields") or ()} or {table.category}
            for category in categories:
                for rid in getattr(datamap.categories.get(category), "recipients", ()):
                    told[rid].add(category)
            if store is not None and store.recipient:
                told[store.recipient] |= categories
    return dict(told)


def known_identifiers(datamap: DataMap, rid: str) -> dict[str, str]:
    """Identity (email, customer_id, ...) -> the store whose resolved value to use: the identities by
    which the recipient already knows the subject, since we disclosed them to it (the identity's field
    is of a category it receives) or it holds the store."""
    known: dict[str, str] = {}
    for store_name, store in datamap.stores.items():
        for name, spec in store.identities.items():
            if name in known:
                continue
            column = spec.get("column") or spec.get("field")
            tables = ([store.tables[spec["table"]]] if spec.get("table") in store.tables
                      else list(store.tables.values()))
            disclosed = column is not None and any(
                rid in getattr(datamap.categories.get(t.rule(str(column)).category), "recipients", ()) for t in tables)
            if store.recipient == rid or disclosed:
                known[name] = store_name
    return known


# --- 2. telling one recipient ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Notice:
    """What telling one recipient needs, read before the work (the session is closed by then)."""

    rid: str
    channel: str
    categories: list[str]
    reference: str
    checkpoint: dict[str, Any]
    identities: dict[str, dict[str, str]]  # store -> the subject's resolved identities there
    erased_at: datetime | None  # when the last erase task ended
    erase_tasks: dict[str, dict[str, Any]]  # store -> id, finished_at, evidence, reference


def notify(sessions: sessionmaker[Session], datamap: DataMap, mailer: Mailer, task_id: uuid.UUID, *,
           final_attempt: bool, holder: str | None = None, lease: timedelta = DEFAULT_LEASE,
           processor_deadline: timedelta = timedelta(days=10), after_attempt: int | None = None,
           timezone: str = "Europe/Berlin") -> Task | None:
    """Run one notify task; None when there was nothing to do (done, held by another live attempt, or
    waiting for the erasure)."""
    if not may_start(sessions, task_id):
        return None
    claimed = claim(sessions, task_id, holder=holder, lease=lease, after_attempt=after_attempt)
    if claimed is None:
        return None
    attempt = claimed.attempt
    with Lease(sessions, task_id, attempt, lease):
        try:
            notice = _read(sessions, task_id, claimed.checkpoint, claimed.preview)
            recipient = datamap.recipients.get(notice.rid)
            if recipient is None:
                raise DomainError(f"the recipient {notice.rid} is no longer in the data map: tell it by hand or "
                                  "put it back, then run this task again")
            if notice.channel == EMAIL:
                told = _by_mail(datamap, mailer, recipient, notice, timezone)
            elif notice.channel == STORE and (through := _through_store(notice)) is not None:
                told = through
            elif notice.channel == STORE:
                # The store's erase task asked nothing of the processor (its plan kept everything there, or
                # the subject has none of the identities it is asked by): nobody told the recipient yet.
                _by_hand_instead(sessions, task_id, attempt)
                raise Pending(f"notice:{notice.rid}", _until_deadline(claimed.checkpoint, processor_deadline),
                              f"{notice.checkpoint.get('store')} was not asked to erase anything, so it has not heard "
                              f"of the erasure: a person tells {recipient.name} (Art. 19 GDPR) and completes this "
                              "task with a note and evidence")
            else:
                raise Pending(f"notice:{notice.rid}", _until_deadline(claimed.checkpoint, processor_deadline),
                              f"a person tells {recipient.name} of the erasure (Art. 19 GDPR) and completes this "
                              "task with a note and evidence")
        except Pending as pending:
            return _wait(sessions, task_id, attempt, pending, processor_deadline)
        except MailError as exc:
            _fail(sessions, task_id, attempt, exc, final_attempt or exc.permanent)
            raise
        except DomainError as exc:
            _fail(sessions, task_id, attempt, exc, True)  # retrying changes nothing: a person must look
            raise
        except Exception as exc:
            _fail(sessions, task_id, attempt, exc, final_attempt)
            raise
    return _done(sessions, task_id, attempt, told)


def _read(sessions: sessionmaker[Session], task_id: uuid.UUID, checkpoint: dict[str, Any],
          preview: dict[str, Any]) -> _Notice:
    with sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        request = session.get(Request, task.request_id)
        assert request is not None
        erased = list(session.execute(select(Task).where(
            Task.request_id == task.request_id, Task.action == TaskAction.ERASE.value)).scalars())
        ends = [t.finished_at for t in erased if t.finished_at is not None]
        return _Notice(
            rid=task.store, channel=str((task.counts or {}).get("channel") or MANUAL),
            categories=list((task.counts or {}).get("categories") or []), reference=request.reference,
            checkpoint=checkpoint, identities=dict(preview.get("subject") or {}),
            erased_at=max(ends) if ends else None,
            erase_tasks={t.store: {"id": str(t.id), "status": t.status, "finished_at": t.finished_at,
                                   "evidence": (t.counts or {}).get("evidence"),
                                   "reference": (t.checkpoint or {}).get("reference")} for t in erased})


def _until_deadline(checkpoint: Mapping[str, Any], deadline: timedelta) -> float:
    """Seconds until just after a manual notice's deadline: then it is checked, and fails if still waiting.
    This is no poll: nothing is asked before then; a person completes the task."""
    now = utcnow()
    since = datetime.fromisoformat(checkpoint["waiting_since"]) if "waiting_since" in checkpoint else now
    return max((since + deadline - now).total_seconds(), 0.0) + DEADLINE_CHECK.total_seconds()


def _by_mail(datamap: DataMap, mailer: Mailer, recipient: Recipient, notice: _Notice,
             timezone: str) -> dict[str, Any]:
    if not recipient.notify.email:
        raise DomainError(f"the recipient {notice.rid} has no notify.email in the data map any more")
    locale = recipient.notify.language(recipient.country)
    erased_on = (notice.erased_at or utcnow()).astimezone(ZoneInfo(timezone)).date()
    subject, body = render(locale, reference=notice.reference, controller=datamap.controller.name,
                           reply_to=datamap.controller.dpo.email or datamap.controller.email,
                           erased_on=erased_on,
                           categories=[_title(datamap, c, locale) for c in notice.categories],
                           identifiers=_identifiers(datamap, notice, locale))
    sent = mailer.send(Mail(to=recipient.notify.email, subject=subject, body=body,
                            key=f"{notice.reference}-notice-{notice.rid}",
                            reply_to=datamap.controller.dpo.email or datamap.controller.email))
    told: dict[str, Any] = {"told_at": sent.at.isoformat(), "to": recipient.notify.email, "locale": locale,
                            "transport": sent.transport, "answer": sent.answer, "message_id": sent.message_id}
    if sent.transport == "file":
        told["file"] = sent.answer
    return told


def _identifiers(datamap: DataMap, notice: _Notice, locale: str) -> list[dict[str, str]]:
    """The subject as the recipient already knows them, and nothing more.

    Data minimisation (Art. 5(1)(c) GDPR): a notice carries no value of the subject's data beyond the
    identifiers the recipient was given by us (``known_identifiers``, decided at approval): it learns
    nothing new of the subject, while it needs them to find its copies. Every one of them is named,
    since a recipient may file the subject under any of them (a CRM by customer number, a log by
    e-mail address). What was erased is said by category, never by record."""
    out = []
    for name, store in (notice.checkpoint.get("identifiers") or {}).items():
        value = (notice.identities.get(store) or {}).get(name)
        if value:
            out.append({"label": _identity_label(datamap, name, locale), "value": str(value)})
    return out


def _identity_label(datamap: DataMap, name: str, locale: str) -> str:
    """How the map labels the field an identity is read from (``E-Mail-Adresse``), else its name."""
    for store in datamap.stores.values():
        spec = store.identities.get(name) or {}
        column = spec.get("column") or spec.get("field")
        tables = [store.tables[spec["table"]]] if spec.get("table") in store.tables else list(store.tables.values())
        for table in tables:
            rule = table.fields.get(str(column)) if column else None
            if rule is not None and rule.label:
                return rule.label.get(locale) or next(iter(rule.label.values()))
    return name


def _title(datamap: DataMap, category: str, locale: str) -> str:
    cat = datamap.categories.get(category)
    return (cat.title.get(locale) or next(iter(cat.title.values()))) if cat else category


def render(locale: str, **facts: Any) -> tuple[str, str]:
    """The notice's subject line and text from ``templates/mail/erasure_notice.<locale>.txt`` (its
    first line is the subject)."""
    env = Environment(loader=FileSystemLoader(str(project_folder("templates") / "mail")),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    text = env.get_template(f"erasure_notice.{locale}.txt").render(**facts)
    subject, _, body = text.lstrip("\n").partition("\n")
    return subject.strip(), body.strip("\n") + "\n"


def _through_store(notice: _Notice) -> dict[str, Any] | None:
    """The recipient's own store was told by its erase task (a processor's OpenDSR erasure request),
    which is done (the notice waited for it): its confirmation is the answer. None when that task
    asked the processor nothing (no confirmation, no reference): then the recipient was not told."""
    store = str(notice.checkpoint.get("store"))
    erase = notice.erase_tasks.get(store)
    if erase is None or erase["status"] != TaskStatus.DONE:
        raise DomainError(f"the erase task of {store}, through which {notice.rid} is told, is not done")
    evidence = erase["evidence"]
    answer: dict[str, Any] = {"erase_task": erase["id"], "store": store}
    if isinstance(evidence, dict):  # a processor's signed completion (AT-31)
        answer |= {"reference": evidence.get("reference") or erase["reference"], "kind": evidence.get("kind"),
                   "body_sha256": evidence.get("body_sha256")}
    elif isinstance(evidence, list):  # completed by hand: the files' hashes
        answer |= {"evidence_sha256": [f.get("sha256") for f in evidence if isinstance(f, dict)]}
    elif erase["reference"]:  # it waited for the processor, which answered
        answer["reference"] = erase["reference"]
    else:
        return None
    finished: datetime | None = erase["finished_at"]
    reference = f" ({answer['reference']})" if answer.get("reference") else ""
    return {"told_at": (finished or utcnow()).isoformat(), "transport": STORE,
            "answer": f"erasure confirmed by {store}{reference}", "evidence": answer}


def _by_hand_instead(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int) -> None:
    """A notice planned through a store that was not asked: a person tells the recipient now."""
    with sessions.begin() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is not None and task.attempts == attempt and task.status == TaskStatus.RUNNING:
            task.counts = {**(task.counts or {}), "channel": MANUAL, "planned": STORE}


def _done(sessions: sessionmaker[Session], task_id: uuid.UUID, attempt: int, told: dict[str, Any]) -> Task | None:
    with sessions.begin() as session:
        task = session.get(Task, task_id, with_for_update=True)
        if task is None or task.attempts != attempt or task.status != TaskStatus.RUNNING:
            return task  # taken over: another attempt decides
        task.status, task.finished_at, task.lease_expires_at, task.error = TaskStatus.DONE.value, utcnow(), None, None
        task.counts = {**(task.counts or {}), **told}
        _sent(session, task, actor=WORKER, at=None)
        settled(session, task, str(attempt))
        return task


def told_by_hand(session: Session, task: Task, *, actor: str, now: datetime) -> None:
    """A person told the recipient and completed the notice (``complete_by_hand``): when, for the letter."""
    task.counts = {**(task.counts or {}), "told_at": now.isoformat(), "transport": MANUAL,
                   "answer": "told by hand: see the note and evidence"}
    _sent(session, task, actor=actor, at=now)


def _sent(session: Session, task: Task, *, actor: str, at: datetime | None) -> None:
    counts = task.counts or {}
    # Who was told, how and when, and what answered: never the subject's identifiers or the mail's text.
    audit.record(session, "notice.sent", actor=actor, request_id=task.request_id, at=at, data={
        "recipient": task.store, "channel": counts.get("channel"), "transport": counts.get("transport"),
        "categories": counts.get("categories"), "told_at": counts.get("told_at"),
        **({"message_id": counts["message_id"]} if counts.get("message_id") else {}),
        **({"file": counts["file"]} if counts.get("file") else {}),
        **({"evidence": len(counts["evidence"])} if isinstance(counts.get("evidence"), list) else {})})


# --- 3. the letter -----------------------------------------------------------------------------------

def split(tasks: list[Task]) -> tuple[list[Task], list[dict[str, Any]]]:
    """A request's tasks without its notices, and the recipients told (the done notices), as the
    confirmation letter lists them: ``[{"id", "channel", "told_at"}]``."""
    others = [t for t in tasks if t.action != NOTIFY]
    told = [{"id": t.store, "channel": (t.counts or {}).get("channel"), "told_at": (t.counts or {}).get("told_at")}
            for t in sorted(tasks, key=lambda t: t.store) if t.action == NOTIFY and t.status == TaskStatus.DONE]
    return others, told

