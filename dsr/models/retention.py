"""The retention register (ER-05): what an erasure kept under a retention duty, and from when it may go.

One entry per request, store, table and deletion date, with how many records: counts, days, names of
tables and rule ids, never a value of the subject's data (AT-51). ``erasable_on`` is None where no date
is known yet (kept for the contract, a record without a date, a rule without a duration): a person
decides those. The daily retention run erases the entries that are due and marks them ``erased``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dsr.models.base import Base, utcnow


class RetentionStatus(enum.StrEnum):
    KEPT = "kept"  # kept, restricted, waiting for its date
    ERASED = "erased"  # erased: by the retention run, or by a later erasure request of the subject
    SUPERSEDED = "superseded"  # a later erasure request of the subject kept the records again: its entries count


class RetentionEntry(Base):
    __tablename__ = "retention_register"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # The erasure request that kept the records. No cascade: the entry must outlive a purge of the case
    # file, or the records would never be erased.
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id"), index=True)
    store: Mapped[str] = mapped_column(String(100))
    table_name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(100))  # the data map's retention rule id
    provision: Mapped[str | None] = mapped_column(String(300))  # e.g. "§ 14b UStG; § 147 AO; § 257 HGB"
    records: Mapped[int] = mapped_column(Integer)
    kept_since: Mapped[date] = mapped_column(Date)  # the day of the erasure that kept them
    erasable_on: Mapped[date | None] = mapped_column(Date)  # the first day they may be erased; None: unknown
    status: Mapped[str] = mapped_column(String(20), default=RetentionStatus.KEPT.value)
    erased_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # The daily run's question: what is kept and due by today.
        Index("ix_retention_register_status_erasable_on", "status", "erasable_on"),
        # A later erasure of the same subject: the earlier entries of a store's table.
        Index("ix_retention_register_store_table_name", "store", "table_name"),
    )
