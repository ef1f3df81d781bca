"""Receiving a request as the API does (``intake.receive``): on PostgreSQL one autocommitted
statement that locks the chain head, counts the reference, stores the request and its event, hashed
by the database; on SQLite the ORM path. Both must give the same rows, gap-free references and an
intact chain, also with other audit writers at the same time.

Runs on both backends (SQLite + in-process Redis, PostgreSQL + Redis).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, literal, select
from sqlalchemy.orm import Session, sessionmaker

from dsr import runtime as runtimes
from dsr.domain import audit, intake
from dsr.domain.audit import HEAD_ID, ChainReport, event_hash, verify_chain
from dsr.domain.references import current_value
from dsr.models import AuditEvent, AuditHead, ReferenceCounter, Request, RequestType
from dsr.runtime import Runtime

RECEIVED = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)


def _receive(rt: Runtime, email: str, *, at: datetime = RECEIVED) -> Request:
    return intake.receive(rt.sessions, intake.Submission(RequestType.ACCESS, email, "de"), received_at=at,
                          policy=rt.deadlines, datamap_version=rt.datamap.version)


@pytest.fixture
def rt(settings) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    built = runtimes.build(settings)
    yield built
    built.close()


def _report(sessions: sessionmaker[Session]) -> ChainReport:
    with sessions() as session:
        return verify_chain(session)


def test_a_received_request_and_its_event_are_stored_as_the_chain_recomputes_them(rt):
    request = _receive(rt, "  Jane.Doe@Example.COM ")
    deadline = rt.deadlines.compute(RECEIVED)
    assert request.reference == "DSR-2026-000001"
    with rt.sessions() as session:
        stored = session.get(Request, request.id)
        assert stored is not None
        assert (stored.reference, stored.type, stored.status, stored.email, stored.locale, stored.channel) == (
            "DSR-2026-000001", "access", "received", "jane.doe@example.com", "de", "api")
        assert (stored.received_at, stored.due_at, stored.legal_end, stored.target_on) == (
            RECEIVED, deadline.due_at, deadline.legal_end, deadline.target)
        assert (stored.details, stored.password_protected, stored.version, stored.verified_at) == ({}, False, 1, None)
        assert stored.datamap_version == rt.datamap.version
        event = session.execute(select(AuditEvent)).scalar_one()
        assert (event.seq, event.action, event.actor, event.request_id, event.at) == (
            1, "request.received", "subject", request.id, RECEIVED)
        assert event.data == {"reference": "DSR-2026-000001", "type": "access", "channel": "api",
                              "legal_end": deadline.legal_end.isoformat(), "target_on": deadline.target.isoformat()}
        assert event.prev_hash == audit.GENESIS
        assert event.hash == event_hash(1, event.at, event.actor, event.action, event.request_id, event.data,
                                        audit.GENESIS)
        head = session.get(AuditHead, HEAD_ID)
        assert head is not None and (head.seq, head.hash) == (1, event.hash)
    assert _report(rt.sessions) == ChainReport(1, True)


def test_the_returned_request_is_usable_in_the_same_transaction(rt):
    with rt.sessions.begin() as session:
        request = intake.submit(session, intake.Submission(RequestType.ERASURE, "a@example.com", "en"),
                                received_at=RECEIVED, policy=rt.deadlines, datamap_version=rt.datamap.version)
        assert session.get(Request, request.id) is request
        intake.verify(session, request, actor="token:tests", method="manual", now=RECEIVED)
    with rt.sessions() as session:
        stored = session.get(Request, request.id)
        assert stored is not None and (stored.status, stored.version) == ("verified", 2)
    assert _report(rt.sessions) == ChainReport(2, True)


def test_concurrent_receipts_and_other_audit_writers_keep_references_and_the_chain_gap_free(rt):
    intakes, per_intake, others, per_other = 6, 15, 2, 15
    barrier = threading.Barrier(intakes + others)
    errors: list[BaseException] = []
    received: list[Request] = []
    lock = threading.Lock()

    def receive(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(per_intake):
                request = _receive(rt, f"s{n}-{i}@example.com")
                with lock:
                    received.append(request)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    def record(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(per_other):
                with rt.sessions.begin() as session:
                    audit.record(session, "test.concurrent", actor=f"writer-{n}", data={"i": i, "note": "Straße"})
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=receive, args=(n,)) for n in range(intakes)]
    pool += [threading.Thread(target=record, args=(n,)) for n in range(others)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors
    total = intakes * per_intake
    assert sorted(r.reference for r in received) == [f"DSR-2026-{i:06d}" for i in range(1, total + 1)]
    assert _report(rt.sessions) == ChainReport(total + others * per_other, True)
    with rt.sessions() as session:
        assert current_value(session, 2026) == total
        events = session.execute(select(AuditEvent.request_id, AuditEvent.data)
                                 .where(AuditEvent.action == "request.received")).all()
        stored = {row.id: row.reference for row in session.execute(select(Request.id, Request.reference))}
    assert {request_id: data["reference"] for request_id, data in events} == stored
    assert len(stored) == total


def test_references_past_999999_get_a_seventh_digit(rt):
    with rt.sessions.begin() as session:
        session.add(ReferenceCounter(year=2026, value=999_998))
    assert [_receive(rt, f"{n}@example.com").reference for n in range(2)] == ["DSR-2026-999999",
                                                                              "DSR-2026-1000000"]
    assert _report(rt.sessions) == ChainReport(2, True)


def test_a_rolled_back_submission_leaves_no_request_event_or_number(rt):
    with rt.sessions() as session:
        intake.submit(session, intake.Submission(RequestType.ACCESS, "gone@example.com", "de"), received_at=RECEIVED,
                      policy=rt.deadlines, datamap_version=rt.datamap.version)
        session.rollback()
    with rt.sessions() as session:
        assert session.execute(select(Request)).first() is None
        assert session.execute(select(AuditEvent)).first() is None
        assert current_value(session, 2026) == 0
    assert _receive(rt, "next@example.com").reference == "DSR-2026-000001"


def test_a_missing_chain_head_is_made_and_the_request_received(rt):
    with rt.sessions.begin() as session:
        session.execute(delete(AuditHead))
    assert _receive(rt, "first@example.com").reference == "DSR-2026-000001"
    assert _report(rt.sessions) == ChainReport(1, True)


def test_a_database_hashed_event_with_umlauts_nested_data_and_a_filled_value_verifies(rt, backend):
    if not backend.real:
        pytest.skip("hashing in the database is PostgreSQL's; on SQLite events go through audit.record")
    request_id = uuid.uuid4()
    for i, at in enumerate([RECEIVED, datetime(2026, 3, 2, 9, 30, tzinfo=UTC)], 1):
        head = audit.locked_head()
        filled = audit.appended(head, filled={"code": literal(f"K-{i}")})
        values = audit.appended_values("test.fülle", actor="Prüferin Ärger", request_id=request_id if i == 1 else None,
                                       at=at, data={"note": "Straße – „Zitat“ \\ \"q\"", "nested": {"rows": [i, 2.5]},
                                                    "code": "ignored"}, filled=["code"])
        with rt.sessions.begin() as session:
            session.connection().execute(audit.head_moved(filled), values)
    assert _report(rt.sessions) == ChainReport(2, True)
    with rt.sessions() as session:
        data = session.execute(select(AuditEvent.data).order_by(AuditEvent.seq)).scalars().all()
    assert [d["code"] for d in data] == ["K-1", "K-2"]
    assert data[0]["note"] == "Straße – „Zitat“ \\ \"q\""
