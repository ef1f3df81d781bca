"""Expiring, single-purpose signed download links for artifacts (LC-14)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

SALT = "dsr.artifact-download.v1"


@dataclass(frozen=True)
class Link:
    """What a genuinely signed link says: the artifact, the link's number, and whether it is too old."""

    artifact_id: uuid.UUID
    number: int
    expired: bool


class LinkSigner:
    def __init__(self, secret_key: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=SALT)
        self.max_age = max_age

    def sign(self, artifact_id: uuid.UUID, link: int) -> str:
        return self._serializer.dumps({"artifact": str(artifact_id), "link": link})

    def read(self, token: str) -> Link | None:
        """The link, or None when it is forged or altered. An expired link is told apart (410, not 403):
        itsdangerous checks the signature before the age, so its payload is genuine."""
        try:
            data: Any = self._serializer.loads(token, max_age=self.max_age)
            expired = False
        except SignatureExpired as exc:
            if exc.payload is None:
                return None
            try:
                data, expired = self._serializer.load_payload(exc.payload), True
            except BadData:
                return None
        except BadData:
            return None
        try:
            # Links signed before links had numbers are link 1.
            return Link(uuid.UUID(data["artifact"]), int(data.get("link", 1)), expired)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
