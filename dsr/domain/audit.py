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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dsr.models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
HEAD_ID = 1


def event_hash(
    seq: int, at: datetime, actor: str, action: str, request_id: uuid.UUID | None,
    data: dict[str, Any], prev_hash: str,
) -> str:
    canonical = json.dumps(
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
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    if at is not None and at.tzinfo is None:
        raise ValueError("audit events need an aware datetime")
    # Hash the instant as the database gives it back (UTC), or verification would see a change.
    when = (at or utcnow()).astimezone(UTC)
    payload = json.loads(json.dumps(data or {}, default=str))  # what the database will give back
    seq = head.seq + 1
    digest = event_hash(seq, when, actor, action, request_id, payload, head.hash)
    event = AuditEvent(seq=seq, at=when, actor=actor, action=action, request_id=request_id,
                       data=payload, prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq, head.hash = seq, digest
    return event


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
