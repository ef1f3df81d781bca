"""The floor and the cases. Each function runs in a process of its own (see ``bench.harness``).

The floor is PostgreSQL's own speed: ``COPY (SELECT * FROM t WHERE <the subject's rows>) TO STDOUT
(FORMAT csv)`` for every table of the ``portal_db`` store, read through psycopg and written to a
file, summed over the tables. Every case is reported as a ratio to it, measured in the same run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import Context, Figures, case, stopwatch

POLL = 0.005  # seconds between looks at the request's status (end to end)


def copy_floor(ctx: Context) -> Figures:
    """The subject's rows of every table as CSV by PostgreSQL alone: one COPY per table."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(ctx.store_url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = 0
    with stopwatch() as watch, psycopg.connect(dsn) as conn:
        for table, query in ctx.floor_queries:
            with (ctx.work_dir / f"{table}.csv").open("wb") as out, conn.cursor() as cursor:
                with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                    for chunk in copy:
                        out.write(chunk)
                rows += cursor.rowcount
    return Figures(watch.seconds, rows)


def _portal_store(ctx: Context) -> Any:
    os.environ["DSR_PORTAL_DB_URL"] = ctx.store_url
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    return load(DEFAULT_DATAMAP, instance_dir=ctx.work_dir, validate_store=validate_store).stores["portal_db"]


def _collect(ctx: Context, rows_only: bool) -> Figures:
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401  (a running worker has it loaded)

    from dsr.exports.csv_files import CsvDirectorySink
    from dsr.exports.disclosure import DisclosingSink
    from dsr.stores import ConnectorContext, Subject
    from dsr.stores.sql import SqlConnector

    store = _portal_store(ctx)
    subject = Subject.from_email(ctx.subject_email)
    inner: Any = CsvDirectorySink(ctx.work_dir / "out")
    if rows_only:
        inner = _RowsOnly(inner)
    with stopwatch() as watch:
        # As a worker's job does it: a fresh connector, the identities resolved, then the export.
        connector = SqlConnector(store, ConnectorContext(ctx.work_dir))
        subject = Subject({**subject.identities, **connector.resolve(subject)})
        result = connector.collect(subject, DisclosingSink(inner, store))
        connector.close()
    return Figures(watch.seconds, result.total, notes={"found": dict(result.found)})


class _RowsOnly:
    """A sink without ``accepts_raw_csv``/``open_csv``: the connector must take the row-by-row path."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def open_table(self, name: str, columns: Any) -> Any:
        return self.inner.open_table(name, columns)

    def add_file(self, table: str, name: str, content: Any) -> None:
        self.inner.add_file(table, name, content)


@case("collect_sql", "SqlConnector.collect through DisclosingSink(CsvDirectorySink): PostgreSQL's COPY path",
      target_ratio=2.0, target_rss_mb=300.0)
def collect_sql(ctx: Context) -> Figures:
    return _collect(ctx, rows_only=False)


@case("collect_rows_path", "the same, forced onto the row-by-row path (sink without accepts_raw_csv)")
def collect_rows_path(ctx: Context) -> Figures:
    return _collect(ctx, rows_only=True)


@case("access_end_to_end", "access request through the app: verified -> package ready, one `dsr worker` process")
def access_end_to_end(ctx: Context) -> Figures:
    """Submit and verify through the API (Flask test client), a separate ``dsr worker`` does the jobs.

    Timed: from the verify call until the request is completed (the ZIP is written and recorded),
    with the worker already running and idle, as in production. RSS: the worker's peak, its forked
    work horses included (reported by the worker process itself, see ``bench.worker``).
    """
    from rq import Worker
    from sqlalchemy import select

    from dsr.config import Settings
    from dsr.domain.accounts import create_api_token
    from dsr.models import Request, RequestStatus, Role
    from dsr.web.app import create_app

    env = {
        "DSR_ENV": "development", "DSR_INSTANCE_DIR": str(ctx.work_dir / "instance"),
        "DSR_DATABASE_URL": ctx.meta_url, "DSR_REDIS_URL": ctx.redis_url, "DSR_QUEUE": ctx.queue,
        "DSR_SECRET_KEY": "bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "DSR_STORAGE_DIR": str(ctx.work_dir / "storage"), "DSR_PORTAL_DB_URL": ctx.store_url,
        "DSR_WEB_LOG_DIR": str(ctx.log_dir / "web"), "DSR_API_LOG_DIR": str(ctx.log_dir / "api"),
        "DSR_MEDIA_DIR": str(ctx.media_dir), "DSR_DATAMAP": str(ctx.datamap),
        "DSR_JOB_RETRY_INTERVALS": "none", "DSR_EMBEDDED_WORKER": "0",
    }
    os.environ.update(env)
    app = create_app(Settings.from_env())
    context = app.extensions["dsr"]
    client = app.test_client()
    with context.runtime.sessions.begin() as session:
        _row, token = create_api_token(session, name="bench", role=Role.DPO, actor="bench")
    auth = {"Authorization": f"Bearer {token}"}

    log = (ctx.work_dir / "worker.log").open("wb")
    rss_file = ctx.work_dir / "worker-rss.json"
    level = os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING")  # INFO: RQ's per-job lines in worker.log
    worker = subprocess.Popen(  # noqa: S603  (`dsr worker`, reporting its peak RSS: see bench.worker)
        [sys.executable, "-m", "bench.worker", "--log-level", level, "worker"],
        env={**os.environ, **env, "BENCH_RSS_FILE": str(rss_file)}, cwd=ctx.project_dir, stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not Worker.all(connection=context.queue.connection, queue=context.queue):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dsr worker did not start (exit code {worker.poll()})")
            time.sleep(0.05)

        created = client.post("/api/v1/requests", json={"type": "access", "email": ctx.subject_email,
                                                        "locale": "de"})
        assert created.status_code == 202, created.get_json()
        request_id = uuid.UUID(created.get_json()["id"])
        started = time.perf_counter()
        verified = client.post(f"/api/v1/requests/{request_id}/verify", headers=auth)
        assert verified.status_code == 200, verified.get_json()
        deadline = time.monotonic() + ctx.timeout
        query = select(Request.status).where(Request.id == request_id)
        while True:
            with context.runtime.sessions() as session:
                status = session.execute(query).scalar_one()
            if status in (RequestStatus.COMPLETED.value, RequestStatus.FAILED.value):
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"request still {status} (worker exit code {worker.poll()})")
            time.sleep(POLL)
        seconds = time.perf_counter() - started

        detail = client.get(f"/api/v1/requests/{request_id}", headers=auth).get_json()
        if status != RequestStatus.COMPLETED.value:
            raise RuntimeError(f"request {status}: {[(t['store'], t['status'], t['error']) for t in detail['tasks']]}")
        artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()
        assert len(artifacts) == 1 and artifacts[0]["kind"] == "package", artifacts
        counts = {t["store"]: t["counts"].get("total", 0) for t in detail["tasks"]}
    except Exception as exc:
        _stop(worker)
        log.flush()
        tail = (ctx.work_dir / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{exc}\n--- end of the worker's log ---\n{tail}") from exc
    finally:
        _stop(worker)
        log.close()
        context.runtime.close()
    peak = json.loads(rss_file.read_text(encoding="utf-8"))
    return Figures(seconds, counts.get("portal_db", 0), rss_kb=max(peak["own_kb"], peak["children_kb"]),
                   notes={"stores": counts, "package_bytes": artifacts[0]["size"], "worker_rss_kb": peak})


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM: RQ finishes the job at hand, it has none), bounded by 30 s."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


def project_dir() -> Path:
    return Path(__file__).resolve().parent.parent
