"""How the package reaches the subject: through a signed download link, optionally as an AES-256
encrypted ZIP whose password travels through a second channel (phone, letter, SMS), never with the link.

Downloads: only a download that was sent completely counts (a HEAD or a broken-off transfer does not),
and the limit counts per link. Once a link has expired or was used up, a DPO issues a new one
(``issue_link``): it can be downloaded the full number of times again, and every older link is dead.

The option is chosen at intake (or by the DPO before the package is built); the password is
generated when the package is assembled, stored only sealed, and released on request by a DPO
or agent, each release an audit event naming who released it and through which channel.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dsr.domain import audit
from dsr.domain.errors import DomainError, InvalidTransition, NotFound
from dsr.domain.planning import ACTIONS
from dsr.exports.protected_zip import new_password, seal_password, unseal_password
from dsr.models import Artifact, Request, RequestStatus, TaskAction

PACKAGE = "package"
# Ways a password is passed on; each is a channel other than the one that carries the link.
CHANNELS = ("phone", "letter", "sms", "in_person", "other")
_FINAL = (RequestStatus.COMPLETED, RequestStatus.REJECTED)


class NoPassword(DomainError):
    """The request has no password-protected package whose password could be released."""


class PackageGone(DomainError):
    """The package expired and was removed: its password would open nothing, a new link would find nothing."""


class LinkRefused(DomainError):
    """A genuine link that downloads nothing (any more); the message says why and what the subject can do."""


ASK_FOR_A_NEW_LINK = "ask the controller's data protection office for a new link"


def has_package(request_type: str) -> bool:
    """Rights answered with a package of the subject's data (Art. 15 access, Art. 20 portability)."""
    return ACTIONS.get(request_type) == TaskAction.COLLECT


def choose(request_type: str, requested: bool | None, default: bool) -> bool:
    """The option at intake: what the requester asked for, else the installation's default."""
    if requested and not has_package(request_type):
        raise DomainError(f"a {request_type} request is not answered with a package; "
                          "password protection applies to access and portability requests only")
    return has_package(request_type) and (default if requested is None else requested)


def set_password_protection(session: Session, request: Request, on: bool, *, actor: str,
                            now: datetime) -> Request:
    """The DPO switches the option before the package is built (it applies to a rebuilt package too)."""
    if on and not has_package(request.type):
        raise DomainError(f"request {request.reference} is a {request.type} request, which is not answered "
                          "with a package")
    if request.status in _FINAL:
        raise InvalidTransition(f"request {request.reference} is {request.status}; the package is built already")
    if request.password_protected != on:
        request.password_protected = on
        request.version += 1
        audit.record(session, "delivery.changed", actor=actor, request_id=request.id, at=now,
                     data={"password_protected": on})
    return request


def password_for(request: Request) -> str | None:
    """A fresh password for the package about to be built, or None when it is not protected."""
    return new_password() if request.password_protected else None


def sealed(password: str | None, seal_key: bytes, artifact_id: uuid.UUID) -> bytes | None:
    return None if password is None else seal_password(password, seal_key, artifact_id)


@dataclass(frozen=True)
class Release:
    artifact_id: uuid.UUID
    password: str
    releases: int
    first_released_at: datetime


def release_password(session: Session, request: Request, *, actor: str, channel: str, now: datetime,
                     seal_key: bytes) -> Release:
    """The password of the request's current package, for passing on through ``channel``; audited."""
    artifact = _current_package(session, request)
    if artifact is None:
        raise NoPassword(f"request {request.reference} has no package yet")
    if artifact.purged_at is not None or artifact.expires_at <= now:
        raise PackageGone(f"the package of request {request.reference} has expired; its password opens nothing")
    if artifact.password_sealed is None:
        raise NoPassword(f"the package of request {request.reference} was built without a password")
    password = unseal_password(artifact.password_sealed, seal_key, artifact.id)
    artifact.password_releases += 1
    artifact.password_released_at = artifact.password_released_at or now
    # Who, when, through which channel, and which package: never the password itself.
    audit.record(session, "package.password_released", actor=actor, request_id=request.id, at=now, data={
        "artifact_id": str(artifact.id), "channel": channel, "release": artifact.password_releases})
    return Release(artifact.id, password, artifact.password_releases, artifact.password_released_at)


def describe(session: Session, request: Request) -> dict[str, Any]:
    """What the request detail says about delivery: protected or not, and whether the password went out."""
    artifact = _current_package(session, request, lock=False)
    protected = artifact.password_protected if artifact is not None else request.password_protected
    return {
        "password_protected": protected,
        "password_released": bool(artifact and artifact.password_releases),
        "password_released_at": artifact.password_released_at if artifact else None,
        "password_releases": artifact.password_releases if artifact else 0,
    }


def _current_package(session: Session, request: Request, *, lock: bool = True) -> Artifact | None:
    query = (select(Artifact).where(Artifact.request_id == request.id, Artifact.kind == PACKAGE)
             .order_by(Artifact.created_at.desc()).limit(1))
    return session.execute(query.with_for_update() if lock else query).scalar_one_or_none()


def open_download(session: Session, artifact_id: uuid.UUID, link: int, *, link_expired: bool, limit: int,
                  now: datetime) -> Artifact:
    """The artifact that a genuinely signed link (number ``link``) may download now.

    Raises NotFound, or LinkRefused naming why: the file expired, the link expired, a newer link
    replaced it, or it was used as often as allowed. Nothing is counted here (``record_download``)."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound("no such file")
    if _gone(artifact, now):
        raise LinkRefused("this file has expired and is no longer available")
    if link_expired:
        raise LinkRefused(f"this download link has expired; {ASK_FOR_A_NEW_LINK}")
    if link != artifact.link:
        raise LinkRefused(f"this download link was replaced by a newer one; use the newest link you were sent, "
                          f"or {ASK_FOR_A_NEW_LINK}")
    if artifact.link_downloads >= limit:
        raise LinkRefused(f"this download link was used as often as allowed ({limit} downloads); "
                          f"{ASK_FOR_A_NEW_LINK}")
    return artifact


def record_download(session: Session, artifact_id: uuid.UUID, link: int, *, now: datetime) -> None:
    """A download through link ``link`` was sent completely: counted and audited. It counts against the
    limit only while that link is still the current one (a new link may have been issued meanwhile)."""
    artifact = session.get(Artifact, artifact_id, with_for_update=True)
    if artifact is None:
        return  # erased with its request while the bytes were on their way
    artifact.downloads += 1
    if artifact.link == link:
        artifact.link_downloads += 1
    audit.record(session, "artifact.downloaded", actor="link", request_id=artifact.request_id, at=now,
                 data={"artifact_id": str(artifact.id), "sha256": artifact.sha256, "link": link})


def issue_link(session: Session, artifact_id: uuid.UUID, *, actor: str, now: datetime) -> Artifact:
    """A new download link for the artifact (its number is ``artifact.link`` afterwards): the full number of
    downloads again, and every older link dead, so a used-up or leaked link does not come back; audited."""
    artifact = session.get(Artifact, artifact_id, with_for_update=True)
    if artifact is None:
        raise NotFound(f"no file with id {artifact_id}")
    if _gone(artifact, now):
        raise PackageGone("this file has expired and was removed; a new link would find nothing")
    replaced, used = artifact.link, artifact.link_downloads
    artifact.link += 1
    artifact.link_downloads = 0
    audit.record(session, "artifact.link_issued", actor=actor, request_id=artifact.request_id, at=now, data={
        "artifact_id": str(artifact.id), "link": artifact.link, "replaced": replaced, "replaced_downloads": used})
    return artifact


def _gone(artifact: Artifact, now: datetime) -> bool:
    return artifact.purged_at is not None or artifact.expires_at <= now
