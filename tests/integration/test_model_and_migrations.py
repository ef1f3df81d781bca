"""Migrations and models: one Alembic head, a migrated schema identical to the models on both
databases, faithful round-trips (aware UTC datetimes, JSON with umlauts, UUIDs), concurrent
gap-free references, and a clean downgrade/upgrade cycle.

Runs on both backends (SQLite, PostgreSQL).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError

from dsr import runtime as runtimes
from dsr.db import make_engine, make_session_factory
from dsr.domain import intake
from dsr.domain.audit import GENESIS, HEAD_ID, verify_chain
from dsr.domain.references import current_value
from dsr.migrate import alembic_config, heads, upgrade
from dsr.models import Artifact, AuditHead, Base, OutboxJob, Request, RequestType, Task, utcnow
from tests.conftest import PG_URL

TABLES = {"requests", "tasks", "artifacts", "audit_events", "audit_head", "outbox", "users", "api_tokens",
          "reference_counters", "suppressions", "retention_register"}
BERLIN = ZoneInfo("Europe/Berlin")
DETAILS = {
    "message": "Bitte alle Daten zu meiner Person – inkl. Zahlungsdaten. Grüße aus Köln, Jürgen Weiß",
    "nested": {"ä": {"ö": ["ü", "ß", 1, 2.5, True, None]}, "empty": {}, "list": [{"a": "Ä"}, []]},
    "emoji": "🙂",
}


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, Base.metadata))


# --- schema ---------------------------------------------------------------------------------


def test_alembic_has_exactly_one_head(backend):
    assert len(heads(backend.database_url)) == 1


def test_the_migrated_schema_has_every_table_and_matches_the_models(engine):
    names = set(inspect(engine).get_table_names())
    assert names >= TABLES, TABLES - names
    assert "alembic_version" in names
    assert {t.name for t in Base.metadata.sorted_tables} == TABLES  # the list above is complete
    assert _differences(engine) == []


# --- round-trips ------------------------------------------------------------------------------


def _request(received_at: datetime, **overrides: object) -> Request:
    values: dict[str, object] = {
        "id": uuid.uuid4(), "reference": f"DSR-TEST-{uuid.uuid4().hex[:8]}", "type": "access",
        "email": "jürgen.weiß@example.com", "locale": "de", "details": DETAILS, "received_at": received_at,
        "due_at": received_at + timedelta(days=31), "legal_end": date(2026, 4, 2), "target_on": date(2026, 3, 27),
    }
    values.update(overrides)
    return Request(**values)


def test_aware_datetimes_json_and_uuids_round_trip(sessions, engine):
    # A Berlin wall-clock time with microseconds, on the day the clocks go forward.
    received = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=BERLIN)
    request = _request(received)
    with sessions.begin() as session:
        session.add(request)
        session.flush()
        session.add(Task(request_id=request.id, store="portal_db", action="collect",
                         counts={"found": {"accounts": 1, "zähler": 2}, "total": 3}, checkpoint={"über": None}))
        session.add(Artifact(request_id=request.id, kind="package", filename="DSR-Ä.zip", media_type="application/zip",
                             path="packages/x.zip", size=5 * 1024**3, sha256="a" * 64,
                             expires_at=received + timedelta(days=30)))

    with sessions() as session:
        back = session.get(Request, request.id)
        assert back is not None and back is not request
        assert isinstance(back.id, uuid.UUID) and back.id == request.id
        for name in ("received_at", "due_at", "updated_at"):
            value = getattr(back, name)
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0), name
        assert back.received_at == received
        assert back.received_at == datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
        assert back.details == DETAILS
        assert back.email == "jürgen.weiß@example.com"
        assert (back.legal_end, back.target_on) == (date(2026, 4, 2), date(2026, 3, 27))
        [task] = back.tasks
        assert isinstance(task.id, uuid.UUID) and task.request_id == request.id
        assert task.counts == {"found": {"accounts": 1, "zähler": 2}, "total": 3}
        assert task.checkpoint == {"über": None}
        assert task.started_at is None
        [artifact] = back.artifacts
        assert artifact.size == 5 * 1024**3  # BIGINT, beyond 32 bits
        assert artifact.expires_at == received + timedelta(days=30)
        assert artifact.created_at.utcoffset() == timedelta(0)

    # Stored as UTC on both databases (SQLite: naive UTC text), so SQL comparisons are correct.
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT received_at FROM requests WHERE reference = :r"),
                           {"r": request.reference}).scalar_one()
    if engine.dialect.name == "sqlite":
        assert str(raw).startswith("2026-03-29 01:30:15.123456")
    else:
        assert raw == received


def test_comparisons_in_sql_respect_time_zones(sessions):
    early = _request(datetime(2026, 6, 1, 10, 0, tzinfo=UTC))
    late = _request(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    with sessions.begin() as session:
        session.add_all([early, late])
    cut = datetime(2026, 6, 1, 13, 30, tzinfo=BERLIN)  # 11:30 UTC
    with sessions() as session:
        before = session.execute(select(Request.id).where(Request.received_at < cut)).scalars().all()
        assert before == [early.id]


def test_a_naive_datetime_is_refused(sessions):
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as session:
        session.add(_request(datetime(2026, 6, 1, 10, 0)))  # noqa: DTZ001 (the point of the test)


def test_outbox_json_args_round_trip(sessions):
    with sessions.begin() as session:
        session.add(OutboxJob(job_id="j-1", function="workers.jobs.advance", args=["Ä", {"n": [1, 2]}],
                              depends_on=["a", "b"]))
    with sessions() as session:
        row = session.execute(select(OutboxJob)).scalar_one()
        assert (row.args, row.depends_on, row.attempts, row.last_error) == (["Ä", {"n": [1, 2]}], ["a", "b"], 0, None)
        assert row.created_at.utcoffset() == timedelta(0)


# --- references -------------------------------------------------------------------------------


def test_concurrent_intakes_get_distinct_consecutive_references(settings):
    threads = 20
    rt = runtimes.build(settings)
    now = utcnow()
    year = rt.deadlines.compute(now).received_on.year
    barrier = threading.Barrier(threads)
    references: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def intake_one(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            with rt.sessions.begin() as session:
                request = intake.submit(session, intake.Submission(RequestType.ACCESS, f"s{n}@example.com", "de"),
                                        received_at=now, policy=rt.deadlines, datamap_version=rt.datamap.version)
            with lock:
                references.append(request.reference)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=intake_one, args=(n,)) for n in range(threads)]
    try:
        for t in pool:
            t.start()
        for t in pool:
            t.join(120)
        assert not errors, errors
        assert sorted(references) == [f"DSR-{year}-{i:06d}" for i in range(1, threads + 1)]
        with rt.sessions() as session:
            assert current_value(session, year) == threads
            stored = session.execute(select(Request.reference)).scalars().all()
            assert sorted(stored) == sorted(references)
            report = verify_chain(session)
            assert report.ok and report.events == threads, report
    finally:
        rt.close()


# --- downgrade and upgrade ------------------------------------------------------------------


@pytest.fixture
def fresh_database_url(backend, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database: a new SQLite file, or a temporary PostgreSQL database on the real server."""
    if not backend.real:
        yield f"sqlite:///{tmp_path / 'fresh' / 'dsr.sqlite'}"
        return
    assert PG_URL
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"dsr_migr_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_downgrade_to_base_and_upgrade_to_head_on_a_fresh_database(fresh_database_url):
    url = fresh_database_url
    upgrade(url)
    upgrade(url)  # idempotent
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES

        command.downgrade(alembic_config(url), "base")
        engine.dispose()
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) <= {"alembic_version"}
        if engine.dialect.name == "postgresql":
            assert inspector.get_sequence_names() == []
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 0

        upgrade(url)
        engine.dispose()
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert _differences(engine) == []
        with make_session_factory(engine)() as session:
            head = session.get(AuditHead, HEAD_ID)
            assert head is not None and (head.seq, head.hash) == (0, GENESIS)
            assert verify_chain(session).ok
    finally:
        engine.dispose()
