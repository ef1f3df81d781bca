"""Scale-out: two separate worker processes on the real Redis serve one request's stores in parallel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rq import Worker
from rq.job import Job
from sqlalchemy import select

from dsr.demo import logs
from dsr.domain import work
from dsr.models import Task
from tests.conftest import SECRET
from tests.helpers import submit

ROOT = Path(__file__).resolve().parents[2]


def test_two_worker_processes_serve_one_requests_stores_in_parallel(backend, settings, app, client, auth):
    if not backend.real:
        pytest.skip("separate worker processes need the real PostgreSQL and Redis")
    # Logs big enough that each log store takes a while to search, so two workers' jobs overlap: every
    # line parsed (prefilter off), as the search of a subject known by an IPv6 address would.
    logs.build(settings.instance_dir / "logs", lines=120_000)
    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    for name in ("web_logs", "api_logs"):
        raw["stores"][name]["connection"]["prefilter"] = False
    datamap = settings.datamap_path.with_name("datamap-parse-every-line.yaml")
    datamap.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    env.update({
        "DSR_DATABASE_URL": backend.database_url, "DSR_REDIS_URL": backend.redis_url or "",
        "DSR_QUEUE": settings.queue_name, "DSR_PORTAL_DB_URL": backend.store_url, "DSR_SECRET_KEY": SECRET,
        "DSR_STORAGE_DIR": str(settings.storage_dir), "DSR_INSTANCE_DIR": str(settings.instance_dir),
        "DSR_MEDIA_DIR": str(backend.media), "DSR_ANALYTICS_DIR": str(backend.analytics),
        "DSR_DATAMAP": str(datamap), "DSR_JOB_RETRY_INTERVALS": "none",
    })
    workers = [subprocess.Popen([sys.executable, "-m", "dsr.cli", "--log-level", "WARNING", "worker"], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        # Both idle before the request arrives: a worker still preloading (a throw-away report, ~2-6 s)
        # when the other has taken every job would make this test about start-up, not scale-out.
        queue = app.extensions["dsr"].queue
        ready = time.monotonic() + 60
        while len(Worker.all(queue=queue)) < 2 and time.monotonic() < ready:
            assert all(p.poll() is None for p in workers), "a worker process exited"
            time.sleep(0.1)
        assert len(Worker.all(queue=queue)) == 2, "the two workers did not register within 60 s"
        created = submit(client)
        assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
            if detail["status"] in ("completed", "failed"):
                break
            time.sleep(0.2)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert detail["status"] == "completed", detail

    connection = app.extensions["dsr"].queue.connection
    ran_on = {t["store"]: Job.fetch(work.collect_id(t["id"], 1), connection=connection).worker_name
              for t in detail["tasks"]}
    assert len(set(ran_on.values())) == 2, ran_on  # both workers took store jobs of this one request

    # ... and at the same time: the two longest store jobs ran side by side.
    with app.extensions["dsr"].runtime.sessions() as session:
        tasks = list(session.execute(select(Task)).scalars())
    busiest = sorted(tasks, key=lambda t: t.finished_at - t.started_at, reverse=True)[:2]
    first, second = sorted(busiest, key=lambda t: t.started_at)
    assert second.started_at < first.finished_at, [(t.store, t.started_at, t.finished_at) for t in busiest]
