"""Receiving a request (Art. 12(3): the clock starts at receipt) and verifying the requester."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Update, bindparam, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker

from dsr.domain import audit, work
from dsr.domain.deadlines import DeadlinePolicy
from dsr.domain.errors import InvalidTransition, NotFound
from dsr.domain.references import counted, counted_values, next_reference, reference_of
from dsr.models import Request, RequestStatus, RequestType
from dsr.outbox import schedule

SUBJECT = "subject"


@dataclass(frozen=True)
class Submission:
    type: RequestType
    email: str
    locale: str
    details: dict[str, Any] = field(default_factory=dict)
    channel: str = "api"
    password_protected: bool = False  # see dsr.domain.delivery.choose


def submit(session: Session, submission: Submission, *, received_at: datetime, policy: DeadlinePolicy,
           datamap_version: str) -> Request:
    """Store the request with its reference and its ``request.received`` event, in the caller's transaction."""
    deadline = policy.compute(received_at)
    request = Request(
        id=uuid.uuid4(),
        type=submission.type.value,
        status=RequestStatus.RECEIVED.value,
        email=submission.email.strip().lower(),
        locale=submission.locale,
        details=submission.details,
        channel=submission.channel,
        password_protected=submission.password_protected,
        received_at=received_at,
        due_at=deadline.due_at,
        legal_end=deadline.legal_end,
        target_on=deadline.target,
        verified_at=None,
        verification_method=None,
        completed_at=None,
        datamap_version=datamap_version,
        version=1,
        updated_at=received_at,
    )
    year = deadline.received_on.year
    event = {"type": request.type, "channel": request.channel, "legal_end": deadline.legal_end.isoformat(),
             "target_on": deadline.target.isoformat()}
    if session.get_bind().dialect.name == "postgresql":
        request.reference = _in_one_statement(session, request, year, event)
        make_transient_to_detached(request)  # it is stored: the session holds it as if loaded
        session.add(request)
        return request
    request.reference = next_reference(session, year)
    session.add(request)
    audit.record(session, "request.received", actor=SUBJECT, request_id=request.id, at=received_at,
                 data={"reference": request.reference, **event})
    return request


def receive(sessions: sessionmaker[Session], submission: Submission, *, received_at: datetime,
            policy: DeadlinePolicy, datamap_version: str) -> Request:
    """``submit`` in a transaction of its own, as intake over the API does.

    On PostgreSQL that is one statement, run in autocommit: it commits as it ends, so the chain head
    and the year's counter stay locked for the statement alone, never across a round trip to this
    process (which, on a busy machine, may wait its turn for a core while every other intake waits)."""
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return submit(session, submission, received_at=received_at, policy=policy, datamap_version=datamap_version)


def _in_one_statement(session: Session, request: Request, year: int, event: dict[str, str]) -> str:
    """PostgreSQL: lock the chain head, count the year's reference, insert the request and its
    event and move the head, all in one statement (locks in that order: head, then counter)."""
    values = {
        **{f"request_{c.name}": getattr(request, c.key) for c in Request.__table__.columns if c.name != "reference"},
        **counted_values(year),
        **audit.appended_values("request.received", actor=SUBJECT, request_id=request.id, at=request.received_at,
                                data=event, filled=["reference"]),
    }
    connection = session.connection()
    value = connection.execute(_received_statement(), values).scalar_one_or_none()
    if value is None:  # no head row, so nothing was written: make it and go again
        audit.ensure_head(session)
        value = connection.execute(_received_statement(), values).scalar_one()
    return str(value)


@cache
def _received_statement() -> Update:
    # Built once: every intake runs the same statement, only its parameters differ.
    head = audit.locked_head()
    counter = counted(head)
    reference = reference_of(counter.c.value)
    table = Request.__table__
    row = select(*[reference if c.name == "reference" else bindparam(f"request_{c.name}", type_=c.type)
                   for c in table.columns]).select_from(counter)
    new_request = insert(Request).from_select([c.name for c in table.columns], row).returning(Request.reference)
    new_request_cte = new_request.cte("new_request")
    appended = audit.appended(head, filled={"reference": reference}, joined=counter)
    return audit.head_moved(appended).returning(select(new_request_cte.c.reference).scalar_subquery())


def get(session: Session, request_id: uuid.UUID, *, for_update: bool = False) -> Request:
    request = session.get(Request, request_id, with_for_update=for_update)
    if request is None:
        raise NotFound(f"no request with id {request_id}")
    return request


def verify(session: Session, request: Request, *, actor: str, method: str, now: datetime) -> Request:
    """Mark the requester's identity as verified (LC-10) and start the work."""
    if request.status != RequestStatus.RECEIVED:
        raise InvalidTransition(f"request {request.reference} is {request.status}; only a received request "
                                "can be verified")
    request.status = RequestStatus.VERIFIED.value
    request.verified_at = now
    request.verification_method = method
    request.version += 1
    audit.record(session, "identity.verified", actor=actor, request_id=request.id, at=now,
                 data={"method": method})
    schedule(session, work.ADVANCE, str(request.id), job_id=work.advance_id(request.id, "plan"))
    return request
