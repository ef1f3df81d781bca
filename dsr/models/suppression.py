"""What stays of an erasure so it can be applied again after a backup is restored (ER-06, AT-32)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from dsr.models.base import Base


class Suppression(Base):
    """One carried-out erasure: the subject's identities as keyed hashes only (HMAC-SHA256 under a key
    derived from DSR_SECRET_KEY: no personal data in clear), and per store the plan that was applied
    (tables and methods, no values)."""

    __tablename__ = "suppressions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("requests.id", ondelete="SET NULL"))
    erased_at: Mapped[datetime]
    identities: Mapped[dict[str, Any]]  # identity type -> [hex HMAC, ...]
    stores: Mapped[dict[str, Any]]  # store -> {table: {method, fields, replacements}}
    replays: Mapped[int] = mapped_column(Integer, default=0)
    last_replayed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_suppressions_erased_at", "erased_at"),)
