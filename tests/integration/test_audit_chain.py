"""The hash-chained audit trail: intact after real work, every tampering detected and located
(also through ``dsr audit verify``), and gap-free numbering under concurrent writers.

Runs on both backends (SQLite + in-process Redis, PostgreSQL + Redis).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from dsr import runtime as runtimes
from dsr.cli import main
from dsr.domain import audit
from dsr.domain.audit import GENESIS, HEAD_ID, ChainReport, event_hash, verify_chain
from dsr.models import AuditEvent, AuditHead
from tests.conftest import SECRET
from tests.helpers import submit

EVENTS = 6
events_table = AuditEvent.__table__


@pytest.fixture
def chain(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Six events, one transaction each, with the kinds of data real events carry."""
    request_id = uuid.uuid4()
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    for i in range(1, EVENTS + 1):
        with sessions.begin() as session:
            audit.record(session, f"test.step{i}", actor="token:tests", request_id=request_id if i % 2 else None,
                         at=start + timedelta(seconds=i, microseconds=i), data={
                             "i": i, "note": "Prüfung der Identität – Straße", "nested": {"rows": [i, i * 2]},
                         })
    return sessions


def _report(sessions: sessionmaker[Session]) -> ChainReport:
    with sessions() as session:
        return verify_chain(session)


def _seqs(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as session:
        return list(session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars())


def _event(sessions: sessionmaker[Session], seq: int) -> AuditEvent:
    with sessions() as session:
        event = session.get(AuditEvent, seq)
        assert event is not None
        return event


def _cli_env(backend, tmp_path) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
    return {
        "DSR_DATABASE_URL": backend.database_url,
        "DSR_INSTANCE_DIR": str(tmp_path / "cli-instance"),
        "DSR_PORTAL_DB_URL": backend.store_url,
        "DSR_SECRET_KEY": SECRET,
        "DSR_REDIS_URL": None,
        "DSR_ENV": None,
    }


# --- intact after the real flow -------------------------------------------------------------


def test_the_chain_is_intact_and_gap_free_after_a_full_request(client, auth, run_jobs, app):
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    run_jobs()
    assert client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["status"] == "completed"

    sessions = app.extensions["dsr"].runtime.sessions
    report = _report(sessions)
    assert report.ok, report
    seqs = _seqs(sessions)
    assert seqs == list(range(1, len(seqs) + 1))
    assert report.events == len(seqs) >= 7  # token, received, verified, planned, task, artifact, completed
    with sessions() as session:
        head = session.get(AuditHead, HEAD_ID)
        last = session.get(AuditEvent, seqs[-1])
        first = session.get(AuditEvent, 1)
        assert head is not None and last is not None and first is not None
        assert (head.seq, head.hash) == (last.seq, last.hash)
        assert first.prev_hash == GENESIS


def test_an_empty_chain_verifies(sessions):
    assert _report(sessions) == ChainReport(0, True)


def test_umlauts_and_nested_data_hash_the_same_after_the_database_round_trip(chain):
    assert _report(chain) == ChainReport(EVENTS, True)
    assert _event(chain, 2).data == {"i": 2, "note": "Prüfung der Identität – Straße", "nested": {"rows": [2, 4]}}


def test_an_event_recorded_with_a_non_utc_time_verifies(sessions):
    with sessions.begin() as session:
        audit.record(session, "request.received", actor="subject",
                     at=datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin")))
    assert _report(sessions).ok


# --- tampering is detected and located ------------------------------------------------------


def _sql(engine: Engine, statement: Any, **params: Any) -> None:
    with engine.begin() as conn:
        result = conn.execute(statement, params) if params else conn.execute(statement)
        assert result.rowcount >= 1


def _swap(engine: Engine, a: int, b: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(events_table).where(events_table.c.seq == a).values(seq=-1))
        conn.execute(update(events_table).where(events_table.c.seq == b).values(seq=a))
        conn.execute(update(events_table).where(events_table.c.seq == -1).values(seq=b))


def _rehash(engine: Engine, sessions: sessionmaker[Session], seq: int, actor: str) -> None:
    """A smarter forger: changes an event and recomputes its own hash (but cannot fix what follows)."""
    e = _event(sessions, seq)
    digest = event_hash(e.seq, e.at, actor, e.action, e.request_id, e.data, e.prev_hash)
    _sql(engine, update(events_table).where(events_table.c.seq == seq).values(actor=actor, hash=digest))


TAMPERINGS: dict[str, tuple[Callable[[Engine, sessionmaker[Session]], None], int, str]] = {
    "actor changed": (lambda e, s: _sql(e, text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")),
                      3, "changed"),
    "data changed": (lambda e, s: _sql(e, update(events_table).where(events_table.c.seq == 3).values(
        data={"i": 3, "note": "Prüfung der Identität – Straße", "nested": {"rows": [3, 7]}})), 3, "changed"),
    "action changed": (lambda e, s: _sql(e, text("UPDATE audit_events SET action = 'test.other' WHERE seq = 4")),
                       4, "changed"),
    "time moved by 1 µs": (lambda e, s: _sql(e, update(events_table).where(events_table.c.seq == 2).values(
        at=_event(s, 2).at + timedelta(microseconds=1))), 2, "changed"),
    "request detached": (lambda e, s: _sql(e, update(events_table).where(events_table.c.seq == 5).values(
        request_id=None)), 5, "changed"),
    "first event deleted": (lambda e, s: _sql(e, delete(events_table).where(events_table.c.seq == 1)),
                            1, "missing"),
    "middle event deleted": (lambda e, s: _sql(e, delete(events_table).where(events_table.c.seq == 3)),
                             3, "missing"),
    "last event deleted (truncation)": (lambda e, s: _sql(e, delete(events_table).where(
        events_table.c.seq == EVENTS)), EVENTS, "removed"),
    "two events swapped": (lambda e, s: _swap(e, 3, 4), 3, "link"),
    "middle event rewritten and re-hashed": (lambda e, s: _rehash(e, s, 3, "mallory"), 4, "link"),
}


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_tampering_is_detected_at_the_first_broken_event(chain, engine, how):
    assert _report(chain).ok
    tamper, broken_at, problem = TAMPERINGS[how]
    tamper(engine, chain)
    report = _report(chain)
    assert not report.ok, how
    assert report.first_broken_seq == broken_at, report
    assert report.problem and problem in report.problem, report


def test_a_rewritten_and_rehashed_last_event_is_located_at_that_event(chain, engine):
    _rehash(engine, chain, EVENTS, "mallory")
    report = _report(chain)
    assert not report.ok  # this part holds: the head's hash no longer matches
    assert report.first_broken_seq == EVENTS, report


def test_an_event_forged_behind_the_head_is_located_at_that_event(chain, engine):
    last = _event(chain, EVENTS)
    seq, at = EVENTS + 1, last.at + timedelta(seconds=1)
    digest = event_hash(seq, at, "mallory", "test.forged", None, {}, last.hash)
    with chain.begin() as session:  # no audit.record: the head is not moved
        session.add(AuditEvent(seq=seq, at=at, actor="mallory", action="test.forged", request_id=None, data={},
                               prev_hash=last.hash, hash=digest))
    report = _report(chain)
    assert not report.ok
    assert report.first_broken_seq == EVENTS + 1, report


def test_truncation_with_the_head_row_deleted_is_detected(chain, engine):
    _sql(engine, delete(events_table).where(events_table.c.seq == EVENTS))
    _sql(engine, delete(AuditHead.__table__))
    assert not _report(chain).ok


# --- dsr audit verify -----------------------------------------------------------------------


def test_cli_audit_verify_says_intact_and_exits_0(chain, backend, tmp_path):
    result = CliRunner().invoke(main, ["audit", "verify"], env=_cli_env(backend, tmp_path))
    assert result.exit_code == 0, result.output
    assert f"intact: {EVENTS} events" in result.output


def test_cli_audit_verify_names_the_broken_event_and_exits_1(chain, engine, backend, tmp_path):
    _sql(engine, text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 4"))
    result = CliRunner().invoke(main, ["audit", "verify"], env=_cli_env(backend, tmp_path))
    assert result.exit_code == 1, result.output
    assert "BROKEN at event 4" in result.output
    assert "intact" not in result.output


def test_cli_audit_verify_reports_a_deleted_event(chain, engine, backend, tmp_path):
    _sql(engine, delete(events_table).where(events_table.c.seq == 2))
    result = CliRunner().invoke(main, ["audit", "verify"], env=_cli_env(backend, tmp_path))
    assert result.exit_code == 1, result.output
    assert "BROKEN at event 2" in result.output and "missing" in result.output


# --- concurrent writers -----------------------------------------------------------------------


def test_concurrent_writers_get_gap_free_numbers_and_an_intact_chain(settings):
    threads, per_thread = 8, 25
    rt = runtimes.build(settings)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(per_thread):
                with rt.sessions.begin() as session:
                    audit.record(session, "test.concurrent", actor=f"thread-{worker}", data={"i": i})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join(120)
        assert not errors, errors
        report = _report(rt.sessions)
        assert report == ChainReport(threads * per_thread, True), report
        assert _seqs(rt.sessions) == list(range(1, threads * per_thread + 1))
        with rt.sessions() as session:
            head = session.get(AuditHead, HEAD_ID)
            assert head is not None and head.seq == threads * per_thread
            # Each writer's own events keep its order.
            for n in range(threads):
                mine = session.execute(select(AuditEvent.data).where(AuditEvent.actor == f"thread-{n}")
                                       .order_by(AuditEvent.seq)).scalars().all()
                assert [d["i"] for d in mine] == list(range(per_thread))
    finally:
        rt.close()
