"""The transactional outbox: jobs reach the queue only after their transaction commits, a queue
that is down at commit time loses nothing (the row stays and the sweeper sends it), and the
sweeper never sends a job twice when the queue already holds it.

Runs on both backends (SQLite + in-process Redis, PostgreSQL + Redis).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import func, select

from dsr.db import make_engine, make_session_factory
from dsr.domain import work
from dsr.domain.audit import verify_chain
from dsr.models import Artifact, OutboxJob, Request, utcnow
from dsr.outbox import JobSpec, install, relay, schedule, sweep
from dsr.queue import RqDispatcher, Sweeper
from tests.helpers import submit

REFUSED = "Error 111 connecting to redis:6379. Connection refused."


class FlakyDispatcher:
    """Fails the first ``failures`` sends as a Redis that is down would, then delegates."""

    def __init__(self, real: RqDispatcher, failures: int = 1) -> None:
        self.real, self.failures, self.sends = real, failures, 0

    def send(self, job: JobSpec) -> None:
        self.sends += 1
        if self.failures > 0:
            self.failures -= 1
            raise redis.exceptions.ConnectionError(REFUSED)
        self.real.send(job)

    def is_known(self, job_id: str) -> bool:
        return self.real.is_known(job_id)


def _outbox(sessions) -> list[OutboxJob]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return list(session.execute(select(OutboxJob).order_by(OutboxJob.id)).scalars())


def _drop_deferred(queue: Queue, *job_ids: str) -> None:
    """Deferred jobs are not in the queue, so the app fixture's clean-up would leave them in Redis."""
    for job_id in job_ids:
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=queue.connection).delete()


def _job_id() -> str:
    return f"dsr-test-{uuid.uuid4()}"


def _install_flaky(monkeypatch: pytest.MonkeyPatch, app, failures: int) -> FlakyDispatcher:  # type: ignore[no-untyped-def]
    """Every session of the app (web and in-thread worker) now relays through the flaky dispatcher."""
    rt = app.extensions["dsr"].runtime
    flaky = FlakyDispatcher(rt.dispatcher, failures)
    factory = make_session_factory(rt.engine)
    install(factory, flaky)
    monkeypatch.setattr(rt, "sessions", factory)
    monkeypatch.setattr(rt, "dispatcher", flaky)
    return flaky


# --- enqueue after commit -----------------------------------------------------------------


def test_a_job_reaches_the_queue_only_after_the_commit_and_its_row_is_then_deleted(app):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    first, second = _job_id(), _job_id()
    with rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, str(uuid.uuid4()), job_id=first)
        schedule(session, work.ADVANCE, str(uuid.uuid4()), job_id=second)
        session.flush()
        # Mid-transaction: the rows exist (in this transaction), the queue knows nothing yet.
        assert session.execute(select(func.count()).select_from(OutboxJob)).scalar_one() == 2
        assert queue.count == 0
        assert first not in queue.job_ids and second not in queue.job_ids
    assert queue.job_ids == [first, second]  # sent in the order they were written
    assert _outbox(rt.sessions) == []


def test_dependencies_are_sent_with_the_job(app):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    first, then = _job_id(), _job_id()
    with rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, "a", job_id=first)
        schedule(session, work.ADVANCE, "b", job_id=then, depends_on=[first])
    assert queue.job_ids == [first]
    assert then in queue.deferred_job_registry.get_job_ids()
    assert _outbox(rt.sessions) == []
    _drop_deferred(queue, then)


def test_a_rolled_back_transaction_sends_nothing_and_leaves_no_row(app):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    lost = _job_id()
    with contextlib.suppress(RuntimeError), rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, str(uuid.uuid4()), job_id=lost)
        session.flush()
        raise RuntimeError("the state change failed")
    assert queue.count == 0
    assert _outbox(rt.sessions) == []

    # The same session, reused after an explicit rollback, sends only what it commits later.
    kept = _job_id()
    with rt.sessions() as session:
        schedule(session, work.ADVANCE, "x", job_id=_job_id())
        session.flush()
        session.rollback()
        schedule(session, work.ADVANCE, "y", job_id=kept)
        session.commit()
    assert queue.job_ids == [kept]
    assert _outbox(rt.sessions) == []


def test_a_rolled_back_savepoint_does_not_hold_back_the_outer_transactions_jobs(app):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    outer, inner = _job_id(), _job_id()
    with rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, "outer", job_id=outer)
        session.flush()
        with contextlib.suppress(RuntimeError), session.begin_nested():
            schedule(session, work.ADVANCE, "inner", job_id=inner)
            session.flush()
            raise RuntimeError("only the savepoint fails")
    assert [row.job_id for row in _outbox(rt.sessions)] == []
    assert queue.job_ids == [outer]


# --- the queue is down at commit time -----------------------------------------------------


@pytest.mark.parametrize("via", ["sweep", "sweeper"])
def test_a_verified_request_survives_a_queue_outage_and_the_sweeper_finishes_it(
    app, client, auth, run_jobs, monkeypatch, via,
):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    flaky = _install_flaky(monkeypatch, app, failures=1)

    created = submit(client)
    verified = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    assert verified.status_code == 200, verified.get_json()  # the state change is saved regardless
    assert verified.get_json()["status"] == "verified"
    assert flaky.sends == 1

    with rt.sessions() as session:
        assert session.get(Request, uuid.UUID(created["id"])).status == "verified"
    rows = _outbox(rt.sessions)
    assert len(rows) == 1
    assert rows[0].job_id == work.advance_id(uuid.UUID(created["id"]), "plan")
    assert rows[0].attempts == 1
    assert rows[0].last_error and "Connection refused" in rows[0].last_error
    assert queue.count == 0
    run_jobs()  # the worker has nothing to do: the job is only in the outbox
    assert client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["status"] == "verified"

    # With the default grace period a fresh row is left to the after-commit relay.
    assert Sweeper(rt, 1).sweep_once() == 0
    assert len(_outbox(rt.sessions)) == 1

    if via == "sweep":
        sent = sweep(rt.sessions, rt.dispatcher, older_than=timedelta(0))
    else:
        monkeypatch.setattr(rt, "settings", replace(rt.settings, outbox_grace_seconds=0))
        sent = Sweeper(rt, 1).sweep_once()
    assert sent == 1
    assert _outbox(rt.sessions) == []
    assert queue.job_ids == [rows[0].job_id]

    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    with rt.sessions() as session:
        artifacts = session.execute(select(Artifact).where(Artifact.request_id == uuid.UUID(created["id"]))).scalars()
        assert [a.kind for a in artifacts] == ["package"]
        assert verify_chain(session).ok
    assert _outbox(rt.sessions) == []


def test_a_sweep_while_the_queue_is_still_down_counts_the_attempt_and_keeps_the_row(app, monkeypatch):
    rt, queue = app.extensions["dsr"].runtime, app.extensions["dsr"].queue
    _install_flaky(monkeypatch, app, failures=2)
    job_id = _job_id()
    with rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, "x", job_id=job_id)
    assert [(r.job_id, r.attempts) for r in _outbox(rt.sessions)] == [(job_id, 1)]

    assert sweep(rt.sessions, rt.dispatcher, older_than=timedelta(0)) == 0
    assert [(r.job_id, r.attempts) for r in _outbox(rt.sessions)] == [(job_id, 2)]
    assert queue.count == 0

    assert sweep(rt.sessions, rt.dispatcher, older_than=timedelta(0)) == 1
    assert _outbox(rt.sessions) == []
    assert queue.job_ids == [job_id]


# --- the sweeper ------------------------------------------------------------------------


def test_sweep_drops_rows_of_jobs_the_queue_already_holds_without_a_duplicate(app):
    context = app.extensions["dsr"]
    rt, queue = context.runtime, context.queue
    known = _job_id()
    with rt.sessions.begin() as session:
        schedule(session, work.ADVANCE, "a", job_id=known)
    assert queue.job_ids == [known] and _outbox(rt.sessions) == []

    # The process died after sending but before deleting the row: the row is back, the job queued.
    # A second row whose job never reached the queue is sent.
    unsent = _job_id()
    plain = make_session_factory(rt.engine)  # no relay: these rows are not sent on commit
    old = utcnow() - timedelta(minutes=5)
    with plain.begin() as session:
        session.add(OutboxJob(job_id=known, function=work.ADVANCE, args=["a"], depends_on=[], created_at=old))
        session.add(OutboxJob(job_id=unsent, function=work.ADVANCE, args=["b"], depends_on=[], created_at=old))

    assert sweep(rt.sessions, rt.dispatcher, older_than=timedelta(0)) == 1
    assert _outbox(rt.sessions) == []
    assert queue.count == 2
    assert queue.job_ids == [known, unsent]  # no second copy of the known job


def test_sweep_leaves_rows_younger_than_the_grace_period(app):
    rt, queue = app.extensions["dsr"].runtime, app.extensions["dsr"].queue
    plain = make_session_factory(rt.engine)
    job_id = _job_id()
    with plain.begin() as session:
        session.add(OutboxJob(job_id=job_id, function=work.ADVANCE, args=["a"], depends_on=[]))
    assert sweep(rt.sessions, rt.dispatcher, older_than=timedelta(seconds=60)) == 0
    assert [r.job_id for r in _outbox(rt.sessions)] == [job_id]
    assert queue.count == 0
    assert sweep(rt.sessions, rt.dispatcher, older_than=timedelta(seconds=60),
                 now=utcnow() + timedelta(seconds=61)) == 1
    assert queue.job_ids == [job_id]


def test_a_truly_unreachable_redis_keeps_every_row_until_the_queue_is_back(app, backend, settings):
    # Nothing listens on port 1. No retries: redis-py would otherwise back off for seconds.
    dead_connection = redis.Redis(port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    dead = RqDispatcher(Queue(settings.queue_name, connection=dead_connection), ())
    with pytest.raises(redis.exceptions.ConnectionError):
        dead.send(JobSpec(_job_id(), work.ADVANCE, ("x",)))

    engine = make_engine(backend.database_url)
    try:
        factory = make_session_factory(engine)
        install(factory, dead)
        first, second = _job_id(), _job_id()
        with factory.begin() as session:  # the commit itself succeeds
            schedule(session, work.ADVANCE, "a", job_id=first)
            schedule(session, work.ADVANCE, "b", job_id=second, depends_on=[first])
        rows = _outbox(factory)
        assert [(r.job_id, r.attempts) for r in rows] == [(first, 1), (second, 1)]
        assert all(r.last_error and "onnect" in r.last_error for r in rows)

        pending = [(r.id, JobSpec(r.job_id, r.function, tuple(r.args), tuple(r.depends_on))) for r in rows]
        assert relay(factory, dead, pending) == 0
        assert [r.attempts for r in _outbox(factory)] == [2, 2]

        # A sweep while Redis is still down must not lose the rows (whether it raises or not).
        with contextlib.suppress(redis.exceptions.ConnectionError):
            assert sweep(factory, dead, older_than=timedelta(0)) == 0
        assert [r.job_id for r in _outbox(factory)] == [first, second]

        # The queue is back: everything is sent, in order, and the outbox is empty. Nothing lost.
        queue = app.extensions["dsr"].queue
        assert sweep(factory, RqDispatcher(queue, ()), older_than=timedelta(0)) == 2
        assert _outbox(factory) == []
        assert queue.job_ids == [first]
        assert second in queue.deferred_job_registry.get_job_ids()
        _drop_deferred(queue, second)
    finally:
        engine.dispose()
