"""Signed status callbacks from processors: ``POST /api/v1/callbacks/<protocol>/<store>/<request id>``.

The connector puts this address in ``status_callback_urls`` (OpenDSR) or the webhook request, with
the dsr request id in the path, so a callback finds its task directly (one task per request, store
and action) and the ``subject_request_id`` in the body must be the one derived from that id and
store. Nothing is parsed before the signature over the raw body checked out (see
``dsr.stores.processor`` for the scheme): a missing signature is 401, a wrong or stale one 403, and
neither changes anything. An address that names no processor store is answered exactly so too.

A callback saying the request ended (completed, cancelled, failed) wakes the waiting task: its
collect job runs now instead of at the next poll. A webhook recipient's answer (inline tables or a
``results_url``) is kept for that job in the instance folder and removed once collected. A callback
wakes a task at most once per attempt (the ``processor.callback`` audit event records it), so a
repeated callback changes nothing. Every accepted callback is answered 204.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from flask import current_app
from flask import request as http
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.orm import Session

from dsr.datamap import UnsetVariable
from dsr.domain import audit, fulfilment
from dsr.models import AuditEvent, Task, TaskAction, TaskStatus
from dsr.stores.processor import (
    CALLBACK_PREFIX,
    PROTOCOLS,
    SIGNATURE_HEADER,
    STATES,
    TERMINAL_STATES,
    TIMESTAMP_HEADER,
    SignatureError,
    callback_secret,
    inbox_path,
    subject_request_id,
    verify_headers,
)
from dsr.web.context import runtime
from dsr.web.json_body import JSONBlueprint

log = logging.getLogger(__name__)

blp = JSONBlueprint("callbacks", __name__, url_prefix=CALLBACK_PREFIX,
                description="Signed status callbacks from processors (OpenDSR, generic webhook)")
ACTION = "processor.callback"
_SIGNED = [
    {"in": "header", "name": TIMESTAMP_HEADER, "required": True, "schema": {"type": "string"},
     "description": "Unix time in seconds; refused when more than 300 s away"},
    {"in": "header", "name": SIGNATURE_HEADER, "required": True, "schema": {"type": "string"},
     "description": "sha256=<hex HMAC-SHA256(shared secret, '<timestamp>.' + raw body)>"},
]


@blp.route("/<protocol>/<store>/<uuid:request_id>")
class Callback(MethodView):
    @blp.doc(security=[], parameters=_SIGNED)
    @blp.response(204)
    @blp.alt_response(400, description="Signed, but not a status callback for this request")
    @blp.alt_response(401, description="No signature")
    @blp.alt_response(403, description="Wrong or stale signature (also for an address that names no processor "
                                       "store, or whose store's shared secret is not configured)")
    @blp.alt_response(404, description="Signed correctly, but the request has no task for this store")
    def post(self, protocol: str, store: str, request_id: uuid.UUID) -> None:
        """A processor reports the status of a request (OpenDSR callback or webhook answer)."""
        rt = runtime()
        spec = rt.datamap.stores.get(store)
        secret = ""
        try:
            known = (protocol in PROTOCOLS and spec is not None and spec.connector == "processor"
                     and spec.setting("protocol", "opendsr") == protocol)
            if known and spec is not None:
                # The one secret of the store the web tier needs (its other variables are the workers').
                secret = callback_secret(spec)
        except UnsetVariable as exc:
            log.error("callback for store %s refused: %s", store, exc)
        raw = http.get_data(cache=True)
        try:
            # Checked against a secret nobody has where the address names no processor store (or its
            # secret is not set): every address then answers alike, 401 or 403, so an unsigned caller
            # learns nothing of which stores exist.
            verify_headers(secret or secrets.token_bytes(32), raw, http.headers)  # before the body is read
        except SignatureError as exc:
            log.warning("callback for %r/%r refused: %s", protocol[:64], store[:64], exc)
            _abort(401 if exc.missing else 403, f"the callback is not signed correctly: {exc}")
        message = _parse(raw)
        # Each of a case's tasks at a processor has its own id: the collection's, or the erasure's.
        actions = {subject_request_id(str(request_id), store, action): action
                   for action in (TaskAction.COLLECT.value, TaskAction.ERASE.value)}
        reference = str(message.get("subject_request_id"))
        if reference not in actions:
            _abort(400, "subject_request_id does not belong to this callback address")
        state = message.get("request_status")
        if state not in STATES:
            _abort(400, f"request_status must be one of {', '.join(STATES)}")
        # OpenDSR 8.8: the echoed callback URL must be this endpoint ("ends with": a proxy may strip a prefix).
        echoed = message.get("status_callback_url")
        if echoed is not None and not urlsplit(str(echoed)).path.rstrip("/").endswith(http.path.rstrip("/")):
            _abort(400, "status_callback_url is not this address")
        if state not in TERMINAL_STATES:
            return  # pending / in_progress: the next poll learns it as well; nothing to change
        with rt.sessions.begin() as session:
            task = session.execute(
                select(Task).where(Task.request_id == request_id, Task.store == store,
                                   Task.action == actions[reference]).with_for_update()
            ).scalar_one_or_none()
            if task is None:
                _abort(404, f"request {request_id} has no {actions[reference]} task for store {store}")
            if TaskStatus(task.status).terminal:
                return  # done or failed already: a late or repeated callback changes nothing
            if protocol == "webhook":
                _keep(inbox_path(rt.settings.instance_dir, store, reference), raw)
            if task.status == TaskStatus.WAITING and not _woken(session, task) and fulfilment.wake(session, task):
                audit.record(session, ACTION, actor=f"processor:{store}", request_id=task.request_id,
                             data={"store": store, "reference": reference, "status": state,
                                   "attempt": task.attempts})
        return


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        message = current_app.json.loads(raw)  # the app's provider: a deep body is refused, not a 500
    except ValueError:
        message = None
    if not isinstance(message, dict):
        _abort(400, "the body is not a JSON object")
    return message


def _woken(session: Session, task: Task) -> bool:
    """Whether a callback already woke this attempt of the task (its collect job is on its way)."""
    events = session.execute(
        select(AuditEvent.data).where(AuditEvent.request_id == task.request_id, AuditEvent.action == ACTION)
    ).scalars()
    return any(e.get("store") == task.store and e.get("attempt") == task.attempts for e in events)


def _keep(path: Path, raw: bytes) -> None:
    """The recipient's verified answer, for the collect job (written whole, readable by dsr only)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
    partial.replace(path)


def _abort(status: int, message: str) -> NoReturn:
    abort(status, message=message)
    raise AssertionError("unreachable")  # flask_smorest.abort always raises
