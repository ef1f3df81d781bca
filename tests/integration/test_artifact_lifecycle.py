"""Exports leave the delivery area when they expire (LC-72) and can be downloaded only so often."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from dsr.domain.audit import verify_chain
from dsr.domain.retention import purge_expired
from dsr.models import Artifact, AuditEvent, Request, utcnow
from tests.helpers import dpo_auth, submit, work_off


def _completed(client, auth, run_jobs):  # type: ignore[no-untyped-def]
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    return created, client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]


def test_expired_exports_are_purged_and_their_proof_stays(client, auth, run_jobs, app):
    runtime = app.extensions["dsr"].runtime
    created, artifact = _completed(client, auth, run_jobs)
    with runtime.sessions() as session:
        path = runtime.storage.root / session.get(Artifact, uuid.UUID(artifact["id"])).path
    assert path.is_file()
    assert purge_expired(runtime.sessions, runtime.storage) == 0  # not expired yet: nothing happens

    with runtime.sessions.begin() as session:
        session.execute(update(Artifact).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert purge_expired(runtime.sessions, runtime.storage) == 1
    assert not path.exists()
    assert purge_expired(runtime.sessions, runtime.storage) == 0  # idempotent
    with runtime.sessions() as session:
        row = session.execute(select(Artifact)).scalar_one()
        assert row.purged_at is not None and row.sha256 == artifact["sha256"]  # what was sent stays provable
        assert verify_chain(session).ok
    assert client.get(artifact["download_url"].replace("http://localhost", "")).status_code == 410
    assert client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json() == []
    timeline = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["timeline"]
    assert timeline[-1]["action"] == "artifact.purged"


def test_a_download_link_works_only_so_often(make_app):
    app = make_app(download_limit=2)
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    path = url.replace("http://localhost", "")
    # Read to the end: only a download sent completely counts (see tests/integration/test_download_links.py).
    assert [_read(client, path) for _ in range(3)] == [200, 200, 410]


def _read(client, path):  # type: ignore[no-untyped-def]
    response = client.get(path)
    response.get_data()
    return response.status_code


def test_exports_are_encrypted_at_rest_and_a_changed_file_is_never_served(client, auth, run_jobs, app):
    runtime = app.extensions["dsr"].runtime
    _created, artifact = _completed(client, auth, run_jobs)
    with runtime.sessions() as session:
        stored = runtime.storage.root / session.get(Artifact, uuid.UUID(artifact["id"])).path
    raw = stored.read_bytes()
    assert not raw.startswith(b"PK") and b"Mustermann" not in raw and b"accounts.csv" not in raw
    path = artifact["download_url"].replace("http://localhost", "")
    downloaded = client.get(path)
    assert downloaded.status_code == 200 and downloaded.data.startswith(b"PK")
    import hashlib

    assert hashlib.sha256(downloaded.data).hexdigest() == artifact["sha256"]  # the subject can check it
    changed = bytearray(raw)
    changed[200] ^= 0xFF
    stored.write_bytes(bytes(changed))
    broken = client.get(path)
    assert broken.status_code == 500 and b"PK" not in broken.data


def test_a_request_is_completed_when_its_package_is_ready_not_when_packaging_starts(client, auth, run_jobs, app):
    """The report alone takes a measurable while to render (WeasyPrint, in a child process): the
    request used to be marked completed, and its package created, at the moment building started."""
    runtime = app.extensions["dsr"].runtime
    created, listed = _completed(client, auth, run_jobs)
    with runtime.sessions() as session:
        artifact = session.get(Artifact, uuid.UUID(listed["id"]))
        request = session.get(Request, uuid.UUID(created["id"]))
        written = datetime.fromtimestamp((runtime.storage.root / artifact.path).stat().st_mtime_ns / 1e9, UTC)
        events = {e.action: e.at for e in session.execute(
            select(AuditEvent).where(AuditEvent.request_id == request.id)).scalars()}
        completed_at, created_at, expires_at = request.completed_at, artifact.created_at, artifact.expires_at
    assert completed_at >= written, (completed_at, written)
    assert created_at == completed_at == events["artifact.created"] == events["request.completed"]
    assert expires_at == completed_at + timedelta(days=runtime.settings.artifact_ttl_days)


FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}


def test_download_links_are_rooted_at_the_base_url_whatever_host_the_request_names(make_app):
    """A forged Host header used to yield a genuinely signed link on the forger's domain."""
    app = make_app(base_url="https://dsr.example.com/office")
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    listing = f"/api/v1/requests/{created['id']}/artifacts"

    [artifact] = client.get(listing, headers={**auth, **FORGED}).get_json()

    assert artifact["download_url"].startswith(f"https://dsr.example.com/office/api/v1/artifacts/{artifact['id']}/"
                                               "download?sig="), artifact["download_url"]
    # Without DSR_BASE_URL (development, tests) the root is the served address, never the request's Host.
    plain = make_app()
    [unset] = plain.test_client().get(listing, headers={**dpo_auth(plain), **FORGED}).get_json()
    assert unset["download_url"].startswith(f"http://localhost/api/v1/artifacts/{artifact['id']}/download?sig=")
    served = make_app(server_url="http://127.0.0.1:5000")
    [local] = served.test_client().get(listing, headers={**dpo_auth(served), **FORGED}).get_json()
    assert local["download_url"].startswith("http://127.0.0.1:5000/api/v1/artifacts/")
    assert client.get(artifact["download_url"].removeprefix("https://dsr.example.com/office")).status_code == 200
