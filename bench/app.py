"""What the end-to-end and load cases share: the app's environment, the app in this process (Flask
test client, for submit and verify), and ``dsr worker`` / ``dsr web`` processes started beside it.

Everything runs as in production: metadata on PostgreSQL (the run's ``_meta`` database, migrated),
jobs on Redis (a queue of the run's own name), every job done by separate ``dsr worker`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.data import analytics_folder
from bench.harness import Context

POLL = 0.005  # seconds between looks at one request's status
START_WAIT = 60.0  # seconds a process may take to start
STOP_WAIT = 30.0


def environment(ctx: Context, **more: str) -> dict[str, str]:
    """The ``DSR_*`` settings of the app and its workers for this run."""
    return {
        "DSR_ENV": "development", "DSR_INSTANCE_DIR": str(ctx.work_dir / "instance"),
        "DSR_DATABASE_URL": ctx.meta_url, "DSR_REDIS_URL": ctx.redis_url, "DSR_QUEUE": ctx.queue,
        "DSR_SECRET_KEY": "bench-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "DSR_STORAGE_DIR": str(ctx.work_dir / "storage"), "DSR_PORTAL_DB_URL": ctx.store_url,
        "DSR_WEB_LOG_DIR": str(ctx.log_dir / "web"), "DSR_API_LOG_DIR": str(ctx.log_dir / "api"),
        "DSR_ANALYTICS_DIR": str(analytics_folder(ctx.media_dir)),
        "DSR_MEDIA_DIR": str(ctx.media_dir), "DSR_DATAMAP": str(ctx.datamap),
        "DSR_JOB_RETRY_INTERVALS": "none", "DSR_EMBEDDED_WORKER": "0", **more,
    }


class App:
    """``create_app`` in this process, a DPO token, and the API through the Flask test client."""

    def __init__(self, ctx: Context) -> None:
        from dsr.config import Settings
        from dsr.domain.accounts import create_api_token
        from dsr.models import Role
        from dsr.web.app import create_app

        self.env = environment(ctx)
        os.environ.update(self.env)
        self.app = create_app(Settings.from_env())
        self.context = self.app.extensions["dsr"]
        self.client = self.app.test_client()
        with self.context.runtime.sessions.begin() as session:
            _row, token = create_api_token(session, name="bench", role=Role.DPO, actor="bench")
        self.auth = {"Authorization": f"Bearer {token}"}

    @property
    def connection(self) -> Any:
        return self.context.queue.connection

    def submit(self, email: str) -> uuid.UUID:
        created = self.client.post("/api/v1/requests", json={"type": "access", "email": email, "locale": "de"})
        if created.status_code != 202:
            raise RuntimeError(f"submit {email}: {created.status_code} {created.get_json()}")
        return uuid.UUID(created.get_json()["id"])

    def verify(self, request_id: uuid.UUID) -> None:
        verified = self.client.post(f"/api/v1/requests/{request_id}/verify", headers=self.auth)
        if verified.status_code != 200:
            raise RuntimeError(f"verify {request_id}: {verified.status_code} {verified.get_json()}")

    def status(self, request_id: uuid.UUID) -> str:
        from sqlalchemy import select

        from dsr.models import Request

        with self.context.runtime.sessions() as session:
            return str(session.execute(select(Request.status).where(Request.id == request_id)).scalar_one())

    def ended(self, ids: Iterable[uuid.UUID]) -> dict[str, int]:
        """How many of ``ids`` are completed and failed (one query)."""
        from sqlalchemy import func, select

        from dsr.models import Request, RequestStatus

        ended = (RequestStatus.COMPLETED.value, RequestStatus.FAILED.value)
        query = (select(Request.status, func.count()).where(Request.id.in_(list(ids)), Request.status.in_(ended))
                 .group_by(Request.status))
        with self.context.runtime.sessions() as session:
            return {str(status): int(n) for status, n in session.execute(query)}

    def detail(self, request_id: uuid.UUID) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/requests/{request_id}", headers=self.auth).get_json())

    def artifacts(self, request_id: uuid.UUID) -> list[dict[str, Any]]:
        return list(self.client.get(f"/api/v1/requests/{request_id}/artifacts", headers=self.auth).get_json())

    def close(self) -> None:
        self.context.runtime.close()


class Processes:
    """``dsr <command>`` processes (through ``bench.worker``, which reports their peak RSS), each with
    its own log file in ``folder``. ``gated``: they wait after their imports until ``open_gate``."""

    def __init__(self, ctx: Context, env: dict[str, str], command: list[str], count: int, *,
                 gated: bool = False, name: str = "worker") -> None:
        self.folder = ctx.work_dir / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.gate = self.folder / "gate" if gated else None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = []
        for i in range(count):
            log = (self.folder / f"{name}-{i}.log").open("wb")
            self.logs.append(log)
            extra = {"BENCH_RSS_FILE": str(self.folder / f"{name}-{i}.rss.json")}
            if self.gate is not None:
                extra["BENCH_GATE"] = str(self.gate)
            self.processes.append(subprocess.Popen(  # noqa: S603  (`dsr ...` through bench.worker)
                [sys.executable, "-m", "bench.worker", *command],
                env={**os.environ, **env, **extra}, cwd=ctx.project_dir, stdout=log, stderr=subprocess.STDOUT,
            ))

    def check(self) -> None:
        for p in self.processes:
            if p.poll() is not None:
                raise RuntimeError(f"a process stopped (exit code {p.returncode})\n{self.tail()}")

    def wait_ready(self) -> None:
        """Gated: until every process has done its imports and waits at the gate."""
        assert self.gate is not None
        deadline = time.monotonic() + START_WAIT
        while len(list(self.folder.glob("gate.ready.*"))) < len(self.processes):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the processes did not get ready within {START_WAIT:.0f} s\n{self.tail()}")
            time.sleep(0.02)

    def open_gate(self) -> None:
        assert self.gate is not None
        self.gate.touch()

    def wait_workers(self, connection: Any, queue: Any, count: int | None = None) -> None:
        """Until ``count`` (default: every) ``dsr worker`` has registered with RQ on ``queue``."""
        from rq import Worker

        deadline = time.monotonic() + START_WAIT
        while len(Worker.all(connection=connection, queue=queue)) < (count or len(self.processes)):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dsr workers did not start within {START_WAIT:.0f} s\n{self.tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM (RQ: warm shutdown, gunicorn: graceful), bounded; then SIGKILL."""
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for p in self.processes:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()

    def peak_rss_kb(self) -> int:
        """The highest peak of the processes and their children (0 when one could not say)."""
        peaks = [0]
        for file in self.folder.glob("*.rss.json"):
            peak = json.loads(file.read_text(encoding="utf-8"))
            peaks.append(max(peak["own_kb"], peak["children_kb"]))
        return max(peaks)

    def tail(self, chars: int = 3000) -> str:
        for log in self.logs:
            log.flush()
        text = "\n".join(f"--- {f.name} ---\n" + f.read_text(errors="replace")[-chars:]
                         for f in sorted(self.folder.glob("*.log")))
        return text[-2 * chars:]


def project_dir() -> Path:
    return Path(__file__).resolve().parent.parent
