"""The processor connector without a network: signatures, the OpenDSR request, ids, options, results."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dsr.datamap.model import FieldRule, Store, Table
from dsr.stores import ConnectorContext, NotSupported, StoreUnavailable, Subject
from dsr.stores.processor import (
    BATCH_ROWS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ProcessorConnector,
    SignatureError,
    callback_path,
    encode,
    request_document,
    sign,
    subject_request_id,
    verify,
    verify_headers,
)

SECRET = "s3cret-" + "k" * 32
NOW = 1_790_000_000.0
MAX = "max.mustermann@example.com"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


# --- signatures ---------------------------------------------------------------------------------


def test_a_signed_body_verifies_and_the_scheme_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"subject_request_id":"x","request_status":"completed"}'
    headers = sign(SECRET, body, now=NOW)
    assert headers[TIMESTAMP_HEADER] == str(int(NOW))
    expected = hmac.new(SECRET.encode(), f"{int(NOW)}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    verify_headers(SECRET, body, headers, now=NOW + 10)


def test_a_tampered_body_is_refused():
    body = b'{"request_status":"pending"}'
    headers = sign(SECRET, body, now=NOW)
    with pytest.raises(SignatureError, match="does not match") as caught:
        verify_headers(SECRET, body.replace(b"pending", b"completed"), headers, now=NOW)
    assert not caught.value.missing


def test_a_body_signed_with_another_secret_is_refused():
    body = b"{}"
    with pytest.raises(SignatureError, match="does not match"):
        verify_headers(SECRET, body, sign("another-secret", body, now=NOW), now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_a_stale_or_future_timestamp_is_refused_even_with_a_valid_signature(skew):
    body = b"{}"
    headers = sign(SECRET, body, now=NOW)
    with pytest.raises(SignatureError, match="300 seconds"):
        verify_headers(SECRET, body, headers, now=NOW + skew)
    verify_headers(SECRET, body, headers, now=NOW + (300 if skew > 0 else -300))  # the edge still counts


def test_a_changed_timestamp_breaks_the_signature():
    body = b"{}"
    headers = sign(SECRET, body, now=NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW) + 60)
    with pytest.raises(SignatureError, match="does not match"):
        verify_headers(SECRET, body, headers, now=NOW)


@pytest.mark.parametrize("drop", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_a_missing_header_is_refused_as_missing(drop):
    headers = sign(SECRET, b"{}", now=NOW)
    del headers[drop]
    with pytest.raises(SignatureError) as caught:
        verify_headers(SECRET, b"{}", headers, now=NOW)
    assert caught.value.missing


@pytest.mark.parametrize("timestamp", ["-5", "1.5", "abc", "9" * 20, " 1790000000"])
def test_a_malformed_timestamp_is_refused(timestamp):
    with pytest.raises(SignatureError):
        verify(SECRET, b"{}", timestamp, sign(SECRET, b"{}", now=NOW)[SIGNATURE_HEADER], now=NOW)


def test_either_of_two_signatures_is_accepted_so_a_secret_can_be_rotated():
    body = b"{}"
    old = sign("old-secret", body, now=NOW)[SIGNATURE_HEADER]
    new = sign(SECRET, body, now=NOW)[SIGNATURE_HEADER]
    verify(SECRET, body, str(int(NOW)), f"{old}, {new}", now=NOW)
    with pytest.raises(SignatureError):
        verify(SECRET, body, str(int(NOW)), f"{old}, {old}", now=NOW)


# --- ids and the OpenDSR request ----------------------------------------------------------------


def test_the_subject_request_id_is_stable_per_case_and_store_and_v4_formatted():
    case = str(uuid.uuid4())
    first = subject_request_id(case, "vonage")
    assert first == subject_request_id(case, "vonage")  # every retry and poll names the same request
    assert first != subject_request_id(case, "aws")
    assert first != subject_request_id(str(uuid.uuid4()), "vonage")
    parsed = uuid.UUID(first)
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and first == first.lower()


def test_the_request_document_has_the_opendsr_fields():
    received = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    case = str(uuid.uuid4())
    subject = Subject.from_email(" Max.Mustermann@Example.com ", case_id=case, received_at=received,
                                 request_type="access")
    doc = request_document(subject, "vonage", {"email": {"format": "raw"}}, ["https://dsr.example/cb"])
    assert doc == {
        "subject_request_id": subject_request_id(case, "vonage"),
        "subject_request_type": "access",
        "subject_identities": [{"identity_type": "email", "identity_value": MAX, "identity_format": "raw"}],
        "submitted_time": "2026-11-24T08:30:15Z",  # the subject's original receipt, in UTC
        "api_version": "0.1",
        "status_callback_urls": ["https://dsr.example/cb"],
    }
    assert RFC3339.match(doc["submitted_time"])
    assert encode(doc) == encode(dict(reversed(list(doc.items()))))  # canonical bytes, whatever the order


def test_identities_can_be_sent_hashed_and_portability_keeps_its_type():
    subject = Subject({"email": MAX, "customer_id": "K00000001"}, case_id="c1",
                      received_at=datetime(2026, 1, 1, tzinfo=UTC), request_type="portability")
    doc = request_document(subject, "vonage", {"email": {"format": "sha256"}, "customer_id": {}}, [])
    assert doc["subject_request_type"] == "portability"
    assert doc["subject_identities"] == [
        {"identity_type": "email", "identity_value": hashlib.sha256(MAX.encode()).hexdigest(),
         "identity_format": "sha256"},
        {"identity_type": "controller_customer_id", "identity_value": "K00000001", "identity_format": "raw"},
    ]
    assert doc["status_callback_urls"] == []


def test_types_opendsr_cannot_express_and_a_missing_case_id_are_refused():
    with pytest.raises(NotSupported, match="rectification"):
        request_document(Subject({"email": MAX}, case_id="c", request_type="rectification"), "v", {"email": {}}, [])
    with pytest.raises(ValueError, match="case id"):
        request_document(Subject({"email": MAX}), "v", {"email": {}}, [])


def test_the_callback_address_names_protocol_store_and_case():
    assert callback_path("opendsr", "vonage", "abc") == "/api/v1/callbacks/opendsr/vonage/abc"


# --- data map options ---------------------------------------------------------------------------


def _store(connection: dict[str, Any] | None = None, identities: dict[str, Any] | None = None,
           tables: dict[str, Table] | None = None) -> Store:
    return Store(
        name="vonage", connector="processor", description={"de": "x", "en": "x"},
        connection={"protocol": "opendsr", "url": "http://127.0.0.1:5081/opendsr", "secret_env": "DSR_VONAGE_SECRET",
                    "poll_seconds": 300, "timeout_seconds": 10} if connection is None else connection,
        identities={"email": {"format": "raw"}} if identities is None else identities,
        tables=tables if tables is not None else {
            "messages": Table("messages", "comm_content", {}, {}),
            "call_recordings_meta": Table("call_recordings_meta", "comm_content", {}, {}),
        },
        recipient="vonage", deadline_days=10,
    )


def test_a_good_store_validates():
    assert ProcessorConnector.validate(_store()) == []
    minimal = {"url": "https://vonage.example/opendsr", "secret_env": "VONAGE_SECRET_2"}
    assert ProcessorConnector.validate(_store(minimal)) == []


@pytest.mark.parametrize(("change", "path"), [
    ({"protocol": "soap"}, "stores.vonage.connection.protocol"),
    ({"url": "ftp://vonage.example/x"}, "stores.vonage.connection.url"),
    ({"url": "vonage.example"}, "stores.vonage.connection.url"),
    ({"secret_env": "s3cr3t-value"}, "stores.vonage.connection.secret_env"),
    ({"secret_env": "${DSR_VONAGE_SECRET}"}, "stores.vonage.connection.secret_env"),
    ({"poll_seconds": 0}, "stores.vonage.connection.poll_seconds"),
    ({"timeout_seconds": -1}, "stores.vonage.connection.timeout_seconds"),
    ({"timeout_seconds": 2.5}, "stores.vonage.connection.timeout_seconds"),
    ({"pol_seconds": 5}, "stores.vonage.connection.pol_seconds"),
])
def test_bad_connection_settings_are_named(change, path):
    connection = {**_store().connection, **change}
    problems = ProcessorConnector.validate(_store(connection))
    assert [p for p, _ in problems] == [path], problems


def test_url_and_secret_env_are_required():
    problems = dict(ProcessorConnector.validate(_store({})))
    assert set(problems) == {"stores.vonage.connection.url", "stores.vonage.connection.secret_env"}


def test_identity_formats_and_table_options_are_checked():
    problems = ProcessorConnector.validate(_store(identities={"email": {"format": "md5"}}))
    assert [p for p, _ in problems] == ["stores.vonage.identities.email.format"]
    tables = {"messages": Table("messages", "comm_content", {}, {"key": "id"})}
    assert [p for p, _ in ProcessorConnector.validate(_store(tables=tables))] == ["stores.vonage.tables.messages.key"]
    problems = ProcessorConnector.validate(_store(identities={}))
    assert [p for p, _ in problems] == ["stores.vonage.identities"]


# --- results into the sink ----------------------------------------------------------------------


@dataclass
class _Writer:
    sink: _Sink
    name: str

    def write(self, rows: Any) -> None:
        self.sink.batches.append((self.name, len(rows)))
        self.sink.rows[self.name].extend(list(r) for r in rows)

    def close(self) -> None:
        self.sink.closed.append(self.name)


class _Sink:
    def __init__(self) -> None:
        self.columns: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[Any]]] = {}
        self.batches: list[tuple[str, int]] = []
        self.closed: list[str] = []

    def open_table(self, name: str, columns: Any, kinds: Any = None) -> _Writer:
        self.columns[name], self.rows[name] = list(columns), []
        return _Writer(self, name)

    def add_file(self, table: str, name: str, content: Any) -> None:
        raise AssertionError("no files expected")


def _connector(tmp_path: Path, store: Store | None = None) -> ProcessorConnector:
    return ProcessorConnector(store or _store(), ConnectorContext(tmp_path))


def test_results_are_written_table_by_table_in_batches_and_unknown_tables_only_named(tmp_path):
    messages = [{"message_id": f"m{i}", "text": "hi"} for i in range(BATCH_ROWS * 2 + 5)]
    messages[3]["meta"] = {"b": 2, "a": [1]}  # a later, nested field becomes a column too
    payload = {"tables": {"messages": messages, "voicemail_audio": [{"id": 1, "secret": "x"}]}}
    sink = _Sink()
    result = _connector(tmp_path)._write(payload, sink)
    assert result.found == {"messages": len(messages), "call_recordings_meta": 0}
    assert sink.columns["messages"] == ["message_id", "text", "meta"]
    assert sink.batches == [("messages", BATCH_ROWS), ("messages", BATCH_ROWS), ("messages", 5)]
    assert sink.closed == ["messages"]
    assert sink.rows["messages"][3] == ["m3", "hi", '{"a": [1], "b": 2}']
    assert sink.rows["messages"][0] == ["m0", "hi", None]
    assert "voicemail_audio" not in sink.columns  # not in the data map: not exported ...
    assert any("'voicemail_audio' (1 record(s))" in note and "data map does not list" in note
               for note in result.notes)  # ... but named for the DPO, without its data
    assert payload["tables"] == {}  # each table is dropped once handled


def test_an_empty_result_table_uses_the_fields_the_map_names_or_writes_nothing(tmp_path):
    rule = FieldRule("to_number", "comm_content")
    store = _store(tables={"messages": Table("messages", "comm_content", {"to_number": rule}, {}),
                           "call_recordings_meta": Table("call_recordings_meta", "comm_content", {}, {})})
    sink = _Sink()
    result = _connector(tmp_path, store)._write({"tables": {"messages": [], "call_recordings_meta": []}}, sink)
    assert result.found == {"messages": 0, "call_recordings_meta": 0}
    assert sink.columns == {"messages": ["to_number"]}


@pytest.mark.parametrize("payload", [{}, {"tables": []}, {"tables": {"messages": {"a": 1}}},
                                     {"tables": {"messages": [1, 2]}}])
def test_results_of_the_wrong_shape_are_refused(tmp_path, payload):
    with pytest.raises(StoreUnavailable, match=r"tables|list of objects"):
        _connector(tmp_path)._write(payload, _Sink())


def test_a_subject_without_an_identity_the_processor_takes_is_not_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)
    connector = _connector(tmp_path, _store(identities={"customer_id": {"format": "raw"}}))
    result = connector.collect(Subject({"email": MAX}, case_id="c", request_type="access"), _Sink())
    assert result.total == 0 and "not asked" in result.notes[0]


def test_the_callback_url_comes_from_the_base_url(tmp_path):
    @dataclass(frozen=True)
    class _Context:
        instance_dir: Path
        connector_for: Any = None
        base_url: str | None = "https://dsr.example/"

    connector = ProcessorConnector(_store(), _Context(tmp_path))  # type: ignore[arg-type]
    assert connector._callback_url(Subject({"email": MAX}, case_id="abc")) == \
        "https://dsr.example/api/v1/callbacks/opendsr/vonage/abc"
    assert _connector(tmp_path)._callback_url(Subject({"email": MAX}, case_id="abc")) is None  # no base URL
