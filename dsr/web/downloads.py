"""Expiring, single-purpose signed download links for artifacts (LC-14)."""

from __future__ import annotations

import uuid

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SALT = "dsr.artifact-download.v1"


class LinkSigner:
    def __init__(self, secret_key: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=SALT)
        self.max_age = max_age

    def sign(self, artifact_id: uuid.UUID) -> str:
        return self._serializer.dumps({"artifact": str(artifact_id)})

    def artifact_id(self, token: str) -> uuid.UUID | None:
        """The artifact the link is for, or None when it is forged, altered or expired."""
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
            return uuid.UUID(data["artifact"])
        except (BadSignature, SignatureExpired, KeyError, TypeError, ValueError):
            return None
