"""Erasures survive a restore (ER-06, AT-32).

Backups are not edited: they age out within the backup window. But a backup restored before then
brings erased subjects back. So each carried-out erasure leaves a suppression entry: the subject's
identities as keyed hashes (HMAC-SHA256 under a key derived from ``DSR_SECRET_KEY``; nobody can read
an e-mail address out of it, and without the key nobody can even test one), the date, and per store
the plan that was applied (tables and methods, no values).

``replay`` applies every erasure since a date again: it streams the identity values of the stores
that look subjects up (the portal's accounts), hashes each, and where one matches an entry, erases
that subject again with the entry's plans, store by store in the same order as the first time.
A restored store is then as it was after the erasures. Run it before the restored data is used.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dsr.datamap import DataMap
from dsr.domain import audit, erasure
from dsr.models import Request, Suppression, Task, TaskAction, TaskStatus, utcnow
from dsr.stores import Connector, StoreUnavailable, Subject

log = logging.getLogger(__name__)

SYSTEM = "system"


def suppression_key(secret: str) -> bytes:
    """The key identities are hashed under (separate from the keys for links and artifacts). A new
    DSR_SECRET_KEY makes older entries unmatchable: replay what is needed before rotating it."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dsr suppression v1").derive(secret.encode())


def hashed(key: bytes, kind: str, value: str) -> str:
    normal = value.strip().lower() if kind == "email" else value.strip()
    return hmac.new(key, f"{kind}:{normal}".encode(), hashlib.sha256).hexdigest()


def record(session: Session, request: Request, tasks: list[Task], key: bytes, *, now: datetime) -> Suppression:
    """The suppression entry of a carried-out erasure: every identity the stores were searched by, hashed,
    and the plan each store's connector applied."""
    identities: dict[str, set[str]] = {"email": {hashed(key, "email", request.email)}}
    for per_store in ((request.preview or {}).get("subject") or {}).values():
        for kind, value in per_store.items():
            identities.setdefault(kind, set()).add(hashed(key, kind, str(value)))
    stores = {t.store: {name: step for name, step in (t.checkpoint or {}).get("plan", {}).items()
                        if step.get("method") in ("delete", "null")}
              for t in tasks if t.action == TaskAction.ERASE and t.status == TaskStatus.DONE
              and (t.checkpoint or {}).get("by") == erasure.BY_CONNECTOR}
    entry = Suppression(request_id=request.id, erased_at=now, identities={k: sorted(v) for k, v in identities.items()},
                        stores={s: plan for s, plan in stores.items() if plan})
    session.add(entry)
    session.flush()
    audit.record(session, "suppression.recorded", actor=SYSTEM, request_id=request.id, at=now,
                 data={"suppression_id": str(entry.id), "stores": sorted(entry.stores)})
    return entry


@dataclass
class Replay:
    entries: int = 0  # erasures since the date
    found: int = 0  # of them, subjects found again in the stores
    touched: dict[str, int] = field(default_factory=dict)  # store -> records deleted or changed again
    failed: dict[str, str] = field(default_factory=dict)  # store -> why it could not be replayed


def replay(sessions: sessionmaker[Session], datamap: DataMap, connector_for: Callable[[str], Connector],
           resolve: Callable[[Subject, str], Subject], key: bytes, *, since: datetime, apply: bool = True,
           now: datetime | None = None) -> Replay:
    """Apply every erasure recorded since ``since`` again (``apply=False``: count only). Idempotent: a
    subject whose records are still gone changes nothing."""
    now = now or utcnow()
    with sessions() as session:
        entries = list(session.execute(select(Suppression).where(Suppression.erased_at >= since)
                                       .order_by(Suppression.erased_at)).scalars())
        session.expunge_all()
    report = Replay(entries=len(entries))
    if not entries:
        return report
    found = _find(datamap, connector_for, key, entries, report)
    order = {name: i for i, name in enumerate(erasure.sequence(datamap))}
    for entry in entries:
        identities = found.get(entry.id)
        if not identities:
            continue  # none of the subject's identities is back: nothing of theirs was restored there
        report.found += 1
        subject = Subject(identities, case_id=str(entry.request_id) if entry.request_id else None)
        counts: dict[str, int] = {}
        for store in sorted(entry.stores, key=lambda s: order.get(s, len(order))):
            plan = {t: step for t, step in erasure.decoded(entry.stores[store]).items()
                    if store in datamap.stores and t in datamap.stores[store].tables}
            if not plan:
                continue
            try:
                connector = connector_for(store)
                own = resolve(subject, store)
                result = connector.erase(own, plan) if apply else connector.preview(own, plan)
            except Exception as exc:
                report.failed[store] = f"{exc.__class__.__name__}: {exc}"[:500]
                log.error("replay of suppression %s in %s failed: %s", entry.id, store, exc)
                continue
            counts[store] = result.touched
            report.touched[store] = report.touched.get(store, 0) + result.touched
        if apply:
            with sessions.begin() as session:
                row = session.get(Suppression, entry.id)
                if row is not None:
                    row.replays += 1
                    row.last_replayed_at = now
                audit.record(session, "erasure.replayed", actor=SYSTEM, request_id=_existing(session, entry),
                             at=now, data={"suppression_id": str(entry.id), "touched": counts})
    return report


def _find(datamap: DataMap, connector_for: Callable[[str], Connector], key: bytes, entries: list[Suppression],
          report: Replay) -> dict[uuid.UUID, dict[str, str]]:
    """One pass over each identity a store looks subjects up by, for all entries at once."""
    wanted: dict[str, dict[str, list[uuid.UUID]]] = {}
    for entry in entries:
        for kind, values in entry.identities.items():
            for value in values:
                wanted.setdefault(kind, {}).setdefault(value, []).append(entry.id)
    found: dict[uuid.UUID, dict[str, str]] = {}
    for name, store in datamap.stores.items():
        for kind in store.identities:
            if kind not in wanted:
                continue
            try:
                values = connector_for(name).identity_values(kind)
                for value in values:
                    for entry_id in wanted[kind].get(hashed(key, kind, value), ()):
                        found.setdefault(entry_id, {}).setdefault(kind, value.strip().lower() if kind == "email"
                                                                  else value.strip())
            except StoreUnavailable as exc:
                report.failed[name] = str(exc)[:500]
    return found


def _existing(session: Session, entry: Suppression) -> Any:
    """The erasure request's id while it is on file (audit events may name it), else None."""
    if entry.request_id is None:
        return None
    return entry.request_id if session.get(Request, entry.request_id) is not None else None
