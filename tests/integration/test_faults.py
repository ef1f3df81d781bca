"""Faults injected into real processes: nothing stuck, nothing lost, nothing done twice.

On the real services: `dsr worker` and `dsr sweeper` processes on PostgreSQL and a Redis of the
test's own (it is stopped and restarted here, so it cannot be the shared one). On the embedded
default: `dsr web`, which is the whole system in one process, killed and started again. Each case
ends with the request completed exactly once (one package, one ``request.completed``, no task left
running, the audit chain intact) within ``BOUND`` seconds of the fault, and prints the time it took
(`pytest -s`; the figures are in docs/operations.md).

The processes run with a short lease and sweep (``FAST``) so the suite stays quick; the production
defaults (30 s lease, 15 s sweep) are what docs/operations.md reckons with.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import yaml
from rq import Worker
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from dsr.db import make_engine
from dsr.demo import analytics, blobs, logs, portal
from dsr.domain.accounts import create_api_token
from dsr.domain.audit import verify_chain
from dsr.models import Artifact, AuditEvent, Request, Role, Task, TaskStatus
from tests.conftest import SECRET
from tests.helpers import submit, tell_by_hand

pytestmark = pytest.mark.xdist_group("faults")  # one xdist worker runs these in turn: each starts processes

ROOT = Path(__file__).resolve().parents[2]
# DSR_TEST_FAULTS_TIMING=production runs the cases with the production defaults (30 s lease, 15 s sweep,
# retries after 10, 60, 300 s), for the figures in docs/operations.md; the suite runs them fast.
PRODUCTION = os.environ.get("DSR_TEST_FAULTS_TIMING") == "production"
BOUND = 150.0 if PRODUCTION else 60.0  # seconds from a fault to the completed request, in every case
FAST = {} if PRODUCTION else {"DSR_TASK_LEASE_SECONDS": "4", "DSR_SWEEP_SECONDS": "1", "DSR_JOB_GRACE_SECONDS": "2",
                              "DSR_WORKER_MAINTENANCE_SECONDS": "5"}


def _retries(fast: str) -> dict[str, str]:
    return {} if PRODUCTION else {"DSR_JOB_RETRY_INTERVALS": fast}
SUBJECT_ROWS = 300_000  # the demo subject's usage records: a collect and a package take long enough to hit

T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T:
    """Poll ``probe`` until it returns something; a probe that raises (the database is away) is asked again."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as exc:  # a fault is under way: ask again
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f} s: {what}" + (f" (last error: {last})" if last else ""))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Processes:
    """The processes of a test; each logs to a file that a failing test shows."""

    env: dict[str, str]
    folder: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "dsr.cli", "--log-level", "INFO", *args], env=self.env,
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started: a worker with its scheduler and work horse."""
        process = self.running.pop(name)
        for pid in _descendants(process.pid):
            _kill(pid)
        _kill(process.pid)
        process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.running):
            process = self.running[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill(name)
        for name in list(self.running):  # work horses of a worker stopped the hard way
            for pid in _descendants(self.running[name].pid):
                _kill(pid)
        self.running.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.folder.glob("*.log"))


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _horse(worker_pid: int) -> int | None:
    """The work horse of an RQ worker: the child that made itself a process group of its own."""
    for pid in _descendants(worker_pid):
        stat = _stat(pid)
        if stat is not None and stat[0] == worker_pid and stat[1] == pid:
            return pid
    return None


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, without persistence (as in production
    without AOF: a restart loses every queued job)."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = _free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until("the test's Redis answers", lambda: redis.Redis.from_url(self.url).ping(), 10)

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@dataclass
class BigStore:
    url: str
    media: Path
    analytics: Path


def _big_store(url: str, folder: Path) -> BigStore:
    """The demo store with one big subject (the demo subject, Max), with its media and analytics."""
    engine = make_engine(url)
    portal.build(engine, portal.DemoSize(subjects=12, rows=30, subject_rows=SUBJECT_ROWS))
    store = BigStore(url, folder / "media", folder / "analytics")
    blobs.build(engine, store.media)
    analytics.build(store.analytics, analytics.consent_windows(engine))
    engine.dispose()
    return store


@pytest.fixture(scope="module")
def big_store(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigStore]:
    if not backend.real:  # the embedded case makes its logs big instead (SQLite takes long to fill)
        yield BigStore(backend.store_url, backend.media, backend.analytics)
        return
    folder = tmp_path_factory.mktemp("faults-store")
    base = make_url(backend.store_url)
    name = f"{base.database}_faults"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _big_store(base.set(database=name).render_as_string(False), folder)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _environment(backend: Any, settings: Any, store: BigStore, redis_url: str | None, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    env.update({
        "DSR_DATABASE_URL": backend.database_url, "DSR_QUEUE": settings.queue_name,
        "DSR_PORTAL_DB_URL": store.url, "DSR_SECRET_KEY": SECRET, "DSR_STORAGE_DIR": str(settings.storage_dir),
        "DSR_INSTANCE_DIR": str(settings.instance_dir), "DSR_MEDIA_DIR": str(store.media),
        "DSR_ANALYTICS_DIR": str(store.analytics), "DSR_DATAMAP": str(settings.datamap_path), **FAST, **more,
    })
    if redis_url:
        env["DSR_REDIS_URL"] = redis_url
    return env


class Office:
    """What the test sees of the system: the metadata database, read directly."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)

    def status(self, request_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(Request.status).where(Request.id == uuid.UUID(request_id)))

    def ended(self, request_id: str) -> str | None:
        status = self.status(request_id)
        return status if status in ("completed", "failed") else None

    def running_task(self, request_id: str, store: str | None = None) -> Any:
        with self.engine.connect() as conn:
            query = select(Task).where(Task.request_id == uuid.UUID(request_id),
                                       Task.status == TaskStatus.RUNNING.value, Task.runner.is_not(None))
            if store:
                query = query.where(Task.store == store)
            return conn.execute(query).first()

    def task_status(self, request_id: str, store: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(Task.status).where(Task.request_id == uuid.UUID(request_id),
                                                         Task.store == store))

    def all_tasks_ended(self, request_id: str) -> bool:
        with self.engine.connect() as conn:
            open_tasks = conn.scalar(select(func.count()).select_from(Task).where(
                Task.request_id == uuid.UUID(request_id), Task.status.not_in(("done", "failed"))))
            total = conn.scalar(select(func.count()).select_from(Task).where(Task.request_id == uuid.UUID(request_id)))
        return bool(total) and not open_tasks

    def events(self, request_id: str, kind: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.request_id == uuid.UUID(request_id), AuditEvent.action == kind)) or 0)

    def assert_completed_once(self, request_id: str, storage: Path) -> None:
        rid = uuid.UUID(request_id)
        with self.engine.connect() as conn:
            status = conn.scalar(select(Request.status).where(Request.id == rid))
            packages = conn.scalar(select(func.count()).select_from(Artifact).where(
                Artifact.request_id == rid, Artifact.kind == "package"))
            left = conn.execute(select(Task.store, Task.status).where(
                Task.request_id == rid, Task.status != TaskStatus.DONE.value)).all()
        assert status == "completed", (status, left)
        assert packages == 1
        assert self.events(request_id, "request.completed") == 1
        assert not left, left
        assert list((storage / "packages" / request_id).glob("*.zip.sealed")) and \
            len(list((storage / "packages" / request_id).iterdir())) == 1  # no half-written second package
        # No copy of the subject's data stays behind. The working folder goes right after the commit that
        # completes the request (so a failed commit keeps it), i.e. a moment after the status is visible.
        _until("the working folder removed", lambda: not (storage / "work" / request_id).exists(), 15, 0.05)
        from sqlalchemy.orm import Session
        with Session(self.engine) as session:
            report = verify_chain(session)
        assert report.ok, report

    def close(self) -> None:
        self.engine.dispose()


def _figure(case: str, seconds: float) -> None:
    print(f"\nFAULT {case}: completed {seconds:.1f} s after the fault")


# --- the real services: dsr worker + dsr sweeper on PostgreSQL and a Redis of the test's own -----------------


@pytest.fixture
def private_redis(backend, tmp_path):  # type: ignore[no-untyped-def]
    if not backend.real:
        pytest.skip("worker processes need the real PostgreSQL and Redis (the embedded default: see below)")
    private = PrivateRedis(tmp_path)
    yield private
    with contextlib.suppress(Exception):  # stopped by the test already
        private.stop()


@pytest.fixture
def cluster(backend, settings, private_redis, make_app, big_store, tmp_path):  # type: ignore[no-untyped-def]
    # private_redis before make_app: the app's teardown purges its queue while that Redis still runs.
    private = private_redis
    folder = tmp_path / "logs"
    folder.mkdir()
    procs = Processes({}, folder)
    app = make_app(redis_url=private.url)
    office = Office(backend.database_url)

    def configure(**more: str) -> Processes:
        procs.env = _environment(backend, settings, big_store, private.url, **more)
        return procs

    yield app, configure, private, office
    procs.stop_all()
    office.close()
    if private.process is None or private.process.poll() is not None:
        private.start()  # for the app's teardown
    if os.environ.get("DSR_TEST_SHOW_LOGS"):
        print(procs.logs())


def _wait_workers(app: Any, count: int) -> None:
    queue = app.extensions["dsr"].queue
    _until(f"{count} worker(s) registered", lambda: len(Worker.all(queue=queue)) >= count, 60, 0.1)


def _start(app: Any, auth: dict[str, str]) -> str:
    client = app.test_client()
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    return str(created["id"])


def _token(app: Any) -> dict[str, str]:
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, token = create_api_token(session, name="faults", role=Role.DPO)
    return {"Authorization": f"Bearer {token}"}


def test_a_work_horse_killed_during_a_collect_is_taken_over_by_its_retry(cluster, settings):
    app, configure, _redis, office = cluster
    procs = configure(**_retries("1"))
    procs.start("worker", "worker")
    procs.start("sweeper", "sweeper")
    _wait_workers(app, 1)
    request_id = _start(app, _token(app))
    task = _until("the SQL store's collect runs", lambda: office.running_task(request_id, "portal_db"), 60)
    os.kill(int(task.runner.rsplit(" ", 1)[1]), signal.SIGKILL)
    killed = time.monotonic()
    _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
    _figure("work horse killed during a collect (RQ's retry takes the task over)", time.monotonic() - killed)
    office.assert_completed_once(request_id, settings.storage_dir)
    assert office.events(request_id, "task.abandoned") == 1


def test_a_work_horse_killed_while_it_assembles_is_assembled_again(cluster, settings):
    app, configure, _redis, office = cluster
    procs = configure(**_retries("1"))
    worker = procs.start("worker", "worker")
    procs.start("sweeper", "sweeper")
    _wait_workers(app, 1)
    request_id = _start(app, _token(app))
    queue = app.extensions["dsr"].queue

    def assembling() -> int | None:
        if not office.all_tasks_ended(request_id):
            return None
        if not any(j.startswith("dsr-assemble-") for j in queue.started_job_registry.get_job_ids()):
            return None
        return _horse(worker.pid)

    horse = _until("the package is being built", assembling, 90, 0.01)
    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()
    assert office.status(request_id) == "in_progress", "the package was finished before the kill"
    _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
    _figure("work horse killed during assembly", time.monotonic() - killed)
    office.assert_completed_once(request_id, settings.storage_dir)


def test_a_whole_worker_killed_is_replaced_and_the_watchdog_hands_its_task_on(cluster, settings):
    app, configure, _redis, office = cluster
    procs = configure(DSR_JOB_RETRY_INTERVALS="none")  # no retry of the queue's: the watchdog alone recovers
    procs.start("worker", "worker")
    procs.start("sweeper", "sweeper")
    _wait_workers(app, 1)
    request_id = _start(app, _token(app))
    _until("the SQL store's collect runs", lambda: office.running_task(request_id, "portal_db"), 60)
    procs.kill("worker")  # parent, scheduler and work horse
    killed = time.monotonic()
    procs.start("worker-2", "worker")
    _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
    _figure("whole worker killed, another started", time.monotonic() - killed)
    office.assert_completed_once(request_id, settings.storage_dir)
    assert office.events(request_id, "task.abandoned") >= 1


def test_the_database_away_for_seconds_during_a_collect(cluster, settings, backend):
    app, configure, _redis, office = cluster
    procs = configure(**_retries("1,2,4"))
    procs.start("worker", "worker")
    procs.start("sweeper", "sweeper")
    _wait_workers(app, 1)
    request_id = _start(app, _token(app))
    # Cut while the SQL store's collect runs; on a fast machine it may be over before the poll sees it
    # (about a second): then the cut falls on the other collects or the assembly, a fault all the same.
    _until("the SQL store's collect runs (or has run)", lambda: office.running_task(request_id, "portal_db")
           or office.task_status(request_id, "portal_db") in ("done", "failed"), 60)
    databases = [make_url(backend.database_url).database, make_url(procs.env["DSR_PORTAL_DB_URL"]).database]
    admin = create_engine(make_url(backend.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # as a restart looks to a client: connections cut, new ones refused
            for name in databases:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"), {"names": databases})
            away = time.monotonic()
            time.sleep(3)
    finally:
        with admin.connect() as conn:
            for name in databases:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
    _figure("database away for 3 s during a collect", time.monotonic() - away)
    office.assert_completed_once(request_id, settings.storage_dir)


def test_redis_restarted_empty_while_requests_run_and_arrive(cluster, settings):
    app, configure, private, office = cluster
    procs = configure(**_retries("1"))
    procs.start("worker", "worker")
    procs.start("sweeper", "sweeper")
    _wait_workers(app, 1)
    auth = _token(app)
    before = [_start(app, auth) for _ in range(3)]
    _until("a collect runs", lambda: any(office.running_task(r) for r in before), 60)
    private.stop()  # every queued, scheduled and running job's record is gone with it
    stopped = time.monotonic()
    during = [_start(app, auth) for _ in range(2)]  # accepted: the outbox keeps their jobs
    time.sleep(2)
    private.start()

    def ended(request_id: str) -> str | None:
        for name, process in list(procs.running.items()):  # a supervisor restarts what exited (systemd, Kubernetes)
            if process.poll() is not None:
                procs.running.pop(name)
                procs.start(f"{name}-again", name.split("-")[0])
        return office.ended(request_id)

    for request_id in before + during:
        _until(f"request {request_id} ends", lambda r=request_id: ended(r), BOUND, 0.1)  # type: ignore[misc]
    _figure("Redis restarted empty, 5 requests", time.monotonic() - stopped)
    for request_id in before + during:
        office.assert_completed_once(request_id, settings.storage_dir)


def test_a_submission_while_the_database_is_away_gets_503_then_202(cluster, backend):
    app, _configure, private, _office = cluster
    client = app.test_client()
    name = make_url(backend.database_url).database
    admin = create_engine(make_url(backend.database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        response = client.post("/api/v1/requests", json={"type": "access", "email": "a@example.com", "locale": "en"})
        ready = client.get("/readyz")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"].isdigit()
    assert "database" in response.get_json()["message"]
    assert ready.status_code == 503 and "database" in ready.get_json()["problems"]
    assert client.post("/api/v1/requests", json={"type": "access", "email": "a@example.com",
                                                 "locale": "en"}).status_code == 202
    # Redis away: the request is taken all the same; its job waits in the outbox.
    private.stop()
    try:
        assert submit(app.test_client())["status"] == "received"
    finally:
        private.start()


def test_a_work_horse_killed_during_an_erasure_leaves_the_store_whole_and_the_retry_erases(
        cluster, settings, backend, tmp_path):
    """The store's erasure is one transaction: killed in the middle, the database rolls it back, and the
    job's retry erases everything once (the subject's contract has ended, so his 200,000 usage records go)."""
    app, configure, _redis, office = cluster
    base = make_url(backend.store_url)
    name = f"{base.database}_erase_faults"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(False)
        engine = make_engine(url)
        portal.build(engine, portal.DemoSize(subjects=12, rows=30, subject_rows=600_000))
        store = BigStore(url, tmp_path / "erase-media", tmp_path / "erase-analytics")
        blobs.build(engine, store.media)
        analytics.build(store.analytics, analytics.consent_windows(engine))
        with engine.begin() as conn:
            conn.execute(text("UPDATE accounts SET status = 'closed' WHERE id = 1"))
            usage = dict(conn.execute(text("SELECT account_id, count(*) FROM api_usage GROUP BY account_id")).all())
        procs = configure(**_retries("1"), DSR_ERASURE_AUTO_APPROVE="1", DSR_ERASURE_BOUND="0")
        procs.env.update({"DSR_PORTAL_DB_URL": url, "DSR_MEDIA_DIR": str(store.media),
                          "DSR_ANALYTICS_DIR": str(store.analytics)})
        procs.start("worker", "worker")
        procs.start("sweeper", "sweeper")
        _wait_workers(app, 1)
        client, auth = app.test_client(), _token(app)
        created = submit(client, type="erasure")
        request_id = str(created["id"])
        assert client.post(f"/api/v1/requests/{request_id}/verify", headers=auth).status_code == 200
        task = _until("the SQL store's erasure runs", lambda: office.running_task(request_id, "portal_db"), 90, 0.005)
        os.kill(int(task.runner.rsplit(" ", 1)[1]), signal.SIGKILL)
        killed = time.monotonic()
        # The tests' map tells the recipients by hand (Art. 19): once the erasure is done, the office does.
        _until("the notices wait for the office", lambda: _notices_waiting(office, request_id), BOUND, 0.1)
        assert tell_by_hand(app, client, auth, request_id, run=False)
        _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
        _figure("work horse killed during an erasure", time.monotonic() - killed)
        assert office.status(request_id) == "completed"
        assert office.events(request_id, "task.abandoned") == 1
        assert office.events(request_id, "request.completed") == 1
        with office.engine.connect() as conn:
            kinds = conn.execute(select(Artifact.kind).where(Artifact.request_id == uuid.UUID(request_id))).scalars()
            assert list(kinds) == ["confirmation"]
        with engine.connect() as conn:
            after = dict(conn.execute(text("SELECT account_id, count(*) FROM api_usage GROUP BY account_id")).all())
        assert 1 not in after and usage[1] > 100_000
        assert after == {k: v for k, v in usage.items() if k != 1}
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _notices_waiting(office: Office, request_id: str) -> bool:
    """Every store's erasure has ended and every Art. 19 notice waits for a person."""
    with office.engine.connect() as conn:
        tasks = conn.execute(select(Task.action, Task.status).where(Task.request_id == uuid.UUID(request_id))).all()
    notices = [status for action, status in tasks if action == "notify"]
    ended = all(status in ("done", "failed") for action, status in tasks if action != "notify")
    return bool(notices) and ended and all(status == "waiting" for status in notices)


# --- the embedded default: one `dsr web` process, killed and started again ------------------------------------


def _http(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else b"" if token else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http://127.0.0.1 only
        return json.loads(response.read() or b"{}")


def test_the_embedded_process_killed_mid_collect_finishes_the_request_after_a_restart(backend, settings, big_store,
                                                                                      tmp_path):
    if backend.real:
        pytest.skip("the one-process system runs on SQLite and an in-process queue")
    # Big logs read line by line, so the log stores are still at work when the process dies.
    logs.build(settings.instance_dir / "logs", lines=60_000)
    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    for name in ("web_logs", "api_logs"):
        raw["stores"][name]["connection"]["prefilter"] = False
    datamap = tmp_path / "datamap.yaml"
    datamap.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    port = _free_port()
    folder = tmp_path / "logs-of-processes"
    folder.mkdir()
    procs = Processes(_environment(backend, settings, big_store, None, DSR_DATAMAP=str(datamap),
                                   DSR_JOB_RETRY_INTERVALS="none"), folder)
    office = Office(backend.database_url)
    with office.engine.begin() as conn:
        from sqlalchemy.orm import Session
        with Session(bind=conn) as session:
            _row, token = create_api_token(session, name="faults", role=Role.DPO)
            session.flush()
    base = f"http://127.0.0.1:{port}"
    try:
        procs.start("web", "web", "--port", str(port))
        _until("dsr web answers", lambda: _http(f"{base}/healthz"), 30, 0.1)
        created = _http(f"{base}/api/v1/requests", {"type": "access", "email": "max.mustermann@example.com",
                                                     "locale": "de"})
        request_id = created["id"]
        _http(f"{base}/api/v1/requests/{request_id}/verify", token=token)
        _until("a collect runs", lambda: office.running_task(request_id), 60, 0.01)
        procs.kill("web")  # the in-process queue dies with it: every job of the request is lost
        killed = time.monotonic()
        procs.start("web-again", "web", "--port", str(port))
        _until("the request ends", lambda: office.ended(request_id), BOUND, 0.1)
        _figure("embedded process killed during a collect, started again", time.monotonic() - killed)
        office.assert_completed_once(request_id, settings.storage_dir)
        assert office.events(request_id, "task.abandoned") >= 1
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()
        office.close()


def test_a_submission_while_the_sqlite_file_is_unreachable_gets_503_then_202(backend, make_app):
    if backend.real:
        pytest.skip("the PostgreSQL case is above")
    app = make_app()
    client = app.test_client()
    database = Path(make_url(backend.database_url).database or "")
    app.extensions["dsr"].runtime.engine.dispose()  # closed: the file is opened anew for the next request
    away = list(database.parent.glob(database.name + "*"))
    for path in away:
        path.rename(path.with_name(path.name + ".away"))
    database.mkdir()  # where the file was, something that cannot be opened as one (a volume not mounted)
    try:
        response = client.post("/api/v1/requests", json={"type": "access", "email": "a@example.com", "locale": "en"})
    finally:
        database.rmdir()
        for path in away:
            path.with_name(path.name + ".away").rename(path)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"].isdigit()
    assert client.post("/api/v1/requests", json={"type": "access", "email": "a@example.com",
                                                 "locale": "en"}).status_code == 202
