"""The office's list of requests: filtered, ordered by the legal deadline, read page by page.

Pages are keyset pages on (``due_at``, ``id``): the next page starts after the last row of this one,
so a page costs the same at 100,000 requests as at 100 (no OFFSET), and a request that arrives or
changes while someone pages never makes a row appear twice or go missing from the pages not yet read.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from dsr.domain.errors import DomainError
from dsr.models import Request, RequestStatus

# A request is open until it is answered or refused: only open requests can be overdue or due soon.
CLOSED = (RequestStatus.COMPLETED.value, RequestStatus.REJECTED.value)
MAX_LIMIT = 200


class BadCursor(DomainError):
    """The ``after`` cursor was not one this list handed out."""


@dataclass(frozen=True)
class RequestFilter:
    statuses: Sequence[str] = ()
    types: Sequence[str] = ()
    overdue: bool | None = None  # open and past the legal deadline
    due_within_days: int | None = None  # open and due before now + this many days
    query: str | None = None  # a reference (DSR-2026-000042) or the requester's e-mail address, exactly
    channels: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Page:
    items: list[Request]
    next: str | None  # the cursor of the next page; None on the last one


def page(session: Session, wanted: RequestFilter, *, now: datetime, limit: int = 50,
         after: str | None = None) -> Page:
    """One page of the requests ``wanted`` asks for, earliest legal deadline first."""
    limit = max(1, min(limit, MAX_LIMIT))
    stmt = select(Request)
    if wanted.statuses:
        stmt = stmt.where(Request.status.in_(list(wanted.statuses)))
    if wanted.types:
        stmt = stmt.where(Request.type.in_(list(wanted.types)))
    if wanted.channels:
        stmt = stmt.where(Request.channel.in_(list(wanted.channels)))
    if wanted.overdue is not None:
        late = and_(Request.status.not_in(CLOSED), Request.due_at <= now)
        stmt = stmt.where(late if wanted.overdue else ~late)
    if wanted.due_within_days is not None:
        stmt = stmt.where(Request.status.not_in(CLOSED),
                          Request.due_at <= now + timedelta(days=wanted.due_within_days))
    if wanted.query:
        text = wanted.query.strip()
        stmt = stmt.where(or_(Request.reference == text.upper(), Request.email == text.lower()))
    if after is not None:
        due_at, request_id = _read(after)
        stmt = stmt.where(or_(Request.due_at > due_at, and_(Request.due_at == due_at, Request.id > request_id)))
    rows = list(session.execute(stmt.order_by(Request.due_at, Request.id).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _cursor(rows[-1]) if more and rows else None)


def _cursor(last: Request) -> str:
    raw = json.dumps([last.due_at.isoformat(), str(last.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        due_at, request_id = json.loads(raw)
        moment = datetime.fromisoformat(due_at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(request_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise BadCursor("after: not a cursor of this list (use the 'next' value of the previous page)") from exc
