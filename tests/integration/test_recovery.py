"""The watchdog's and the claim's decisions, one by one, on both backends.

The state each case starts from is the one a fault leaves behind: a task marked running by an
attempt whose process is gone (its lease lapsed), or jobs the queue no longer holds (a Redis that
restarted empty, here: this test's queue purged from it). The real faults (processes killed,
PostgreSQL cut, Redis restarted) are in test_faults.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from dsr.domain import fulfilment, work
from dsr.domain.recovery import Recovered
from dsr.models import AuditEvent, OutboxJob, Request, Task, TaskStatus, utcnow
from dsr.queue import purge_queue
from tests.helpers import dpo_auth, submit, work_off

DEAD_JOB = "dsr-collect-of-a-worker-that-died"


@pytest.fixture
def office(app: Any) -> Any:
    return app.extensions["dsr"]


def _start(app: Any) -> uuid.UUID:
    client = app.test_client()
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=dpo_auth(app)).status_code == 200
    return uuid.UUID(created["id"])


def _recover(office: Any, grace: float = 0.0) -> Recovered:
    from dsr.domain.planning import ACTIONS
    from dsr.domain.recovery import recover

    return recover(office.runtime.sessions, office.runtime.dispatcher.is_known, grace=timedelta(seconds=grace),
                   automated=set(ACTIONS))


def _plan(office: Any, run_jobs: Any, request_id: uuid.UUID) -> dict[str, Task]:
    run_jobs(max_jobs=1)  # the planning job only
    with office.runtime.sessions() as session:
        tasks = {t.store: t for t in session.execute(select(Task).where(Task.request_id == request_id)).scalars()}
    assert tasks and all(t.status == TaskStatus.QUEUED for t in tasks.values())
    return tasks


def _die_while_running(office: Any, task_id: uuid.UUID, *, lease_left: float = -1.0, job: str = DEAD_JOB) -> None:
    """What a worker killed mid-collect leaves: the task running for its job, the job gone from the queue."""
    with office.runtime.sessions.begin() as session:
        session.execute(update(Task).where(Task.id == task_id).values(
            status=TaskStatus.RUNNING.value, attempts=Task.attempts + 1, job_id=job, runner="gone pid 4242",
            started_at=utcnow(), lease_expires_at=utcnow() + timedelta(seconds=lease_left)))
    office.queue.remove(work.collect_id(task_id, 1))


def _task(office: Any, task_id: uuid.UUID) -> Task:
    with office.runtime.sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def _request(office: Any, request_id: uuid.UUID) -> Request:
    with office.runtime.sessions() as session:
        request = session.get(Request, request_id)
        assert request is not None
        return request


def _events(office: Any, request_id: uuid.UUID, action: str) -> list[dict[str, Any]]:
    with office.runtime.sessions() as session:
        return [e.data for e in session.execute(select(AuditEvent).where(
            AuditEvent.request_id == request_id, AuditEvent.action == action)).scalars()]


def test_a_task_whose_attempt_died_is_taken_over_and_the_request_completes(app, office, run_jobs):
    request_id = _start(app)
    portal = _plan(office, run_jobs, request_id)["portal_db"]
    _die_while_running(office, portal.id)

    assert _recover(office).abandoned == 1
    assert _task(office, portal.id).status == TaskStatus.QUEUED
    run_jobs()
    assert _request(office, request_id).status == "completed"
    task = _task(office, portal.id)
    assert (task.status, task.attempts, task.lease_expires_at) == (TaskStatus.DONE, 2, None)
    assert _events(office, request_id, "task.abandoned") == [
        {"store": "portal_db", "attempt": 1, "runner": "gone pid 4242", "job": DEAD_JOB, "times": 1}]
    assert len(_events(office, request_id, "request.completed")) == 1


def test_a_task_held_by_a_live_lease_is_left_to_its_holder(app, office, run_jobs):
    request_id = _start(app)
    portal = _plan(office, run_jobs, request_id)["portal_db"]
    _die_while_running(office, portal.id, lease_left=60)

    assert not _recover(office)  # alive, as far as anyone can tell
    runtime = office.runtime
    assert fulfilment.collect(runtime.sessions, runtime.connector, runtime.storage, portal.id, final_attempt=True,
                              holder="dsr-collect-another-job") is None  # a second job does not barge in
    assert _task(office, portal.id).status == TaskStatus.RUNNING
    assert not _events(office, request_id, "task.abandoned")


def test_the_retry_of_the_same_job_takes_its_task_over_at_once(app, office, run_jobs):
    """RQ runs a job whose work horse was killed again under the same id: that earlier run is dead, whatever
    its lease says, and the retry must do the work instead of finding it 'running' and succeeding idly."""
    request_id = _start(app)
    portal = _plan(office, run_jobs, request_id)["portal_db"]
    _die_while_running(office, portal.id, lease_left=60, job=work.collect_id(portal.id, 1))

    runtime = office.runtime
    task = fulfilment.collect(runtime.sessions, runtime.connector, runtime.storage, portal.id, final_attempt=True,
                              holder=work.collect_id(portal.id, 1))
    assert task is not None and (task.status, task.attempts) == (TaskStatus.DONE, 2)
    assert [e["times"] for e in _events(office, request_id, "task.abandoned")] == [1]


def test_a_task_that_kills_its_worker_three_times_fails_and_says_why(app, office, run_jobs):
    request_id = _start(app)
    portal = _plan(office, run_jobs, request_id)["portal_db"]
    for _ in range(fulfilment.MAX_ABANDONED):
        _die_while_running(office, portal.id)
        assert _recover(office).abandoned == 1
        office.queue.remove(work.collect_id(portal.id, f"{_task(office, portal.id).attempts + 1}-recovered"))
    task = _task(office, portal.id)
    assert task.status == TaskStatus.FAILED
    assert "stopped 3 times" in (task.error or "")
    run_jobs()  # the other stores; then the request is assembled: failed, naming the store
    assert _request(office, request_id).status == "failed"
    assert _events(office, request_id, "request.failed")[0]["stores"] == {"portal_db": "failed"}


def test_jobs_the_queue_lost_are_sent_again_once(app, office, run_jobs):
    request_id = _start(app)
    tasks = _plan(office, run_jobs, request_id)
    purge_queue(office.queue)  # a Redis restarted without persistence

    assert _recover(office, grace=3600) == Recovered()  # too fresh: their jobs may be on the way
    assert _recover(office).resent == len(tasks)
    assert _recover(office) == Recovered()  # sent: the queue holds them now
    run_jobs()
    assert _request(office, request_id).status == "completed"
    assert len(_events(office, request_id, "task.requeued")) == len(tasks)
    assert len(_events(office, request_id, "request.completed")) == 1


def test_a_lost_assembly_and_a_lost_planning_are_sent_again(app, office, run_jobs):
    request_id = _start(app)
    purge_queue(office.queue)  # the planning job is gone
    assert _recover(office).planned == 1
    assert _events(office, request_id, "request.planning_requeued")
    run_jobs(max_jobs=1)
    assert _request(office, request_id).status == "in_progress"

    run_jobs(max_jobs=len(office.runtime.datamap.stores))  # every collect; the assembly they scheduled stays
    purge_queue(office.queue)
    assert _request(office, request_id).status == "in_progress"
    assert _recover(office).assembled == 1
    run_jobs()
    assert _request(office, request_id).status == "completed"
    assert len(_events(office, request_id, "request.completed")) == 1
    assert _recover(office) == Recovered()  # nothing left to do


def test_the_last_task_to_end_schedules_the_one_assembly(app, office, run_jobs):
    request_id = _start(app)
    run_jobs(max_jobs=1)
    stores = len(office.runtime.datamap.stores)
    for done in range(1, stores + 1):
        run_jobs(max_jobs=1)
        with office.runtime.sessions() as session:
            assemblies = session.execute(select(OutboxJob.job_id).where(
                OutboxJob.function == work.ASSEMBLE)).scalars().all()
        queued = [j for j in office.queue.get_job_ids() if j.startswith(f"dsr-assemble-{request_id}")]
        assert len(assemblies) + len(queued) == (1 if done == stores else 0), (done, assemblies, queued)
    run_jobs()
    assert _request(office, request_id).status == "completed"


def test_a_manual_store_waiting_for_a_person_is_not_polled(make_app, tmp_path, settings):
    """A task waiting without a poll (a manual store, a processor that calls back) has no job to lose."""
    from tests.integration.test_manual_store import ARCHIVE

    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    raw["stores"]["paper_archive"] = {k: v for k, v in ARCHIVE.items() if k != "deadline_days"}  # no check due
    path = tmp_path / "with-manual.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    app = make_app(datamap_path=path)
    office = app.extensions["dsr"]
    request_id = _start(app)
    work_off(app, logging_level="CRITICAL")
    with office.runtime.sessions() as session:
        manual = session.execute(select(Task).where(Task.request_id == request_id,
                                                    Task.store == "paper_archive")).scalar_one()
    assert (manual.status, manual.job_id) == (TaskStatus.WAITING, None)
    assert _recover(office) == Recovered()
    assert _request(office, request_id).status == "in_progress"


def test_a_task_running_without_a_lease_is_taken_over_only_after_the_job_timeout(app, office, run_jobs):
    """Claimed by a dsr from before leases (a rolling release): alive while its job may still run."""
    request_id = _start(app)
    portal = _plan(office, run_jobs, request_id)["portal_db"]
    _die_while_running(office, portal.id)
    with office.runtime.sessions.begin() as session:
        session.execute(update(Task).where(Task.id == portal.id).values(
            lease_expires_at=None, started_at=utcnow() - timedelta(minutes=50)))
    assert not _recover(office)
    with office.runtime.sessions.begin() as session:
        session.execute(update(Task).where(Task.id == portal.id).values(started_at=utcnow() - timedelta(minutes=61)))
    assert _recover(office).abandoned == 1
