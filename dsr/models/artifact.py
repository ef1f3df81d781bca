"""A file produced for a request (ZIP package, PDF report, confirmation), with its checksum."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dsr.models.base import Base, utcnow

if TYPE_CHECKING:
    from dsr.models.request import Request


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "package" (ZIP), later "report", "confirmation"
    filename: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(500))  # relative to the storage directory
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    datamap_version: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    downloads: Mapped[int] = mapped_column(Integer, default=0)  # completed downloads, through any link
    # The current download link's number (signed into it): a new link makes every older one dead.
    link: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    link_downloads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # DSR_DOWNLOAD_LIMIT
    purged_at: Mapped[datetime | None]
    # A password-protected package's password, sealed (dsr/exports/protected_zip.py), never in clear.
    # Who released it, when and through which channel is in the audit trail.
    password_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    password_released_at: Mapped[datetime | None]  # the first release
    password_releases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def password_protected(self) -> bool:
        return self.password_sealed is not None

    request: Mapped[Request] = relationship(back_populates="artifacts")
