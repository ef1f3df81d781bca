"""The walking skeleton end to end: submit -> verify -> worker collects -> ZIP -> download."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select, text

from dsr.db import make_engine
from dsr.demo import portal
from dsr.domain.audit import verify_chain
from tests.helpers import MAX, read_zip, submit


def _store_rows(store_url: str, email: str) -> dict[str, set[str]]:
    """Ids of the subject's rows per table, read straight from the store (independent of the connector)."""
    engine = make_engine(store_url)
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        account = conn.execute(select(portal.accounts.c.id).where(portal.accounts.c.email == email)).scalar_one()
        for table in portal.metadata.sorted_tables:
            if table.name == "accounts":
                ids = {account}
            elif table.name == "invoice_lines":
                ids = set(conn.execute(text(
                    "SELECT l.id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.account_id = :a"
                ), {"a": account}).scalars())
            elif table.name == "employees":  # the staff the subject's internal records name
                ids = set(conn.execute(text(
                    "SELECT author_id FROM agent_notes WHERE account_id = :a UNION SELECT set_by FROM fraud_flags"
                    " WHERE account_id = :a AND set_by IS NOT NULL"
                    " UNION SELECT employee_id FROM access_log WHERE account_id = :a"), {"a": account}).scalars())
            else:
                ids = set(conn.execute(select(table.c.id).where(table.c.account_id == account)).scalars())
            out[table.name] = {str(i) for i in ids}
    engine.dispose()
    return out


def _log_lines(folder: Path, email: str | None, account: str) -> int:
    """The subject's lines in a demo log folder, counted without the connector."""
    count = 0
    for file in folder.iterdir():
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                user = (record.get("user") or "").lower()
                count += (email is not None and user == email) or record.get("account") == account
    return count


def _analytics_events(folder: Path, account: str) -> list[tuple[str, str, str | None]]:
    """(time, visitor, account) of the subject's analytics events, found without the connector: theirs
    after a login, and those before one from a browser no other customer logged in on."""
    events = []
    for file in sorted(folder.iterdir()):
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", encoding="utf-8") as lines:
            events += [json.loads(line) for line in lines]
    accounts: dict[str, set[str]] = {}
    for e in events:
        if e["account"]:
            accounts.setdefault(e["visitor_id"], set()).add(e["account"])
    return sorted((e["time"], e["visitor_id"], e["account"]) for e in events
                  if e["account"] == account or (not e["account"] and accounts.get(e["visitor_id"]) == {account}))


def test_access_request_produces_a_zip_with_only_the_subjects_rows(client, auth, run_jobs, backend, app,
                                                                     settings):
    created = submit(client, email="Max.Mustermann@Example.com")
    assert created["status"] == "received"
    assert created["reference"].startswith("DSR-")

    verified = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    assert verified.status_code == 200 and verified.get_json()["status"] == "verified"
    run_jobs()

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    assert {t["store"]: t["status"] for t in detail["tasks"]} == {
        "portal_db": "done", "web_logs": "done", "api_logs": "done", "analytics": "done", "media": "done"}
    actions = [e["action"] for e in detail["timeline"]]
    assert actions == ["request.received", "identity.verified", "request.planned", *["task.completed"] * 5,
                       "artifact.created", "request.completed"]

    artifacts = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert len(artifacts) == 1 and artifacts[0]["kind"] == "package"
    download = client.get(artifacts[0]["download_url"].replace("http://localhost", ""))
    assert download.status_code == 200
    data = download.data
    assert hashlib.sha256(data).hexdigest() == artifacts[0]["sha256"]
    assert len(data) == artifacts[0]["size"]

    tables = read_zip(data)
    expected = _store_rows(backend.store_url, MAX)
    assert set(tables) == {f"portal_db/{name}.csv" for name in expected} | {
        "web_logs/requests.csv", "api_logs/calls.csv", "analytics/events.csv", "media/voicemails.csv",
        "media/recordings.csv", "media/attachments.csv"}
    voicemails = tables["media/voicemails.csv"]
    assert len(voicemails) == 2 and all(r["status"] == "exported" for r in voicemails)
    logs = settings.instance_dir / "logs"
    # Web logs match by e-mail (any case) or customer number; API logs only by customer number, which
    # the portal database resolved from the e-mail.
    assert len(tables["web_logs/requests.csv"]) == _log_lines(logs / "web", MAX, "K00000001") > 0
    assert len(tables["api_logs/calls.csv"]) == _log_lines(logs / "api", None, "K00000001") > 0
    assert {r["account"] for r in tables["api_logs/calls.csv"]} == {"K00000001"}
    # Analytics: his events after a login, and those before it linked through his browsers' cookie IDs.
    events = sorted((r["time"], r["visitor_id"], r["account"] or None) for r in tables["analytics/events.csv"])
    assert events == _analytics_events(backend.analytics, "K00000001")
    assert any(account is None for _t, _v, account in events) and len({v for _t, v, _a in events}) == 2
    for name, ids in expected.items():
        rows = tables[f"portal_db/{name}.csv"]
        assert ids, f"the demo subject must have rows in {name}"
        assert {r["id"] for r in rows} == ids, name
    assert {r["email"] for r in tables["portal_db/accounts.csv"]} == {MAX}

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    assert manifest["reference"] == created["reference"]
    assert manifest["datamap_version"] == app.extensions["dsr"].runtime.datamap.version

    # The download is recorded, and the chain is intact after the whole flow.
    with app.extensions["dsr"].runtime.sessions() as session:
        assert verify_chain(session).ok
    after = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert after[0]["downloads"] == 1


def test_a_subject_unknown_to_every_store_gets_an_empty_package(client, auth, run_jobs):
    created = submit(client, email="nobody@example.net")
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed"
    assert all(t["counts"]["total"] == 0 for t in detail["tasks"])
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    tables = read_zip(client.get(url.replace("http://localhost", "")).data)
    assert tables and all(rows == [] for rows in tables.values())


def test_tampered_or_foreign_download_links_get_no_data(client, auth, run_jobs):
    first = submit(client)
    client.post(f"/api/v1/requests/{first['id']}/verify", headers=auth)
    run_jobs()
    url = client.get(f"/api/v1/requests/{first['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    path = url.replace("http://localhost", "")
    assert client.get(path[:-3] + "abc").status_code == 403
    assert client.get(path.split("?")[0]).status_code == 403
    other = path.replace(path.split("/")[4], "00000000-0000-4000-8000-000000000000")
    assert client.get(other).status_code == 403  # a signature is bound to one artifact


def test_worker_failure_in_a_store_marks_the_request_failed(client, auth, run_jobs, app, monkeypatch, tmp_path):
    runtime = app.extensions["dsr"].runtime
    store = runtime.datamap.stores["portal_db"]
    broken = replace(store, connection={**store.connection, "url": f"sqlite:///{tmp_path}/missing/store.sqlite"})
    monkeypatch.setattr(runtime, "datamap", replace(runtime.datamap, stores={**runtime.datamap.stores,
                                                                             "portal_db": broken}))
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "failed"
    tasks = {t["store"]: t for t in detail["tasks"]}
    assert tasks["portal_db"]["status"] == "failed"
    assert "StoreUnavailable" in tasks["portal_db"]["error"]
    # The logs are searched by customer number, which only the portal database knows: rather than
    # come back empty and look complete, their tasks fail too, until the portal database is back.
    for logs in ("api_logs", "web_logs", "analytics"):
        assert tasks[logs]["status"] == "failed", tasks[logs]
        assert "customer_id could not be looked up" in tasks[logs]["error"]
    assert client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json() == []
