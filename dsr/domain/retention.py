"""Keeping the DSR file lean (LC-72): export packages leave the delivery area once they expire.

The artifact row stays, with its size and SHA-256 (what was sent can still be proven); the file,
which is a copy of the subject's data, is deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dsr.domain import audit
from dsr.domain.packaging import Storage
from dsr.models import Artifact, utcnow

SYSTEM = "system"


def purge_expired(sessions: sessionmaker[Session], storage: Storage, *, now: datetime | None = None,
                  limit: int = 500) -> int:
    """Delete the files of expired artifacts; returns how many were purged."""
    now = now or utcnow()
    purged = 0
    with sessions.begin() as session:
        due = session.execute(
            select(Artifact).where(Artifact.purged_at.is_(None), Artifact.expires_at <= now)
            .order_by(Artifact.expires_at).limit(limit).with_for_update(skip_locked=True)
        ).scalars().all()
        for artifact in due:
            path = storage.root / artifact.path
            path.unlink(missing_ok=True)
            if path.parent != storage.root and not any(path.parent.iterdir()):
                path.parent.rmdir()
            artifact.purged_at = now
            audit.record(session, "artifact.purged", actor=SYSTEM, request_id=artifact.request_id, at=now,
                         data={"artifact_id": str(artifact.id), "sha256": artifact.sha256,
                               "downloads": artifact.downloads})
            purged += 1
    return purged
