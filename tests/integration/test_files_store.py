"""A media store end to end, on both backends: the default map plus the proposed ``media`` stanza,
the demo index tables in the portal store and the demo media folder. An access request's package
holds the subject's voicemails, recording and attachments, each listed with the size and SHA-256
the manifest confirms, and the other party's number masked.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy import inspect, text

from dsr.config import Settings
from dsr.db import make_engine
from dsr.demo import blobs
from tests.helpers import MAX, read_zip, submit
from tests.unit.test_files_connector import map_text

TABLES = ("voicemails", "recordings", "attachments")


@pytest.fixture
def settings(settings: Settings, backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The conftest settings with the media store in the map (index tables this test created are
    dropped afterwards, so the shared store database is as the other tests expect it)."""
    media = tmp_path / "media"
    engine = make_engine(backend.store_url)
    existed = inspect(engine).has_table("voicemails")  # built for the whole session already?
    blobs.build(engine, media)  # deterministic: the same rows again if so
    # Only the portal and the media store: the other stores of the default map are tested elsewhere.
    raw = yaml.safe_load(map_text())
    raw["stores"] = {name: raw["stores"][name] for name in ("portal_db", "media")}
    for recipient in raw["recipients"].values():
        if recipient["notify"].get("via") == "store" and recipient["notify"].get("store") not in raw["stores"]:
            recipient["notify"] = {"via": "manual"}
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("DSR_MEDIA_DIR", str(media))
    try:
        yield replace(settings, datamap_path=path)
    finally:
        if not existed:
            blobs.drop(engine)
        engine.dispose()


def _expected(store_url: str) -> dict[str, set[str]]:
    """Index paths of the subject's files per table, straight from the store."""
    queries = {
        "voicemails": "SELECT v.path FROM voicemails v JOIN accounts a ON a.id = v.account_id WHERE a.email = :e",
        "recordings": "SELECT r.path FROM call_recordings r JOIN accounts a ON a.id = r.account_id WHERE a.email = :e",
        "attachments": "SELECT x.path FROM ticket_attachments x JOIN support_tickets t ON t.id = x.ticket_id "
                       "JOIN accounts a ON a.id = t.account_id WHERE a.email = :e",
    }
    engine = make_engine(store_url)
    with engine.connect() as conn:
        out = {name: set(conn.execute(text(q), {"e": MAX}).scalars()) for name, q in queries.items()}
    engine.dispose()
    return out


def test_an_access_package_holds_the_subjects_media_files_with_checksums(client, auth, run_jobs, backend, app,
                                                                          tmp_path):
    assert app.extensions["dsr"].runtime.connector("media").check() == []
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    tasks = {t["store"]: t for t in detail["tasks"]}
    assert set(tasks) == {"portal_db", "media"} and tasks["media"]["status"] == "done"
    expected = _expected(backend.store_url)
    assert tasks["media"]["counts"]["files"] == {name: len(paths) for name, paths in expected.items()}

    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    data = client.get(url.replace("http://localhost", "")).data
    tables = read_zip(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = {e["path"]: e for e in json.loads(archive.read("manifest.json"))["files"]}
        for name in TABLES:
            rows = tables[f"media/{name}.csv"]
            assert {r["path"] for r in rows} == expected[name], name
            assert expected[name], f"the demo subject must have {name}"
            for row in rows:
                entry = manifest[f"media/{row['file']}"]
                content = archive.read(entry["path"])
                source = tmp_path / "media" / row["path"]
                assert row["sha256"] == entry["sha256"] == hashlib.sha256(content).hexdigest()
                assert int(row["size"]) == entry["size"] == len(content) == source.stat().st_size
                assert content == source.read_bytes()
        media_files = {p for p in archive.namelist() if p.startswith("media/") and not p.endswith((".csv", ".json"))}
    assert media_files == {f"media/{r['file']}" for name in TABLES for r in tables[f"media/{name}.csv"]}
    assert all(r["from_number"].endswith("xxx") for r in tables["media/voicemails.csv"])
    # The portal's own tables are as before: the index tables are exported through the media store only.
    assert not any(name.startswith("portal_db/") and name.split("/")[1].removesuffix(".csv") in
                   ("voicemails", "call_recordings", "ticket_attachments") for name in tables)
