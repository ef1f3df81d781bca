"""Processor stores: a processor or other recipient reached over HTTP (LC-60, LC-61).

Two protocols, chosen per store with ``connection.protocol``:

``opendsr`` (the successor of OpenGDPR), relative to ``connection.url``:

* ``GET  {url}/discovery``                 -- what the processor supports (``dsr datamap check --connect``)
* ``POST {url}/{requests_path}``            -- submit; 201 (or 200/202) with a signed receipt; 409 = exists
* ``GET  {url}/{requests_path}/{id}``       -- status: ``request_status`` pending | in_progress | completed |
  cancelled (| failed), and when completed a ``results_url``
* ``DELETE {url}/{requests_path}/{id}``     -- cancel while pending (202)
* ``GET  {results_url}``                    -- ``{"tables": {"<table>": [{...}, ...], ...}}``; must be on the
  same origin (scheme, host, port) as ``url``

``requests_path`` defaults to ``requests`` (``opengdpr_requests`` for a processor speaking OpenGDPR).

``webhook`` (for recipients without OpenDSR): the same request JSON is POSTed to ``url``; the recipient
answers later by calling our callback with ``request_status`` and either the ``tables`` inline or a
``results_url``. Until that callback arrived the task waits; every poll re-sends the request (same
``subject_request_id``, so the recipient must treat it as the same request).

Signatures. Instead of OpenDSR's X.509 signatures, both sides share one secret per store (the data map
names its environment variable, ``secret_env``; the secret never goes in the map). Every request we
send, every response we accept from an OpenDSR processor (receipt, status, results) and every callback
we accept carries::

    X-OpenDSR-Timestamp: <Unix time in whole seconds>
    X-OpenDSR-Signature: sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + raw body bytes)>

An empty body (GET, DELETE) is signed as ``b"<timestamp>."``. The receiver checks the signature over the
raw bytes *before* parsing them (constant-time compare) and refuses a timestamp more than 300 seconds
away from its own clock, so a captured message cannot be replayed later.

Idempotency: ``subject_request_id`` is derived from the case and the store (UUID5 of
``"<case id>:<store>"`` in a fixed namespace, stamped as version 4 because OpenDSR requires v4-formatted
GUIDs), so every retry and poll names the same request at the processor. An erasure is named
``"<case id>:<store>:erase"``: the same case also asks the processor for access (the check after the
erasure), and that request must never find the erasure's status, nor the erasure the access request's.

Erasure (Art. 17). ``erase`` sends ``subject_request_type: "erasure"`` and waits like ``collect``
(``Pending`` with the receipt, then polls or a callback). The processor erases all it holds of the
subject, so only a plan that deletes every table of the store can be sent; a plan that keeps or nulls
some of it is ``NotSupported`` (a person arranges it). It cannot count before it acts: ``preview`` and
the bound say so in notes. The completed status may carry counts per table::

    "erasure_counts": {"<table>": {"found": 5, "deleted": 5, "changed": 0, "retained": 0}, ...}

and, signed, is the proof of the erasure (AT-31): ``ErasureResult.evidence`` (see ``erasure_evidence``).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from marshmallow import RAISE, Schema, fields, validate

from dsr.datamap.model import Store, Table, UnsetVariable
from dsr.stores.base import (
    CollectResult,
    Connector,
    ErasureCount,
    ErasureResult,
    JsonText,
    NotSupported,
    Pending,
    Progress,
    Refused,
    StoreUnavailable,
    Subject,
    TableErasure,
    TableSink,
    refuse_dated,
    register,
)

API_VERSION = "0.1"
PROTOCOLS = ("opendsr", "webhook")
SIGNATURE_HEADER = "X-OpenDSR-Signature"
TIMESTAMP_HEADER = "X-OpenDSR-Timestamp"
TOLERANCE_SECONDS = 300
# Fixed forever: changing it would give every open case a new id at the processor.
NAMESPACE = uuid.UUID("6f1d3c2a-8a4e-5b0c-9d7e-2f6a1b3c4d5e")
CALLBACK_PREFIX = "/api/v1/callbacks"

PENDING_STATES = ("pending", "in_progress")
TERMINAL_STATES = ("completed", "cancelled", "failed")
STATES = PENDING_STATES + TERMINAL_STATES
# dsr identity type -> OpenDSR identity_type
IDENTITY_TYPES = {"email": "email", "customer_id": "controller_customer_id", "phone": "phone_number",
                  "ip_address": "ip_address"}
# dsr request type -> OpenDSR subject_request_type (rectification, restriction, objection: later)
REQUEST_TYPES = {"access": "access", "portability": "portability"}
ERASURE = "erasure"  # sent by ``erase`` only: never for a case's request type, so a collect cannot erase
COUNT_FIELDS = ("found", "deleted", "changed", "retained")  # of ErasureCount, in "erasure_counts"
SIGNATURE_SCHEME = "HMAC-SHA256(shared secret, '<timestamp>.' + body), hex"

BATCH_ROWS = 1000
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024


# --- signatures -------------------------------------------------------------------------------


class SignatureError(Exception):
    """A message is not signed with the shared secret, or too old. ``missing``: no signature at all."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def signature(secret: str | bytes, body: bytes, timestamp: int | str) -> str:
    """``sha256=<hex>`` of ``b"<timestamp>." + body``."""
    digest = hmac.new(_key(secret), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign(secret: str | bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The two headers that sign ``body`` (the exact bytes sent) at ``now``."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, body, timestamp)}


def verify(secret: str | bytes, body: bytes, timestamp: str | None, signed: str | None, *,
           now: float | None = None, tolerance: int = TOLERANCE_SECONDS) -> None:
    """Raise ``SignatureError`` unless ``signed`` is the signature of the raw ``body`` at a fresh ``timestamp``."""
    if not timestamp or not signed:
        raise SignatureError(f"no {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers", missing=True)
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is more than {tolerance} seconds away from now")
    expected = signature(secret, body, timestamp)
    # Several comma-separated signatures are accepted: a secret can be rotated without a gap.
    if not any(hmac.compare_digest(expected.encode(), candidate.strip().encode()) for candidate in signed.split(",")):
        raise SignatureError("the signature does not match the body")


class _Headers(Protocol):
    def get(self, key: str, /) -> Any: ...


def callback_secret(store: Store, environ: Mapping[str, str] | None = None) -> str:
    """The secret shared with a processor store, from the variable its ``secret_env`` names: read when
    it is used (a worker signing a request, the web tier checking a callback), never kept in the map."""
    name = str(store.setting("secret_env"))
    value = store.environment(environ).get(name, "")
    if not value:
        raise UnsetVariable(store.name, {"secret_env": [name]})
    return value


def verify_headers(secret: str | bytes, body: bytes, headers: _Headers, *, now: float | None = None) -> None:
    """``verify`` with the two headers read from a case-insensitive header mapping."""
    verify(secret, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), now=now)


# --- the request ------------------------------------------------------------------------------


def subject_request_id(case_id: str, store: str, action: str = "collect") -> str:
    """Stable id of one case at one processor: the same for every retry, poll and callback.

    ``action`` is the task's (``collect`` or ``erase``): an erasure gets its own id, so the access request
    of the same case (the verification after it) and the erasure never answer for each other."""
    derived = uuid.uuid5(NAMESPACE, f"{case_id}:{store}" if action == "collect" else f"{case_id}:{store}:{action}")
    return str(uuid.UUID(bytes=derived.bytes, version=4))


def rfc3339(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def identity_objects(subject: Subject, formats: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """OpenDSR identity objects for the identities the store is asked by and the subject has."""
    out = []
    for kind, spec in formats.items():
        value = subject.identities.get(kind)
        if not value:
            continue
        fmt = spec.get("format", "raw")
        out.append({
            "identity_type": IDENTITY_TYPES.get(kind, kind),
            "identity_value": hashlib.sha256(value.encode("utf-8")).hexdigest() if fmt == "sha256" else value,
            "identity_format": fmt,
        })
    return out


def request_document(subject: Subject, store: str, formats: Mapping[str, Mapping[str, Any]],
                     callback_urls: Sequence[str], *, erasure: bool = False) -> dict[str, Any]:
    """The OpenDSR request (also the body of the generic webhook); ``erasure``: the Art. 17 request."""
    if not subject.case_id:
        raise ValueError("a processor request needs the case id (Subject.case_id) to be idempotent")
    kind = subject.request_type or "access"
    if not erasure and kind not in REQUEST_TYPES:
        raise NotSupported(f"OpenDSR has no request type for {kind} requests yet")
    return {
        "subject_request_id": subject_request_id(subject.case_id, store, "erase" if erasure else "collect"),
        "subject_request_type": ERASURE if erasure else REQUEST_TYPES[kind],
        "subject_identities": identity_objects(subject, formats),
        "submitted_time": rfc3339(subject.received_at or datetime.now(UTC)),
        "api_version": API_VERSION,
        "status_callback_urls": list(callback_urls),
    }


def callback_path(protocol: str, store: str, case_id: str) -> str:
    return f"{CALLBACK_PREFIX}/{protocol}/{store}/{case_id}"


def inbox_path(instance_dir: Path, store: str, reference: str) -> Path:
    """Where a webhook recipient's verified answer waits for the collect job (deleted once collected)."""
    return instance_dir / "processor-inbox" / store / f"{uuid.UUID(reference)}.json"


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


# --- data map options -------------------------------------------------------------------------


class _Connection(Schema):
    class Meta:
        unknown = RAISE

    protocol = fields.String(load_default="opendsr", validate=validate.OneOf(PROTOCOLS))
    url = fields.String(required=True, validate=validate.Regexp(
        r"^https?://[^/\s]+(/\S*)?$", error="must be an http:// or https:// URL (got {input})"))
    secret_env = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Z][A-Z0-9_]*$", error="the NAME of the environment variable holding the secret, e.g. "
                                    "DSR_VONAGE_SECRET (got {input}); never the secret itself"))
    requests_path = fields.String(load_default="requests", validate=validate.Regexp(
        r"^[A-Za-z0-9_\-]+$", error="one path segment, e.g. requests or opengdpr_requests"))
    poll_seconds = fields.Integer(load_default=300, strict=True, validate=validate.Range(min=1))
    timeout_seconds = fields.Integer(load_default=10, strict=True, validate=validate.Range(min=1))


class _Identity(Schema):
    class Meta:
        unknown = RAISE

    format = fields.String(load_default="raw", validate=validate.OneOf(["raw", "sha256"]))


class _TableOptions(Schema):
    class Meta:
        unknown = RAISE  # a result table takes no connector options (category and fields are the map's)


# --- HTTP -------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as what it is: signed requests are never re-sent to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class _Answer:
    method: str
    url: str
    status: int
    body: bytes
    headers: Any

    def message(self) -> str:
        """The processor's error message, short (an error must not carry the subject's data, OpenDSR 7.6)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return ""
        error = data.get("error") if isinstance(data, dict) else None
        text = error.get("message") if isinstance(error, dict) else data.get("message") if isinstance(data, dict) \
            else None
        return f": {str(text)[:200]}" if text else ""


def _read(stream: Any, limit: int) -> bytes:
    data: bytes = stream.read(limit + 1)
    if len(data) > limit:
        raise StoreUnavailable(f"the answer is larger than {limit // (1024 * 1024)} MiB")
    return data


@register
class ProcessorConnector(Connector):
    type_name = "processor"
    connection_schema = _Connection
    identity_schema = _Identity
    table_schema = _TableOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def validate(cls, store: Any) -> list[tuple[str, str]]:
        problems = super().validate(store)
        if not store.identities:
            problems.append((f"stores.{store.name}.identities",
                             "names no identity to ask the processor by (e.g. email: {format: raw})"))
        return problems

    # settings

    @property
    def protocol(self) -> str:
        return str(self.store.connection.get("protocol", "opendsr"))

    @property
    def url(self) -> str:
        return str(self.store.connection["url"]).rstrip("/")

    @property
    def poll_seconds(self) -> int:
        return int(self.store.connection.get("poll_seconds", 300))

    def _requests_url(self, reference: str | None = None) -> str:
        base = f"{self.url}/{self.store.connection.get('requests_path', 'requests')}"
        return f"{base}/{reference}" if reference else base

    def _secret(self) -> str:
        try:
            return callback_secret(self.store)
        except UnsetVariable as exc:
            raise StoreUnavailable(f"{exc} (the secret shared with the processor)") from None

    def _callback_url(self, subject: Subject) -> str | None:
        base = getattr(self.context, "base_url", None) or _bound_base_url()
        if not base or not subject.case_id:
            return None
        return str(base).rstrip("/") + callback_path(self.protocol, self.store.name, subject.case_id)

    # transport

    def _call(self, method: str, url: str, body: bytes | None = None, *, limit: int = MAX_RESPONSE_BYTES) -> _Answer:
        secret = self._secret()
        headers = {"Accept": "application/json", "User-Agent": "dsr", **sign(secret, body or b"")}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 (url checked)
        timeout = int(self.store.connection.get("timeout_seconds", 10))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return _Answer(method, url, response.status, _read(response, limit), response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return _Answer(method, url, exc.code, _read(exc, MAX_ERROR_BYTES), exc.headers)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"store {self.store.name}: {method} {url}: {exc}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailable(f"store {self.store.name}: {method} {url}: cannot reach the processor: "
                                   f"{reason}") from exc

    def _refused(self, answer: _Answer) -> StoreUnavailable:
        kind = "failed" if answer.status >= 500 else "was refused"
        return StoreUnavailable(f"store {self.store.name}: {answer.method} {answer.url} {kind} with HTTP "
                                f"{answer.status}{answer.message()}")

    def _trusted(self, answer: _Answer) -> dict[str, Any]:
        """The JSON of an answer, once its signature checked out (before it is parsed)."""
        try:
            verify_headers(self._secret(), answer.body, answer.headers)
        except SignatureError as exc:
            raise StoreUnavailable(f"store {self.store.name}: {answer.method} {answer.url}: the answer is not "
                                   f"signed with the shared secret ({exc}); it was not used") from None
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise StoreUnavailable(f"store {self.store.name}: {answer.method} {answer.url}: the answer is not a "
                                   "JSON object")
        return data

    # the contract

    def check(self) -> list[str]:
        base = f"stores.{self.store.name}.connection"
        name = self.store.connection["secret_env"]
        secret = os.environ.get(name, "")
        if not secret:
            return [f"{base}.secret_env: the environment variable {name} is not set"]
        problems = []
        if len(secret) < 32:
            problems.append(f"warning: {base}.secret_env: the secret in {name} is shorter than 32 characters")
        if self.protocol == "webhook":
            return problems  # a webhook endpoint answers POSTs only; nothing to ask it
        try:
            answer = self._call("GET", f"{self.url}/discovery", limit=MAX_ERROR_BYTES)
            if answer.status != 200:
                raise self._refused(answer)
            discovery = self._trusted(answer)
        except StoreUnavailable as exc:
            return [*problems, f"{base}.url: {exc}"]
        types = discovery.get("supported_subject_request_types") or []
        for kind in ("access", "portability"):
            if kind not in types:
                problems.append(f"{base}.url: the processor does not take {kind} requests (it takes: "
                                f"{', '.join(map(str, types)) or 'none'})")
        if ERASURE not in types:
            # Not an error: collection works; its erasures become a person's work (NotSupported there).
            problems.append(f"warning: {base}.url: the processor does not take erasure requests")
        supported = {(i.get("identity_type"), i.get("identity_format"))
                     for i in discovery.get("supported_identities") or [] if isinstance(i, dict)}
        for kind, spec in self.store.identities.items():
            pair = (IDENTITY_TYPES.get(kind, kind), spec.get("format", "raw"))
            if pair not in supported:
                problems.append(f"stores.{self.store.name}.identities.{kind}: the processor does not accept "
                                f"{pair[0]} in format {pair[1]}")
        return problems

    def collect(self, subject: Subject, sink: TableSink, progress: Progress | None = None) -> CollectResult:
        document = request_document(subject, self.store.name, self.store.identities,
                                    [url] if (url := self._callback_url(subject)) else [])
        if not document["subject_identities"]:
            known = ", ".join(self.store.identities)
            return CollectResult(found=dict.fromkeys(self.store.tables, 0),
                                 notes=[f"{self.store.name}: not asked; the subject has none of the identities "
                                        f"this processor is asked by ({known})"])
        if self.protocol == "webhook":
            return self._collect_webhook(document, sink)
        return self._collect_opendsr(document, sink)

    def cancel(self, subject: Subject, action: str = "collect") -> bool:
        """Withdraw the request at the processor while it is pending (OpenDSR cancellation); ``action``:
        ``erase`` for the erasure request.

        True when cancelled (or cancelled before), False when the processor has no such request;
        ``StoreUnavailable`` when it refuses (e.g. it is already in progress) or cannot be reached.
        """
        if self.protocol != "opendsr":
            raise NotSupported(f"store {self.store.name}: a {self.protocol} recipient cannot be asked to cancel")
        if not subject.case_id:
            raise ValueError("cancelling needs the case id (Subject.case_id)")
        reference = subject_request_id(subject.case_id, self.store.name, action)
        answer = self._call("DELETE", self._requests_url(reference), limit=MAX_ERROR_BYTES)
        if answer.status in (200, 202, 204):
            return True
        if answer.status == 404:
            return False
        raise self._refused(answer)

    # erasure (Art. 17)

    def preview(self, subject: Subject, plan: Mapping[str, TableErasure]) -> ErasureResult:
        """No counts: a processor cannot count without acting. What ``erase`` would refuse is refused here
        too, so the domain plans it as a person's work before anything is approved."""
        if not self._erasure_plan(plan):
            return ErasureResult(notes=[self._kept_note()])
        return ErasureResult(notes=[f"{self.store.name}: the processor erases on request and cannot count first; "
                                    "its counts come with its signed confirmation"])

    def erase(self, subject: Subject, plan: Mapping[str, TableErasure], *, bound: int | None = None) -> ErasureResult:
        """Ask the processor to erase the subject (OpenDSR ``erasure``, or the generic webhook), like
        ``collect``: ``Pending`` until it answers, then its counts per table, the signed completion in
        ``evidence``. ``bound`` cannot apply: the processor counts only once it has erased (a note says so,
        and another one if its counts exceed the bound)."""
        if not self._erasure_plan(plan):
            return ErasureResult(notes=[self._kept_note()])
        document = request_document(subject, self.store.name, self.store.identities,
                                    [url] if (url := self._callback_url(subject)) else [], erasure=True)
        if not document["subject_identities"]:
            known = ", ".join(self.store.identities)
            return ErasureResult(notes=[f"{self.store.name}: not asked; the subject has none of the identities "
                                        f"this processor is asked by ({known})"])
        if self.protocol == "webhook":
            result = self._erase_webhook(document, subject)
        else:
            status, answer = self._completed(document)
            result = self._erasure_result(status, erasure_evidence(self.store.name, answer, subject))
            result.notes.insert(0, f"{self.store.name}: OpenDSR erasure request {document['subject_request_id']} "
                                   "completed; its status is signature-verified and kept as evidence")
        if bound is not None:
            result.notes.append(f"{self.store.name}: the bound of {bound} records does not apply to a processor, "
                                "which counts only once it has erased")
            if result.touched > bound:
                result.notes.append(f"{self.store.name}: the processor reports {result.touched} records deleted or "
                                    f"changed, more than the bound of {bound}")
        return result

    def _erasure_plan(self, plan: Mapping[str, TableErasure]) -> bool:
        """Whether the plan asks the processor to erase (every table deleted) or nothing (every table kept).
        An OpenDSR erasure takes all the subject's data at the processor: it cannot keep or null a part,
        so such a plan is ``NotSupported`` (manual work), never half done or silently widened."""
        unknown = [name for name in plan if name not in self.store.tables]
        if unknown:
            raise ValueError(f"store {self.store.name}: no table {', '.join(map(repr, unknown))} in the data map")
        refuse_dated(self.store.name, plan)
        methods = {name: plan[name].method if name in plan else "retain" for name in self.store.tables}
        if all(method == "retain" for method in methods.values()):
            return False
        partial = [f"{name} ({method})" for name, method in methods.items() if method != "delete"]
        if partial:
            raise NotSupported(f"store {self.store.name}: an OpenDSR erasure erases everything the processor holds of "
                               f"the subject; it cannot keep or change only some of it ({', '.join(partial)}); a "
                               "person must agree this with the processor")
        return True

    def _kept_note(self) -> str:
        return f"{self.store.name}: not asked; the plan keeps all of the subject's data at the processor"

    def _erasure_result(self, status: Mapping[str, Any], evidence: dict[str, Any]) -> ErasureResult:
        """The counts a completed erasure reports (``erasure_counts``): per table of the data map; a
        table the map does not list is named in a note, a table without a count too (never a made-up 0)."""
        result = ErasureResult(evidence=evidence)
        reported = status.get("erasure_counts")
        if reported is None:
            result.notes.append(f"{self.store.name}: the processor confirmed the erasure without counts per table")
            return result
        if not isinstance(reported, dict):
            raise StoreUnavailable(f"store {self.store.name}: erasure_counts is not an object")
        for name, value in reported.items():
            if not isinstance(value, dict) or not all(
                    type(value.get(k, 0)) is int and value.get(k, 0) >= 0 for k in COUNT_FIELDS):
                raise StoreUnavailable(f"store {self.store.name}: erasure_counts of {str(name)[:80]!r} are not "
                                       f"counts ({', '.join(COUNT_FIELDS)}: whole numbers >= 0)")
            count = ErasureCount(**{k: int(value.get(k, 0)) for k in COUNT_FIELDS})
            if name in self.store.tables:
                result.tables[name] = count
            else:
                result.notes.append(f"{self.store.name}: the processor reports a table {str(name)[:80]!r} the data "
                                    f"map does not list ({count.deleted} deleted, {count.changed} changed, "
                                    f"{count.retained} retained)")
        missing = [name for name in self.store.tables if name not in result.tables]
        if missing:
            result.notes.append(f"{self.store.name}: the processor reports no count for {', '.join(missing)}")
        return result

    def _erase_webhook(self, document: dict[str, Any], subject: Subject) -> ErasureResult:
        reference = document["subject_request_id"]
        inbox = inbox_path(self.context.instance_dir, self.store.name, reference)
        if inbox.exists():
            raw = inbox.read_bytes()  # its signature was verified when it arrived
            answer = json.loads(raw)
            state = answer.get("request_status")
            if state in ("cancelled", "failed"):
                reason = answer.get("reason") or answer.get("message")
                raise Refused(f"store {self.store.name}: the recipient reports erasure request {reference} as "
                              f"{state}" + (f": {str(reason)[:200]}" if reason else ""))
            if state == "completed":
                # Kept, unlike a collect's answer: it holds counts, not the subject's data, and a retry after a
                # crash must find the confirmation again rather than ask for a second one.
                evidence = erasure_evidence(self.store.name, _Answer("POST", "", 200, raw, {}), subject,
                                            kind="webhook-callback")
                result = self._erasure_result(answer, evidence)
                result.notes.insert(0, f"{self.store.name}: erasure confirmed by signed webhook callback ({reference})")
                return result
        raise self._send_webhook(document)

    # OpenDSR

    def _status(self, reference: str) -> tuple[dict[str, Any], _Answer] | None:
        """The signed status (and the answer it came in, kept as evidence), or None if unknown there."""
        answer = self._call("GET", self._requests_url(reference), limit=MAX_ERROR_BYTES)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._refused(answer)
        return self._trusted(answer), answer

    def _submit(self, document: dict[str, Any]) -> str:
        answer = self._call("POST", self._requests_url(), encode(document), limit=MAX_ERROR_BYTES)
        if answer.status == 409:
            return "submitted before"
        if answer.status not in (200, 201, 202):
            raise self._refused(answer)
        receipt = self._trusted(answer)  # OpenDSR: the processor MUST sign its receipt (kept as evidence)
        if receipt.get("subject_request_id") not in (None, document["subject_request_id"]):
            raise StoreUnavailable(f"store {self.store.name}: the receipt names another request")
        digest = hashlib.sha256(answer.body).hexdigest()
        return (f"signed receipt verified (received {receipt.get('received_time', '?')}, "
                f"sha256 {digest[:16]})")

    def _completed(self, document: dict[str, Any]) -> tuple[dict[str, Any], _Answer]:
        """The signed status once the processor completed the request, which is submitted first if it does
        not know it. ``Pending`` while it works; ``Refused`` once it failed or was cancelled."""
        reference = document["subject_request_id"]
        what = "OpenDSR erasure request" if document["subject_request_type"] == ERASURE else "OpenDSR request"
        asked = self._status(reference)
        receipt = ""
        if asked is None:
            receipt = "; " + self._submit(document)
            asked = self._status(reference)
        if asked is None:
            raise Pending(reference, self.poll_seconds, f"submitted to {self.store.name} as {reference}{receipt}")
        status, answer = asked
        state = status.get("request_status")
        if state in PENDING_STATES:
            expected = status.get("expected_completion_time")
            raise Pending(reference, self.poll_seconds,
                          f"{state} at {self.store.name} as {what} {reference}"
                          + (f", expected by {expected}" if expected else "") + receipt
                          + ("" if document["status_callback_urls"] else "; no DSR_BASE_URL, so polled only"))
        if state == "completed":
            return status, answer
        if state in ("cancelled", "failed"):
            reason = status.get("reason") or status.get("message")
            raise Refused(f"store {self.store.name}: the processor reports {what} {reference} as "
                          f"{state}" + (f": {str(reason)[:200]}" if reason else ""))
        raise StoreUnavailable(f"store {self.store.name}: unknown request_status {str(state)[:40]!r} for {reference}")

    def _collect_opendsr(self, document: dict[str, Any], sink: TableSink) -> CollectResult:
        reference = document["subject_request_id"]
        status, _answer = self._completed(document)
        results_url = status.get("results_url")
        payload = self._results(str(results_url)) if results_url else {"tables": {}}
        result = self._write(payload, sink)
        result.notes.insert(0, f"{self.store.name}: OpenDSR request {reference} completed; status and results "
                               "signature-verified")
        return result

    def _results(self, results_url: str) -> dict[str, Any]:
        target = urljoin(self.url + "/", results_url)
        origin = urlsplit(self.url)
        there = urlsplit(target)
        if (there.scheme, there.netloc) != (origin.scheme, origin.netloc):
            raise StoreUnavailable(f"store {self.store.name}: results_url {target} is not on the processor's own "
                                   f"address {origin.scheme}://{origin.netloc}; not fetched")
        answer = self._call("GET", target)
        if answer.status != 200:
            raise self._refused(answer)
        return self._trusted(answer)

    # generic webhook

    def _collect_webhook(self, document: dict[str, Any], sink: TableSink) -> CollectResult:
        reference = document["subject_request_id"]
        inbox = inbox_path(self.context.instance_dir, self.store.name, reference)
        if inbox.exists():
            answer = json.loads(inbox.read_bytes())  # its signature was verified when it arrived
            state = answer.get("request_status")
            if state in ("cancelled", "failed"):
                # Final for this case, as at an OpenDSR processor: the answer is kept, so every retry says so.
                reason = answer.get("reason") or answer.get("message")
                raise Refused(f"store {self.store.name}: the recipient reports request {reference} as "
                                       f"{state}" + (f": {str(reason)[:200]}" if reason else ""))
            if state == "completed":
                if "tables" in answer:
                    payload = answer
                elif answer.get("results_url"):
                    payload = self._results(str(answer["results_url"]))
                else:
                    payload = {"tables": {}}
                del answer
                result = self._write(payload, sink)
                result.notes.insert(0, f"{self.store.name}: answered by signed webhook callback ({reference})")
                inbox.unlink(missing_ok=True)
                return result
        raise self._send_webhook(document)

    def _send_webhook(self, document: dict[str, Any]) -> Pending:
        """(Re-)send the request to the webhook recipient; it answers by signed callback: the ``Pending`` to raise."""
        reference = document["subject_request_id"]
        if not document["status_callback_urls"]:
            raise StoreUnavailable(f"store {self.store.name}: a webhook recipient answers by calling back, which "
                                   "needs DSR_BASE_URL (the address the recipient can reach dsr at)")
        sent = self._call("POST", self.url, encode(document), limit=MAX_ERROR_BYTES)
        if sent.status not in (200, 201, 202, 204, 409):
            raise self._refused(sent)
        what = "erasure request" if document["subject_request_type"] == ERASURE else "request"
        return Pending(reference, self.poll_seconds, f"{what} sent to {self.store.name} by signed webhook as "
                                                    f"{reference}; waiting for its signed callback")

    # results -> sink

    def _write(self, payload: dict[str, Any], sink: TableSink) -> CollectResult:
        """Write each table the data map lists, one at a time, in batches; name (never copy) the others."""
        tables = payload.get("tables")
        if not isinstance(tables, dict):
            raise StoreUnavailable(f"store {self.store.name}: the results hold no \"tables\" object")
        result = CollectResult()
        for name in list(tables):
            rows = tables.pop(name)  # the parsed table is dropped once written
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise StoreUnavailable(f"store {self.store.name}: results table {name!r} is not a list of objects")
            table = self.store.tables.get(name)
            if table is None:
                result.notes.append(f"{self.store.name}: the processor returned a table {str(name)[:80]!r} "
                                    f"({len(rows)} record(s)) that the data map does not list; left out of the "
                                    "package until the data map describes it")
                continue
            result.found[name] = _write_table(sink, table, rows)
        for name in self.store.tables:
            result.found.setdefault(name, 0)
        return result


def erasure_evidence(store: str, answer: _Answer, subject: Subject, *, kind: str = "opendsr-status",
                     now: datetime | None = None) -> dict[str, Any]:
    """The processor's signed completion of an erasure, as the domain keeps it (AT-31).

    ``body`` is the exact text that was signed, so whoever holds the shared secret can check it again
    with ``timestamp`` and ``signature`` (``opendsr-status``: the status answer we fetched and verified;
    ``webhook-callback``: the callback verified by the callback endpoint on arrival, whose headers are not
    kept, so ``signature`` is None and ``body_sha256`` identifies it). A body naming the subject's
    identities (OpenDSR status documents do not) is not kept: only its hash."""
    body = answer.body
    text = body.decode("utf-8", errors="replace")
    values = [v for v in subject.identities.values() if v]
    named = any(v in text or hashlib.sha256(v.encode("utf-8")).hexdigest() in text for v in values)
    try:
        reference = json.loads(body).get("subject_request_id")
    except (ValueError, AttributeError):
        reference = None
    return {
        "kind": kind,
        "store": store,
        "reference": reference,
        "request_status": "completed",
        "url": answer.url or None,
        "timestamp": answer.headers.get(TIMESTAMP_HEADER) if answer.headers else None,
        "signature": answer.headers.get(SIGNATURE_HEADER) if answer.headers else None,
        "scheme": SIGNATURE_SCHEME,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body": None if named else text,
        "verified_at": rfc3339(now or datetime.now(UTC)),
    }


def _write_table(sink: TableSink, table: Table, rows: list[dict[str, Any]]) -> int:
    columns = list(dict.fromkeys(key for row in rows for key in row)) or list(table.fields)
    if not columns:
        return 0
    # The answer is JSON: its values keep their types in the package's JSON twin ("any").
    writer = sink.open_table(table.name, columns, ["any"] * len(columns))
    try:
        for start in range(0, len(rows), BATCH_ROWS):
            writer.write([[_cell(row.get(c)) for c in columns] for row in rows[start:start + BATCH_ROWS]])
    finally:
        writer.close()
    return len(rows)


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return JsonText(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return value


def _bound_base_url() -> str | None:
    """DSR_BASE_URL of the runtime the current job runs with (the connector context does not carry it)."""
    from dsr.runtime import current

    try:
        return current().settings.base_url
    except RuntimeError:
        return None
