"""The tamper-evident trail: each event stores the SHA-256 of its content and of the event before.

Changing, deleting or re-ordering a stored event breaks the chain at that point, and
``verify_chain`` names the first sequence number where it breaks. The head row is locked by each
writer, so events are numbered without gaps in commit order on PostgreSQL and SQLite alike.
Events hold references, counts and hashes: never the subject's data (the "logging dilemma").
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CTE,
    JSON,
    ColumnElement,
    FromClause,
    String,
    Text,
    Update,
    bindparam,
    cast,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from dsr.models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
HEAD_ID = 1


def event_hash(
    seq: int, at: datetime, actor: str, action: str, request_id: uuid.UUID | None,
    data: dict[str, Any], prev_hash: str,
) -> str:
    return hashlib.sha256(canonical(seq, at, actor, action, request_id, data, prev_hash).encode()).hexdigest()


def canonical(
    seq: int | str, at: datetime, actor: str, action: str, request_id: uuid.UUID | None,
    data: dict[str, Any], prev_hash: str,
) -> str:
    """The text that is hashed: sorted keys, no spaces, UTF-8 as is (``hash_in_database`` splits it)."""
    return json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "request_id": str(request_id) if request_id else None,
            "data": data,
            "prev": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def record(
    session: Session,
    action: str,
    *,
    actor: str,
    request_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; it becomes visible (and final) with its commit."""
    head = session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=HEAD_ID, seq=0, hash=GENESIS)
        session.add(head)
    when, payload = _as_stored(at, data)
    seq = head.seq + 1
    digest = event_hash(seq, when, actor, action, request_id, payload, head.hash)
    event = AuditEvent(seq=seq, at=when, actor=actor, action=action, request_id=request_id,
                       data=payload, prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq, head.hash = seq, digest
    return event


def _as_stored(at: datetime | None, data: dict[str, Any] | None) -> tuple[datetime, dict[str, Any]]:
    if at is not None and at.tzinfo is None:
        raise ValueError("audit events need an aware datetime")
    # Hash the instant as the database gives it back (UTC), or verification would see a change.
    when = (at or utcnow()).astimezone(UTC)
    return when, json.loads(json.dumps(data or {}, default=str))  # what the database will give back


# --- appending inside one PostgreSQL statement ----------------------------------------------------
# A writer that takes the head, hashes in Python and writes back holds the head's lock across round
# trips to its process; under load every other writer queues behind that (intake at 200/s). These
# build one statement that locks the head, appends and moves the head, hashing in PostgreSQL
# (sha256(), PostgreSQL 11+) over the same canonical text, so the lock lasts as long as the statement.


def locked_head() -> CTE:
    """The chain head, locked (FOR UPDATE), as a CTE: no row if the head row is missing."""
    return select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID).with_for_update().cte("head")


def appended(head: CTE, *, filled: Mapping[str, ColumnElement[str]] | None = None,
             joined: FromClause | None = None) -> CTE:
    """A CTE that inserts the event after ``head`` (``locked_head``), returning its ``seq`` and ``hash``.

    Its values are bound parameters (``appended_values``), so one statement serves every event of
    this shape. ``filled``: entries of the event's data that the statement computes (a case
    reference from a counter), text that JSON writes as is (letters, digits, ``-``); ``joined``: the
    FROM they come from, one row."""
    filled = dict(filled or {})
    seq = head.c.seq + 1
    computed = {**filled, "prev": head.c.hash, "seq": cast(seq, Text)}
    text: list[ColumnElement[Any]] = [bindparam("audit_text_0", type_=String)]
    for i, name in enumerate(_fill_order(filled), 1):
        text += [computed[name], bindparam(f"audit_text_{i}", type_=String)]
    digest = func.encode(func.sha256(func.convert_to(func.concat(*text), "UTF8")), "hex")
    stored: ColumnElement[Any] = bindparam("audit_data", type_=Text)
    for key in sorted(filled):
        stored = func.replace(stored, bindparam(f"audit_mark_{key}", type_=String), filled[key])
    table = AuditEvent.__table__
    rows = select(seq, *[bindparam(f"audit_{name}", type_=table.c[name].type)
                         for name in ("at", "actor", "action", "request_id")],
                  cast(stored, JSON), head.c.hash, digest)
    rows = rows.select_from(head.join(joined, true()) if joined is not None else head)
    return (insert(AuditEvent).from_select(["seq", "at", "actor", "action", "request_id", "data", "prev_hash", "hash"],
                                           rows)
            .returning(AuditEvent.seq, AuditEvent.hash).cte("event"))


def appended_values(action: str, *, actor: str, request_id: uuid.UUID | None = None, at: datetime | None = None,
                    data: dict[str, Any] | None = None, filled: Iterable[str] = ()) -> dict[str, Any]:
    """The parameters of ``appended`` for one event: its canonical text cut where the database fills in."""
    when, payload = _as_stored(at, data)
    filled = tuple(filled)
    marks = {name: f"dsr-fill-{uuid.uuid4().hex}" for name in ("seq", "prev", *filled)}
    shown = {**payload, **{key: marks[key] for key in filled}}
    rest = canonical(marks["seq"], when, actor, action, request_id, shown, marks["prev"])
    values: dict[str, Any] = {"audit_at": when, "audit_actor": actor, "audit_action": action,
                              "audit_request_id": request_id, "audit_data": json.dumps(shown),
                              **{f"audit_mark_{key}": marks[key] for key in filled}}
    for i, name in enumerate(_fill_order(filled)):
        piece, found, rest = rest.partition(f'"{marks[name]}"' if name == "seq" else marks[name])  # seq: a number
        if not found:
            raise ValueError(f"{name} is not where the canonical text puts it (filled keys are top-level in data)")
        values[f"audit_text_{i}"] = piece
    values[f"audit_text_{len(marks)}"] = rest
    return values


def _fill_order(filled: Iterable[str]) -> list[str]:
    # Where the canonical text (sorted keys) has them: in "data", then "prev", then "seq".
    return [*sorted(filled), "prev", "seq"]


def head_moved(event: CTE) -> Update:
    """The statement's main part: the head takes the appended event's number and hash."""
    return update(AuditHead).where(AuditHead.id == HEAD_ID).values(
        seq=select(event.c.seq).scalar_subquery(), hash=select(event.c.hash).scalar_subquery())


def ensure_head(session: Session) -> None:
    """Create the genesis head if it is missing (the migration makes it; a wiped table has none)."""
    from sqlalchemy.dialects import postgresql

    session.execute(postgresql.insert(AuditHead).values(id=HEAD_ID, seq=0, hash=GENESIS).on_conflict_do_nothing())


@dataclass(frozen=True)
class ChainReport:
    events: int
    ok: bool
    first_broken_seq: int | None = None
    problem: str | None = None


def verify_chain(session: Session, batch: int = 5000) -> ChainReport:
    """Walk the whole chain in sequence order, streaming, and report the first break."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for event in _stream(session, batch):
        count += 1
        if event.seq != expected_seq:
            return ChainReport(count, False, expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev_hash:
            return ChainReport(count, False, event.seq, "link to the previous event does not match")
        recomputed = event_hash(event.seq, event.at, event.actor, event.action, event.request_id,
                                event.data, event.prev_hash)
        if recomputed != event.hash:
            return ChainReport(count, False, event.seq, "content does not match its hash (event was changed)")
        prev_hash, expected_seq = event.hash, expected_seq + 1
    head = session.get(AuditHead, HEAD_ID)
    last = expected_seq - 1
    if head is None:
        if count:
            return ChainReport(count, False, 1, "the chain head is missing")
    elif head.seq < last:
        return ChainReport(count, False, head.seq + 1, "event is not anchored by the chain head (added behind it)")
    elif head.seq > last:
        return ChainReport(count, False, last + 1, f"the chain head names event {head.seq}: events were removed")
    elif head.hash != prev_hash:
        return ChainReport(count, False, last, "the last event does not match the chain head")
    return ChainReport(count, True)


def _stream(session: Session, batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.execute(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def events_for(session: Session, request_id: uuid.UUID) -> list[AuditEvent]:
    return list(session.execute(
        select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
    ).scalars())
