"""Art. 17 erasure at a processor (issue 13, AT-31): the connector against the processor simulator on loopback.

The simulator holds two subjects' records here; an erasure of one must empty only that one's copy. The
connector is driven directly (as a waiting task's polls would), without the database or the queue.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dsr.demo import processor_sim
from dsr.stores import (
    CollectResult,
    ConnectorContext,
    ErasureCount,
    ErasureResult,
    NotSupported,
    Pending,
    Refused,
    StoreUnavailable,
    Subject,
    TableErasure,
)
from dsr.stores.processor import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ProcessorConnector,
    SignatureError,
    encode,
    inbox_path,
    sign,
    subject_request_id,
    verify_headers,
)
from tests.helpers import MAX
from tests.integration.test_processor_store import SECRET, _Live, _Sink, _store, _wait_for

ERIKA = "erika.musterfrau@example.com"
DELETE_ALL = {"messages": TableErasure("delete"), "call_recordings_meta": TableErasure("delete")}


def _records(identities: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Max has 5 messages and 3 recordings, Erika 2 and 1; anyone else nothing."""
    held = {MAX: (5, 3), ERIKA: (2, 1)}
    for identity in identities:
        value = str(identity.get("identity_value", "")).lower()
        for email, (messages, recordings) in held.items():
            if value in (email, hashlib.sha256(email.encode()).hexdigest()):
                return {"messages": [{"message_id": f"{email[:4]}-{n}"} for n in range(messages)],
                        "call_recordings_meta": [{"recording_id": f"{email[:4]}-{n}"} for n in range(recordings)]}
    return {"messages": [], "call_recordings_meta": []}


@pytest.fixture
def sim() -> Iterator[processor_sim.Handle]:
    handle = processor_sim.serve(port=0, secret=SECRET, delay=0.3, records=_records)
    yield handle
    handle.shutdown()


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)


def _subject(email: str = MAX, case_id: str | None = None, request_type: str = "erasure") -> Subject:
    return Subject.from_email(email, case_id=case_id or str(uuid.uuid4()), received_at=datetime.now(UTC),
                              request_type=request_type)


def _erased(connector: ProcessorConnector, subject: Subject, **kwargs: Any) -> ErasureResult:
    def attempt() -> ErasureResult | None:
        try:
            return connector.erase(subject, DELETE_ALL, **kwargs)
        except Pending:
            return None

    result: ErasureResult = _wait_for(attempt)
    return result


def _collected(connector: ProcessorConnector, subject: Subject) -> CollectResult:
    def attempt() -> CollectResult | None:
        try:
            return connector.collect(subject, _Sink())
        except Pending:
            return None

    result: CollectResult = _wait_for(attempt)
    return result


def test_an_erasure_is_submitted_once_waits_and_returns_the_counts_with_the_signed_completion(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    sim.simulator.delay = 3600  # it completes when the test says so
    with pytest.raises(Pending) as first:
        connector.erase(subject, DELETE_ALL)
    reference = subject_request_id(str(subject.case_id), "vonage", "erase")
    assert reference != subject_request_id(str(subject.case_id), "vonage")  # not the case's access request
    assert first.value.reference == reference and first.value.retry_after == 60
    assert "signed receipt verified" in first.value.note and "OpenDSR erasure request" in first.value.note
    sent = sim.simulator.cases[reference].document
    assert sent["subject_request_type"] == "erasure"
    assert sent["subject_identities"][0]["identity_format"] == "sha256" and MAX not in json.dumps(sent)
    with pytest.raises(Pending) as again:  # a poll or a retried job: the same request, not a second one
        connector.erase(subject, DELETE_ALL)
    assert again.value.reference == reference and "OpenDSR erasure request" in again.value.note
    assert list(sim.simulator.cases) == [reference]

    sim.simulator.advance(reference, "completed")
    result = connector.erase(subject, DELETE_ALL)
    assert result.tables == {"messages": ErasureCount(found=5, deleted=5),
                             "call_recordings_meta": ErasureCount(found=3, deleted=3)}
    assert result.touched == 8
    assert "completed; its status is signature-verified and kept as evidence" in result.notes[0]

    # The evidence: the processor's signed status, re-verifiable by whoever holds the shared secret.
    evidence = result.evidence
    assert evidence["kind"] == "opendsr-status" and evidence["store"] == "vonage"
    assert evidence["reference"] == reference and evidence["request_status"] == "completed"
    assert evidence["url"] == f"{sim.url}/requests/{reference}"
    body = evidence["body"].encode()
    assert hashlib.sha256(body).hexdigest() == evidence["body_sha256"]
    headers = {TIMESTAMP_HEADER: evidence["timestamp"], SIGNATURE_HEADER: evidence["signature"]}
    verify_headers(SECRET, body, headers, now=int(evidence["timestamp"]))
    with pytest.raises(SignatureError):
        verify_headers("not-the-secret", body, headers, now=int(evidence["timestamp"]))
    assert json.loads(body)["erasure_counts"]["messages"] == {"found": 5, "deleted": 5}
    assert MAX not in json.dumps(evidence) and hashlib.sha256(MAX.encode()).hexdigest() not in json.dumps(evidence)
    json.dumps(evidence)  # storable as it is

    # Asked again after it completed (a job retried after a crash): the same answer, nothing new at the processor.
    assert connector.erase(subject, DELETE_ALL).tables == result.tables
    assert list(sim.simulator.cases) == [reference]


def test_after_the_erasure_the_processor_holds_nothing_of_the_subject_and_all_of_the_others(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    before = _collected(connector, _subject(ERIKA, request_type="access"))
    assert before.found == {"messages": 2, "call_recordings_meta": 1}
    assert _collected(connector, _subject(request_type="access")).found == {"messages": 5, "call_recordings_meta": 3}

    erasure = _subject()
    assert _erased(connector, erasure).touched == 8

    # The check after the erasure, in the same case: its access request is another request at the processor.
    verification = _collected(connector, Subject(erasure.identities, case_id=erasure.case_id,
                                                 received_at=erasure.received_at, request_type="access"))
    assert verification.found == {"messages": 0, "call_recordings_meta": 0}
    assert _collected(connector, _subject(request_type="access")).found == {"messages": 0, "call_recordings_meta": 0}
    # The same subject asked by the raw address finds the same (emptied) copy.
    raw = ProcessorConnector(replace(_store(sim.url), identities={"email": {"format": "raw"}}),
                             ConnectorContext(tmp_path))
    assert _collected(raw, _subject(request_type="access")).found == {"messages": 0, "call_recordings_meta": 0}
    assert _collected(connector, _subject(ERIKA, request_type="access")).found == before.found

    # A second erasure request (a new case) finds nothing more and says so.
    again = _erased(connector, _subject())
    assert again.tables == {"messages": ErasureCount(), "call_recordings_meta": ErasureCount()}
    assert again.touched == 0


def test_preview_and_bound_say_that_a_processor_counts_only_after_erasing(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    preview = connector.preview(subject, DELETE_ALL)
    assert preview.tables == {} and preview.touched == 0
    assert "cannot count first; its counts come with its signed confirmation" in preview.notes[0]
    assert sim.simulator.cases == {}  # a preview asks the processor nothing

    result = _erased(connector, subject, bound=3)  # no TooMany: nothing could be counted before it acted
    assert result.touched == 8
    assert any("the bound of 3 records does not apply" in note for note in result.notes)
    assert any("reports 8 records deleted or changed, more than the bound of 3" in note for note in result.notes)


def test_a_plan_the_processor_cannot_carry_out_is_refused_before_anything_is_sent(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    for plan in ({"messages": TableErasure("delete"), "call_recordings_meta": TableErasure("retain")},
                 {"messages": TableErasure("delete")},  # a table left out is kept, so this is partial too
                 {"messages": TableErasure("null", ("text_snippet",)), "call_recordings_meta": TableErasure("delete")}):
        with pytest.raises(NotSupported, match="cannot keep or change only some of it"):
            connector.erase(subject, plan)
        with pytest.raises(NotSupported, match="cannot keep or change only some of it"):
            connector.preview(subject, plan)
    with pytest.raises(ValueError, match="no table 'voicemails'"):
        connector.erase(subject, {**DELETE_ALL, "voicemails": TableErasure("delete")})
    for plan in ({}, {"messages": TableErasure("retain")}):
        kept = connector.erase(subject, plan)
        assert kept.tables == {} and "not asked; the plan keeps all" in kept.notes[0]
    nobody = connector.erase(Subject({"phone": "+49301234"}, case_id="c", request_type="erasure"), DELETE_ALL)
    assert "not asked; the subject has none of the identities" in nobody.notes[0]
    assert sim.simulator.cases == {}


def test_a_failed_or_cancelled_erasure_is_refused_and_erases_nothing(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    sim.simulator.delay = 3600
    failed, cancelled = _subject(), _subject()
    with pytest.raises(Pending) as pending:
        connector.erase(failed, DELETE_ALL)
    sim.simulator.fail(pending.value.reference, "subject unknown in this account")
    with pytest.raises(Refused, match=r"erasure request .* as failed: subject unknown in this account"):
        connector.erase(failed, DELETE_ALL)

    with pytest.raises(Pending):
        connector.erase(cancelled, DELETE_ALL)
    assert connector.cancel(cancelled, "erase") is True
    assert connector.cancel(cancelled) is False  # the case's access request was never sent
    with pytest.raises(Refused, match="as cancelled"):
        connector.erase(cancelled, DELETE_ALL)

    sim.simulator.delay = 0.1
    assert _collected(connector, _subject(request_type="access")).found == {"messages": 5, "call_recordings_meta": 3}


@pytest.fixture
def fake_processor() -> Iterator[tuple[_Live, dict[str, tuple[int, bytes, dict[str, str]]]]]:
    """A processor answering whatever the test puts in ``answers`` (path -> status, body, headers)."""
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        status, body, headers = answers.get(environ["PATH_INFO"], (404, b'{"error":{"message":"no"}}', {}))
        start_response(f"{status} X", [("Content-Type", "application/json"), *headers.items()])
        return [body]

    server = _Live(app)
    yield server, answers
    server.stop()


def test_a_forged_unsigned_or_malformed_completion_is_not_used(tmp_path, fake_processor):
    server, answers = fake_processor
    connector = ProcessorConnector(_store(server.url), ConnectorContext(tmp_path))
    subject = _subject()
    path = f"/requests/{subject_request_id(str(subject.case_id), 'vonage', 'erase')}"
    completed = encode({"request_status": "completed", "erasure_counts": {"messages": {"found": 1, "deleted": 1}}})

    answers[path] = (200, completed, {})
    with pytest.raises(StoreUnavailable, match="not signed with the shared secret"):
        connector.erase(subject, DELETE_ALL)
    answers[path] = (200, completed, sign("a-guessed-secret", completed))
    with pytest.raises(StoreUnavailable, match="not signed with the shared secret"):
        connector.erase(subject, DELETE_ALL)
    tampered = completed.replace(b'"deleted":1', b'"deleted":0')
    answers[path] = (200, tampered, sign(SECRET, completed))
    with pytest.raises(StoreUnavailable, match="not signed with the shared secret"):
        connector.erase(subject, DELETE_ALL)
    for bad in ({"messages": {"deleted": -1}}, {"messages": {"deleted": True}}, {"messages": 3}, [1]):
        body = encode({"request_status": "completed", "erasure_counts": bad})
        answers[path] = (200, body, sign(SECRET, body))
        with pytest.raises(StoreUnavailable, match="erasure_counts"):
            connector.erase(subject, DELETE_ALL)

    # Signed correctly: used, with what the map does not list or the processor did not count named in notes.
    body = encode({"request_status": "completed", "erasure_counts": {
        "messages": {"found": 1, "deleted": 1}, "voicemails": {"found": 2, "deleted": 2}}})
    answers[path] = (200, body, sign(SECRET, body))
    result = connector.erase(subject, DELETE_ALL)
    assert result.tables == {"messages": ErasureCount(found=1, deleted=1)}
    assert any("'voicemails'" in note and "2 deleted" in note for note in result.notes)
    assert any("no count for call_recordings_meta" in note for note in result.notes)
    body = encode({"request_status": "completed"})
    answers[path] = (200, body, sign(SECRET, body))
    bare = connector.erase(subject, DELETE_ALL)
    assert bare.tables == {} and any("without counts per table" in note for note in bare.notes)
    assert bare.evidence["body"] == body.decode()

    # A status that names the subject is evidence by its hash only.
    body = encode({"request_status": "completed", "note": f"erased {MAX}"})
    answers[path] = (200, body, sign(SECRET, body))
    named = connector.erase(subject, DELETE_ALL).evidence
    assert named["body"] is None and named["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_webhook_recipient_confirms_the_erasure_by_signed_callback(tmp_path, sim):
    """The simulator's webhook calls back; a stand-in for dsr's callback endpoint verifies and keeps the
    answer where the endpoint keeps it, and the next poll finds it."""
    received: list[int] = []

    def endpoint(environ: Any, start_response: Any) -> list[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        verify_headers(SECRET, raw, {TIMESTAMP_HEADER: environ.get("HTTP_X_OPENDSR_TIMESTAMP"),
                                     SIGNATURE_HEADER: environ.get("HTTP_X_OPENDSR_SIGNATURE")})
        message = json.loads(raw)
        if message["request_status"] == "completed":
            target = inbox_path(tmp_path, "vonage", message["subject_request_id"])
            target.parent.mkdir(parents=True, exist_ok=True)
            # Written whole, then renamed, as dsr's endpoint does (web.callbacks._keep): the poll below
            # must never find the file half written.
            partial = target.with_suffix(".partial")
            partial.write_bytes(raw)
            partial.replace(target)
        received.append(1)
        start_response("204 No Content", [])
        return []

    server = _Live(endpoint)
    try:
        connector = ProcessorConnector(_store(sim.webhook_url, protocol="webhook"),
                                       ConnectorContext(tmp_path, base_url=server.url))
        subject = _subject()
        with pytest.raises(Pending, match="erasure request sent to vonage by signed webhook"):
            connector.erase(subject, DELETE_ALL)
        reference = subject_request_id(str(subject.case_id), "vonage", "erase")
        assert sim.simulator.cases[reference].protocol == "webhook"
        _wait_for(lambda: inbox_path(tmp_path, "vonage", reference).exists())
        result = connector.erase(subject, DELETE_ALL)
    finally:
        server.stop()
    assert result.tables == {"messages": ErasureCount(found=5, deleted=5),
                             "call_recordings_meta": ErasureCount(found=3, deleted=3)}
    assert result.evidence["kind"] == "webhook-callback" and result.evidence["signature"] is None
    assert "tables" not in json.loads(result.evidence["body"])  # a confirmation, never the subject's data
    assert Path(inbox_path(tmp_path, "vonage", reference)).exists()  # kept: a retry finds the same confirmation
    assert connector.erase(subject, DELETE_ALL).tables == result.tables
    assert len(sim.simulator.cases) == 1


def test_the_simulator_offers_erasure_and_an_erasure_has_no_results(tmp_path, sim):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    assert connector.check() == []  # discovery lists access, portability and erasure
    subject = _subject()
    _erased(connector, subject)
    reference = subject_request_id(str(subject.case_id), "vonage", "erase")
    status = sim.simulator.status_document(reference)
    assert "results_url" not in status and status["erasure_counts"]["call_recordings_meta"]["deleted"] == 3
    answer = connector._call("GET", f"{sim.origin}/opendsr/results/{reference}")
    assert answer.status == 404 and b"an erasure has no results" in answer.body
