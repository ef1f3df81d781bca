"""A data subject's request: one case, one receipt date, one deadline (Art. 12(3) GDPR)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Date, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dsr.models.base import Base, utcnow

if TYPE_CHECKING:
    from dsr.models.artifact import Artifact
    from dsr.models.task import Task


class RequestType(enum.StrEnum):
    ACCESS = "access"  # Art. 15
    RECTIFICATION = "rectification"  # Art. 16
    ERASURE = "erasure"  # Art. 17
    RESTRICTION = "restriction"  # Art. 18
    PORTABILITY = "portability"  # Art. 20
    OBJECTION = "objection"  # Art. 21


class RequestStatus(enum.StrEnum):
    RECEIVED = "received"  # waiting for identity verification
    VERIFIED = "verified"  # identity confirmed, work not yet planned
    AWAITING_APPROVAL = "awaiting_approval"  # an erasure's preview waits for the DPO's approval
    IN_PROGRESS = "in_progress"  # tasks planned and running
    COMPLETED = "completed"
    FAILED = "failed"  # one or more stores could not be served; the DPO must act
    REJECTED = "rejected"


class Request(Base):
    __tablename__ = "requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=RequestStatus.RECEIVED.value)
    email: Mapped[str] = mapped_column(String(320))
    locale: Mapped[str] = mapped_column(String(5))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    channel: Mapped[str] = mapped_column(String(20), default="api")
    received_at: Mapped[datetime]
    due_at: Mapped[datetime]  # end of the legal period (exclusive), rolled over holidays
    legal_end: Mapped[date] = mapped_column(Date)
    target_on: Mapped[date] = mapped_column(Date)  # internal SLA date, before the legal end
    verified_at: Mapped[datetime | None]
    verification_method: Mapped[str | None] = mapped_column(String(40))
    completed_at: Mapped[datetime | None]
    datamap_version: Mapped[str | None] = mapped_column(String(40))
    # Delivery: the package is an AES-encrypted ZIP whose password is released through a second channel.
    # What the request will do before it does it (an erasure's counts per store and table, kept and why),
    # for the DPO to approve; then what it did, for the confirmation letter. Counts, never values.
    preview: Mapped[dict[str, Any] | None]
    password_protected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tasks: Mapped[list[Task]] = relationship(back_populates="request", order_by="Task.store")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="request", order_by="Artifact.created_at")

    __table_args__ = (
        Index("ix_requests_status_due_at", "status", "due_at"),
        Index("ix_requests_due_at_id", "due_at", "id"),  # the office's list: keyset pages by deadline
        Index("ix_requests_email", "email"),
    )


class ReferenceCounter(Base):
    """Per-year counter behind public references such as DSR-2026-000042 (atomic upsert)."""

    __tablename__ = "reference_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(Integer)
