"""Fan-out over several stores: a store that dies mid-request is retried, then failed; the other
stores' results are kept; the DPO re-runs that store alone once it is back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from dsr.config import DEFAULT_DATAMAP
from dsr.db import make_engine
from dsr.demo import portal
from tests.helpers import dpo_auth, read_zip, submit, without_processor


@pytest.fixture
def two_store_app(make_app, tmp_path, monkeypatch):
    """The default map plus a second SQL store (an archive copy of the portal DB) on a SQLite file."""
    archive = tmp_path / "archive.sqlite"
    engine = make_engine(f"sqlite:///{archive}")
    portal.build(engine, portal.DemoSize(subjects=3, rows=6), seed=7)
    engine.dispose()
    raw = without_processor(yaml.safe_load(DEFAULT_DATAMAP.read_text()))
    archive_store = dict(raw["stores"]["portal_db"])
    archive_store["connection"] = {"url": "${DSR_ARCHIVE_URL}"}
    archive_store["tables"] = {k: v for k, v in raw["stores"]["portal_db"]["tables"].items()
                               if k in ("accounts", "invoices", "invoice_lines")}
    raw["stores"]["archive_db"] = archive_store
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    monkeypatch.setenv("DSR_ARCHIVE_URL", f"sqlite:///{archive}")
    app = make_app(datamap_path=path, retry_intervals=(0, 0))
    app.extensions["archive"] = archive
    return app


def _worker(app):
    from dsr.queue import DsrSimpleWorker

    context = app.extensions["dsr"]
    return DsrSimpleWorker([context.queue], connection=context.queue.connection, runtime=context.runtime)


def test_a_store_that_dies_mid_request_is_retried_failed_and_rerun(two_store_app, tmp_path):
    app = two_store_app
    client = app.test_client()
    auth = dpo_auth(app)
    archive: Path = app.extensions["archive"]

    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    _worker(app).work(burst=True, max_jobs=1, logging_level="ERROR")  # plan: one task per store
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert sorted(t["store"] for t in detail["tasks"]) == ["analytics", "api_logs", "archive_db", "media", "portal_db",
                                                               "web_logs"]

    # The archive dies after planning, before its task runs.
    hidden = tmp_path / "archive.moved"
    shutil.move(archive, hidden)
    _worker(app).work(burst=True, logging_level="CRITICAL")

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    tasks = {t["store"]: t for t in detail["tasks"]}
    assert detail["status"] == "failed"
    assert tasks["portal_db"]["status"] == "done" and tasks["portal_db"]["counts"]["total"] > 0
    assert tasks["archive_db"]["status"] == "failed"
    assert tasks["archive_db"]["attempts"] == 3  # the first run and two retries
    assert "StoreUnavailable" in tasks["archive_db"]["error"]
    actions = [e["action"] for e in detail["timeline"]]
    assert actions.count("task.retrying") == 2 and actions.count("task.failed") == 1
    failed = next(e for e in detail["timeline"] if e["action"] == "request.failed")
    assert failed["data"] == {"stores": {"archive_db": "failed"},
                              "kept": ["analytics", "api_logs", "media", "portal_db", "web_logs"]}
    assert client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json() == []

    # A rerun of a task that did not fail is refused; so is one of an unknown task.
    rerun = f"/api/v1/requests/{created['id']}/tasks/{tasks['portal_db']['id']}/rerun"
    assert client.post(rerun, headers=auth).status_code == 409
    unknown = f"/api/v1/requests/{created['id']}/tasks/00000000-0000-4000-8000-000000000000/rerun"
    assert client.post(unknown, headers=auth).status_code == 404
    assert client.post(rerun.replace(tasks["portal_db"]["id"], tasks["archive_db"]["id"])).status_code == 401

    # The store is back; the DPO re-runs it alone.
    shutil.move(hidden, archive)
    response = client.post(rerun.replace(tasks["portal_db"]["id"], tasks["archive_db"]["id"]), headers=auth)
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    _worker(app).work(burst=True, logging_level="ERROR")

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed"
    tasks = {t["store"]: t for t in detail["tasks"]}
    assert tasks["archive_db"]["status"] == "done" and tasks["portal_db"]["attempts"] == 1
    assert [e["action"] for e in detail["timeline"]][-4:] == [
        "task.rerun", "task.completed", "artifact.created", "request.completed"]
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    tables = read_zip(client.get(url.replace("http://localhost", "")).data)
    assert {name.split("/")[0] for name in tables} == {"analytics", "api_logs", "archive_db", "media", "portal_db",
                                                            "web_logs"}
    assert len(tables["archive_db/invoices.csv"]) == 2  # Max's two invoices in the archive copy
