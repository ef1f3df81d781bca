"""One unit of work: one action (collect, erase, ...) on one store of the data map, for one request.

A ``notify`` task (an Art. 19 notice) names a recipient of the data map in ``store``, not a store."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dsr.models.base import Base, utcnow

if TYPE_CHECKING:
    from dsr.models.request import Request


class TaskAction(enum.StrEnum):
    COLLECT = "collect"
    ERASE = "erase"
    RECTIFY = "rectify"
    RESTRICT = "restrict"
    NOTIFY = "notify"  # tell a recipient of the data map (Art. 19): ``store`` holds the recipient's id


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # the store (a processor) accepted the request and answers later
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.DONE, TaskStatus.FAILED)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    store: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # What the connector reports: rows found per table, removed, retained (with reasons).
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime | None]
    # The queue job that holds this task (running) or is to run it next (queued, or a waiting task's poll):
    # the watchdog re-sends a task whose job the queue no longer has.
    job_id: Mapped[str | None] = mapped_column(String(120))
    # A running attempt renews its lease while it lives; once it has run out, its worker died and the
    # task may be taken over (``dsr.domain.recovery``).
    lease_expires_at: Mapped[datetime | None]
    runner: Mapped[str | None] = mapped_column(String(200))  # host and process id of the running attempt
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    request: Mapped[Request] = relationship(back_populates="tasks")

    __table_args__ = (
        UniqueConstraint("request_id", "store", "action", name="uq_tasks_request_store_action"),
        Index("ix_tasks_status", "status"),
    )
