"""DPO users and API tokens: creation and authentication.

Passwords are hashed with Argon2id (slow on purpose). API tokens are 256-bit random strings, so
a SHA-256 of them is as strong as a slow hash and keeps every API call fast.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dsr.domain import audit
from dsr.domain.errors import DomainError
from dsr.models import ApiToken, Role, User, utcnow

TOKEN_PREFIX = "dsr_"  # noqa: S105 (a prefix that makes leaked tokens easy to find, not a secret)
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role (and user, when the token belongs to one)."""

    name: str
    role: Role
    token_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.name}" if self.user_id is None else f"user:{self.user_id}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(session: Session, *, name: str, role: Role, user_id: uuid.UUID | None = None,
                     actor: str = "cli") -> tuple[ApiToken, str]:
    """Return the stored token row and the secret, which is shown once and never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(id=uuid.uuid4(), name=name, role=role.value, user_id=user_id, token_sha256=_digest(secret))
    session.add(row)
    audit.record(session, "token.created", actor=actor, data={"token_id": str(row.id), "name": name,
                                                                "role": role.value})
    return row, secret


def authenticate_token(session: Session, presented: str, *, now: datetime | None = None) -> Principal | None:
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 200:
        return None
    digest = _digest(presented)
    row = session.execute(select(ApiToken).where(ApiToken.token_sha256 == digest)).scalar_one_or_none()
    # compare_digest although the lookup already matched: keeps the check's intent explicit.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    row.last_used_at = now or utcnow()
    return Principal(row.name, Role(row.role), row.id, row.user_id)


def create_user(session: Session, *, email: str, name: str, role: Role, password: str,
                actor: str = "cli") -> User:
    if len(password) < 12:
        raise DomainError("a password needs at least 12 characters")
    email = email.strip().lower()
    if session.execute(select(User).where(User.email == email)).scalar_one_or_none():
        raise DomainError(f"a user with e-mail {email} exists already")
    user = User(id=uuid.uuid4(), email=email, name=name, role=role.value, password_hash=_hasher.hash(password))
    session.add(user)
    audit.record(session, "user.created", actor=actor, data={"user_id": str(user.id), "role": role.value})
    return user


def check_password(user: User, password: str) -> bool:
    if not user.password_hash or not user.active:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except VerificationError:
        return False
