"""Receiving a request (Art. 12(3): the clock starts at receipt) and verifying the requester."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dsr.domain import audit, work
from dsr.domain.deadlines import DeadlinePolicy
from dsr.domain.errors import InvalidTransition, NotFound
from dsr.domain.references import next_reference
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
    deadline = policy.compute(received_at)
    request = Request(
        id=uuid.uuid4(),
        reference=next_reference(session, deadline.received_on.year),
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
        datamap_version=datamap_version,
    )
    session.add(request)
    audit.record(session, "request.received", actor=SUBJECT, request_id=request.id, at=received_at, data={
        "reference": request.reference, "type": request.type, "channel": request.channel,
        "legal_end": deadline.legal_end.isoformat(), "target_on": deadline.target.isoformat(),
    })
    return request


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
