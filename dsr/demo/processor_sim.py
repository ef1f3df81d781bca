"""dsr demo processor simulator — not a real processor.

It plays the processor's side (Vonage B.V. in the demo) on loopback, so the ``processor`` store can be
shown and tested end to end: an OpenDSR service under ``/opendsr`` and a generic webhook recipient at
``/webhook``, both checking the shared-secret signatures of ``dsr.stores.processor`` and signing what
they answer. A request goes ``pending`` -> ``in_progress`` (half the delay) -> ``completed`` (after the
delay, 2 s by default); at every change the simulator POSTs a signed callback to the request's
``status_callback_urls`` (in a background thread, once, with a short timeout). The results are
make-believe, deterministic message records and call-recording metadata for the demo subject
max.mustermann@example.com, and nothing for anyone else.

It holds its copy of a subject's records in memory from the first request naming the subject. An
``erasure`` request, when it completes, deletes that copy (a later access request finds nothing) and
its status, signed like every answer, reports what it deleted per table::

    "erasure_counts": {"messages": {"found": 5, "deleted": 5}, "call_recordings_meta": {...}}

    serve(secret="...")  ->  handle.url == "http://127.0.0.1:<a free port>/opendsr"; handle.shutdown()

``dsr demo`` starts it with ``serve_for_demo`` on a free port and points ``DSR_VONAGE_URL`` at it; on its
own, ``DSR_VONAGE_SECRET=... python -m dsr.demo.processor_sim`` listens on 5081 (``DSR_VONAGE_SIM_PORT``),
where the data map's default ``DSR_VONAGE_URL`` looks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, make_server

from dsr.demo.portal import DEMO_SUBJECT
from dsr.stores.processor import (
    API_VERSION,
    SignatureError,
    encode,
    sign,
    verify_headers,
)

log = logging.getLogger(__name__)

LABEL = "dsr demo processor simulator — not a real processor"
HEADER_LABEL = "dsr demo processor simulator - not a real processor"  # HTTP headers are Latin-1
CONTROLLER_ID = "magenta-business-api-portal"
LOOPBACK = ("127.0.0.1", "localhost")

# Callbacks go straight to the controller's loopback address, never through an HTTP proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Records = Callable[[list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]


# --- make-believe data --------------------------------------------------------------------------

_MAX_NUMBER = "+4915100000001"
_PARTNERS = ("+4930901820001", "+4922112345602", "+4989765432103", "+4940234567804")
_TEXTS = (
    "Ihr Bestätigungscode lautet 482 915.",
    "Termin morgen um 10 Uhr bestätigt.",
    "Die Lieferung ist unterwegs.",
    "Bitte rufen Sie uns zurück.",
    "Danke für Ihre Nachricht!",
)
_BASE_TIME = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def _is_demo_subject(identities: list[dict[str, Any]]) -> bool:
    hashed = hashlib.sha256(DEMO_SUBJECT.encode()).hexdigest()
    for identity in identities:
        if identity.get("identity_type") != "email":
            continue
        value = str(identity.get("identity_value", "")).strip().lower()
        if (identity.get("identity_format") == "sha256" and value == hashed) or value == DEMO_SUBJECT:
            return True
    return False


def demo_records(identities: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Messages and call-recording metadata of the demo subject; empty tables for anyone else."""
    if not _is_demo_subject(identities):
        return {"messages": [], "call_recordings_meta": []}
    messages = [
        {
            "message_id": f"MSG-7F3A-{n:04d}",
            "sent_at": (_BASE_TIME + timedelta(days=n, minutes=17 * n)).isoformat().replace("+00:00", "Z"),
            "direction": "outbound",
            "channel": "whatsapp" if n % 3 == 0 else "sms",
            "from_number": _MAX_NUMBER,
            "to_number": _PARTNERS[n % len(_PARTNERS)],
            "status": "delivered",
            "text_snippet": _TEXTS[n % len(_TEXTS)],
        }
        for n in range(1, 6)
    ]
    recordings = [
        {
            "recording_id": f"REC-51C2-{n:04d}",
            "call_id": f"CALL-90B1-{n:04d}",
            "started_at": (_BASE_TIME + timedelta(days=2 * n, hours=n)).isoformat().replace("+00:00", "Z"),
            "duration_seconds": 60 + 47 * n,
            "from_number": _MAX_NUMBER,
            "to_number": _PARTNERS[(n + 1) % len(_PARTNERS)],
            "format": "audio/mpeg",
            "size_bytes": 16_000 * (60 + 47 * n),
        }
        for n in range(1, 4)
    ]
    return {"messages": messages, "call_recordings_meta": recordings}


# --- the simulated processor ----------------------------------------------------------------------


@dataclass
class _Case:
    document: dict[str, Any]
    protocol: str
    received: datetime
    status: str = "pending"
    timers: list[threading.Timer] = field(default_factory=list)
    erased: dict[str, dict[str, int]] | None = None  # an erasure's counts per table, once completed
    reason: str | None = None  # why it failed

    @property
    def erasure(self) -> bool:
        return self.document.get("subject_request_type") == "erasure"


def _subject_keys(identities: list[dict[str, Any]]) -> list[str]:
    """The same key for an identity sent raw or hashed, so both find the same copy of the subject."""
    keys = []
    for identity in identities:
        value = str(identity.get("identity_value", "")).strip()
        if not value:
            continue
        if identity.get("identity_format") == "sha256":
            digest = value.lower()
        else:
            if identity.get("identity_type") == "email":
                value = value.lower()
            digest = hashlib.sha256(value.encode()).hexdigest()
        keys.append(f"{identity.get('identity_type')}:{digest}")
    return keys


@dataclass
class Simulator:
    """The processor's state; ``callbacks`` lists what was sent (url, status, HTTP status or error)."""

    secret: str
    delay: float = 2.0
    records: Records = demo_records
    cases: dict[str, _Case] = field(default_factory=dict)
    callbacks: list[tuple[str, str, int | str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Held from a status change until its callbacks are sent: callbacks go out in order, each with its status.
    sending: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False
    origin: str = ""  # http://127.0.0.1:<port>, set once the server is bound
    # The simulator's copy of each subject's records (identity key -> tables), made from ``records`` when a
    # request first names the subject; an erasure empties it. Guarded by ``lock``.
    held: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def receive(self, document: dict[str, Any], protocol: str) -> tuple[_Case, bool]:
        """Register a request; returns it and whether it is new."""
        rid = str(document["subject_request_id"])
        with self.lock:
            if rid in self.cases:
                return self.cases[rid], False
            case = _Case(document, protocol, datetime.now(UTC))
            self.cases[rid] = case
            if not self.stopped:
                for after, status in ((self.delay / 2, "in_progress"), (self.delay, "completed")):
                    timer = threading.Timer(after, self.advance, (rid, status))
                    timer.daemon = True
                    case.timers.append(timer)
                    timer.start()
            return case, True

    def advance(self, rid: str, status: str) -> None:
        with self.sending:
            with self.lock:
                case = self.cases.get(rid)
                if case is None or case.status in ("completed", "cancelled", "failed") or self.stopped:
                    return
                if status == "completed" and case.erasure:
                    case.erased = self._erase(case)  # before the status says so: a poll never sees it half done
                case.status = status
            self.send_callbacks(rid)

    def fail(self, rid: str, reason: str) -> None:
        """Let a request fail (e.g. the subject is unknown to the processor's account), with a callback."""
        with self.sending:
            with self.lock:
                case = self.cases[rid]
                case.status, case.reason = "failed", reason
                for timer in case.timers:
                    timer.cancel()
            self.send_callbacks(rid)

    def _holding(self, identities: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """The subject's records as the simulator holds them (the caller holds ``lock``)."""
        keys = _subject_keys(identities)
        for key in keys:
            if key in self.held:
                return self.held[key]
        tables = self.records(identities)
        for key in keys:
            self.held[key] = tables  # one copy, whichever identity finds it
        return tables

    def _erase(self, case: _Case) -> dict[str, dict[str, int]]:
        """Delete the subject's records from the simulator's copy; what was deleted, per table."""
        tables = self._holding(list(case.document.get("subject_identities") or []))
        counts = {name: {"found": len(rows), "deleted": len(rows)} for name, rows in tables.items()}
        for rows in tables.values():
            rows.clear()
        return counts

    def cancel(self, rid: str) -> bool:
        with self.sending:
            with self.lock:
                case = self.cases[rid]
                if case.status == "cancelled":
                    return True
                if case.status != "pending":
                    return False
                case.status = "cancelled"
                for timer in case.timers:
                    timer.cancel()
            self.send_callbacks(rid)
        return True

    def expected(self, case: _Case) -> str:
        return _rfc3339(case.received + timedelta(seconds=self.delay))

    def status_document(self, rid: str) -> dict[str, Any]:
        case = self.cases[rid]
        document: dict[str, Any] = {
            "controller_id": CONTROLLER_ID, "subject_request_id": rid, "request_status": case.status,
            "expected_completion_time": self.expected(case), "api_version": API_VERSION,
        }
        if case.status == "completed" and case.erasure:
            document["erasure_counts"] = case.erased or {}
        elif case.status == "completed" and case.protocol == "opendsr":
            document["results_url"] = f"{self.origin}/opendsr/results/{rid}"
            document["results_count"] = sum(len(rows) for rows in self.results(rid).values())
        if case.reason:
            document["reason"] = case.reason
        return document

    def results(self, rid: str) -> dict[str, list[dict[str, Any]]]:
        """The subject's records as held now (none after an erasure of the subject)."""
        with self.lock:
            tables = self._holding(list(self.cases[rid].document.get("subject_identities") or []))
            return {name: [dict(row) for row in rows] for name, rows in tables.items()}

    def send_callbacks(self, rid: str) -> None:
        """POST the current status, signed, to every callback URL of the request (best effort, once)."""
        case = self.cases[rid]
        for url in case.document.get("status_callback_urls") or []:
            body = {**self.status_document(rid), "status_callback_url": url}
            status = str(body["request_status"])  # what this callback says, also when it is recorded below
            if case.protocol == "webhook" and status == "completed" and not case.erasure:
                body["tables"] = self.results(rid)
            raw = encode(body)
            outcome: int | str
            try:
                sent = urllib.request.Request(str(url), data=raw, method="POST", headers={  # noqa: S310
                    "Content-Type": "application/json", "User-Agent": HEADER_LABEL, **sign(self.secret, raw)})
                with _DIRECT.open(sent, timeout=3) as response:
                    outcome = response.status
            except urllib.error.HTTPError as exc:
                outcome = exc.code
            except OSError as exc:
                outcome = f"{exc.__class__.__name__}: {exc}"
            log.info("simulator callback %s for %s -> %s", status, rid, outcome)
            with self.lock:
                self.callbacks.append((str(url), status, outcome))

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            for case in self.cases.values():
                for timer in case.timers:
                    timer.cancel()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def create_app(simulator: Simulator) -> Flask:
    app = Flask(__name__)
    app.extensions["processor_sim"] = simulator

    def signed(document: Mapping[str, Any], status: int = 200) -> Response:
        raw = encode(document)
        response = Response(raw, status=status, mimetype="application/json")
        response.headers.update(sign(simulator.secret, raw))
        response.headers["X-OpenDSR-Processor-Domain"] = "processor-simulator.invalid"
        return response

    def error(status: int, message: str) -> Response:
        return signed({"error": {"code": status, "message": message}}, status)

    @app.after_request
    def label(response: Response) -> Response:
        response.headers["X-Simulator"] = HEADER_LABEL
        return response

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in ("/", "/opendsr/discovery"):
            return None
        try:
            verify_headers(simulator.secret, request.get_data(cache=True), request.headers)
        except SignatureError as exc:
            return error(401 if exc.missing else 403, f"not signed correctly: {exc}")
        return None

    def document_from_body() -> dict[str, Any] | Response:
        try:
            document = json.loads(request.get_data(cache=True))
        except ValueError:
            return error(400, "the body is not JSON")
        required = ("subject_request_id", "subject_request_type", "subject_identities", "submitted_time")
        missing = [k for k in required if not isinstance(document, dict) or k not in document]
        if missing:
            return error(400, f"{', '.join(missing)} required")
        try:
            uuid.UUID(str(document["subject_request_id"]))
        except ValueError:
            return error(400, "subject_request_id must be a UUID")
        if document["subject_request_type"] not in ("access", "portability", "erasure"):
            return error(400, "subject_request_type must be access, portability or erasure")
        return dict(document)

    @app.get("/")
    def index() -> Response:
        return Response(f"{LABEL}\nOpenDSR: {simulator.origin}/opendsr  webhook: {simulator.origin}/webhook\n",
                        mimetype="text/plain")

    @app.get("/opendsr/discovery")
    def discovery() -> Response:
        return signed({
            "api_version": API_VERSION,
            "supported_identities": [{"identity_type": "email", "identity_format": "raw"},
                                     {"identity_type": "email", "identity_format": "sha256"}],
            "supported_subject_request_types": ["access", "portability", "erasure"],
            "processor_certificate": None,
            "processor": LABEL,
        })

    @app.post("/opendsr/requests")
    def submit() -> Response:
        document = document_from_body()
        if isinstance(document, Response):
            return document
        case, new = simulator.receive(document, "opendsr")
        if not new:
            return error(409, "a request with this subject_request_id exists already")
        return signed({
            "controller_id": CONTROLLER_ID, "subject_request_id": document["subject_request_id"],
            "received_time": _rfc3339(case.received), "expected_completion_time": simulator.expected(case),
            "api_version": API_VERSION,
        }, 201)

    @app.get("/opendsr/requests/<rid>")
    def status(rid: str) -> Response:
        if rid not in simulator.cases:
            return error(404, "no such request")
        return signed(simulator.status_document(rid))

    @app.route("/opendsr/requests/<rid>", methods=["DELETE"])
    @app.post("/opendsr/requests/<rid>/cancel")
    def cancel(rid: str) -> Response:
        if rid not in simulator.cases:
            return error(404, "no such request")
        if not simulator.cancel(rid):
            return error(409, f"the request is {simulator.cases[rid].status}; only a pending request can be cancelled")
        return signed({"controller_id": CONTROLLER_ID, "subject_request_id": rid,
                       "received_time": _rfc3339(datetime.now(UTC)), "api_version": API_VERSION}, 202)

    @app.get("/opendsr/results/<rid>")
    def results(rid: str) -> Response:
        case = simulator.cases.get(rid)
        if case is None or case.erasure:
            return error(404, "no such request" if case is None else "an erasure has no results")
        if case.status != "completed":
            return error(409, f"the request is {case.status}")
        return signed({"subject_request_id": rid, "tables": simulator.results(rid)})

    @app.post("/webhook")
    def webhook() -> Response:
        document = document_from_body()
        if isinstance(document, Response):
            return document
        case, _new = simulator.receive(document, "webhook")
        return signed({"subject_request_id": document["subject_request_id"], "received_time":
                       _rfc3339(case.received)}, 202)

    return app


@dataclass
class Handle:
    """A running simulator: ``url`` is the OpenDSR root, ``webhook_url`` the generic webhook."""

    server: BaseWSGIServer
    thread: threading.Thread
    simulator: Simulator

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/opendsr"

    @property
    def webhook_url(self) -> str:
        return f"{self.origin}/webhook"

    def shutdown(self) -> None:
        self.simulator.stop()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(host: str = "127.0.0.1", port: int = 0, *, secret: str, delay: float = 2.0,
          records: Records = demo_records) -> Handle:
    """Run the simulator in a thread on loopback (``port=0``: any free port, see ``handle.port``)."""
    if host not in LOOPBACK:
        raise ValueError(f"the processor simulator binds to loopback only, not {host!r}")
    if not secret:
        raise ValueError("the simulator needs the shared secret")
    simulator = Simulator(secret=secret, delay=delay, records=records)
    server = make_server("127.0.0.1", port, create_app(simulator), threaded=True)
    simulator.origin = f"http://127.0.0.1:{server.server_port}"
    # A short poll interval: shutdown() returns within 0.05 s instead of 0.5 s.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="dsr-processor-simulator", daemon=True)
    thread.start()
    log.warning("%s listening on %s/opendsr", LABEL, simulator.origin)
    return Handle(server, thread, simulator)


def serve_for_demo(environ: MutableMapping[str, str]) -> Handle:
    """The simulator ``dsr demo`` runs: on a port the OS picks (``DSR_VONAGE_SIM_PORT`` if set), so a
    second demo or anything else on 5081 does not stop it; ``DSR_VONAGE_URL`` in ``environ`` then names
    the port it got, which is where the data map's Vonage store sends its requests."""
    raw = environ.get("DSR_VONAGE_SIM_PORT", "").strip()
    if raw and not (raw.isdigit() and int(raw) < 65536):
        raise ValueError(f"DSR_VONAGE_SIM_PORT must be a port number (0-65535), got {raw!r}")
    secret = environ.setdefault("DSR_VONAGE_SECRET", secrets.token_hex(32))
    handle = serve(port=int(raw or 0), secret=secret)
    environ["DSR_VONAGE_URL"] = handle.url  # this simulator, whatever an earlier run left in the environment
    return handle


# --- the demo data map ----------------------------------------------------------------------------


def vonage_store(url: str, *, protocol: str = "opendsr", poll_seconds: int = 300,
                 secret_env: str = "DSR_VONAGE_SECRET") -> dict[str, Any]:  # noqa: S107 (a variable's name)
    """The data map stanza of the demo's Vonage store (result tables of the simulator)."""
    partner = {
        "disclose": "mask", "mask": "last3",
        "reason": {
            "de": "Rufnummern Dritter ohne die letzten drei Ziffern (Art. 15(4) DSGVO)",
            "en": "other parties' numbers without the last three digits (Art. 15(4) GDPR)",
        },
    }
    return {
        "connector": "processor",
        "description": {"de": "Kommunikationsplattform bei Vonage B.V. (Auftragsverarbeiter, OpenDSR)",
                        "en": "communication platform at Vonage B.V. (processor, OpenDSR)"},
        "recipient": "vonage",
        "deadline_days": 10,
        "connection": {"protocol": protocol, "url": url, "secret_env": secret_env,
                       "poll_seconds": poll_seconds, "timeout_seconds": 10},
        "identities": {"email": {"format": "raw"}},
        "tables": {
            "messages": {"category": "comm_content", "fields": {"to_number": partner}},
            "call_recordings_meta": {"category": "comm_content", "fields": {"to_number": partner}},
        },
    }


def with_vonage_store(raw: dict[str, Any], url: str, **options: Any) -> dict[str, Any]:
    """A data map (as loaded from YAML) with the Vonage store added and Vonage notified through it."""
    raw = dict(raw)
    raw["stores"] = {**raw["stores"], "vonage": _with_labels(vonage_store(url, **options),
                                                             raw["stores"].get("vonage") or {})}
    recipients = dict(raw.get("recipients") or {})
    if "vonage" in recipients:
        recipients["vonage"] = {**recipients["vonage"], "notify": {"via": "store", "store": "vonage"}}
    raw["recipients"] = recipients
    return raw


def _with_labels(store: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
    """The demo's store with the labels the data map gives its own Vonage store (store, tables, fields)."""
    if mapped.get("label"):
        store["label"] = mapped["label"]
    for name, table in store["tables"].items():
        spec = (mapped.get("tables") or {}).get(name) or {}
        if spec.get("label"):
            table["label"] = spec["label"]
        for column, rule in (spec.get("fields") or {}).items():
            if isinstance(rule, dict) and rule.get("label"):
                table.setdefault("fields", {})[column] = {**table.get("fields", {}).get(column, {}),
                                                          "label": rule["label"]}
    return store


def write_demo_datamap(source: Path, target: Path, url: str = "${DSR_VONAGE_URL:-http://127.0.0.1:5081/opendsr}",
                       ) -> Path:
    """``source`` plus the Vonage store, written to ``target`` (for ``dsr demo``)."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("# Written by dsr demo: the data map plus the Vonage store played by the processor simulator.\n"
                      + yaml.safe_dump(with_vonage_store(raw, url), allow_unicode=True, sort_keys=False),
                      encoding="utf-8")
    return target


def main() -> None:  # pragma: no cover - manual use
    logging.basicConfig(level=logging.INFO)
    secret = os.environ.get("DSR_VONAGE_SECRET", "")
    handle = serve(port=int(os.environ.get("DSR_VONAGE_SIM_PORT", "5081")), secret=secret,
                   delay=float(os.environ.get("DSR_VONAGE_SIM_DELAY", "2")))
    print(f"{LABEL}\n  OpenDSR: {handle.url}\n  webhook: {handle.webhook_url}\n(Ctrl-C stops it)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        handle.shutdown()


if __name__ == "__main__":
    main()
