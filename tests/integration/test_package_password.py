"""Password-protected packages (issue 4, item 3): the delivered ZIP is WinZip AES-256 encrypted and
its password is released separately, through a second channel, by a DPO or agent.

Runs on both backends. The ZIP is opened with pyzipper, as a subject's archiver would; the
password is looked for in every table, the audit trail, the stored file and the logs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
import zipfile
from datetime import timedelta
from typing import Any

import pytest
import pyzipper
from sqlalchemy import select, text, update

from dsr.config import ConfigError, Settings
from dsr.domain.retention import purge_expired
from dsr.exports.protected_zip import PasswordUnreadable, unseal_password
from dsr.exports.sealed import unseal
from dsr.models import Artifact, AuditEvent, Base, Request, utcnow
from tests.helpers import MAX, dpo_auth, submit, work_off

PASSWORD = re.compile(r"^[2-9a-hjkmnp-z]{4}(-[2-9a-hjkmnp-z]{4}){5}$")
PROTECTED = {"delivery": {"password_protected": True}}


def _path(url: str) -> str:
    return url.replace("http://localhost", "")


def _completed(client, auth, run_jobs, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:  # type: ignore[no-untyped-def]
    created = submit(client, **body)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    run_jobs()
    artifacts = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert len(artifacts) == 1, artifacts
    return created, artifacts[0]


def _release(client, auth, request_id: str, channel: str = "phone"):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/requests/{request_id}/package-password", json={"channel": channel}, headers=auth)


def _verify_manifest(archive: zipfile.ZipFile) -> int:
    manifest = json.loads(archive.read("manifest.json"))
    for entry in manifest["files"]:
        data = archive.read(entry["path"])
        assert len(data) == entry["size"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    return len(manifest["files"])


# --- the package and its password -----------------------------------------------------------------


def test_a_protected_package_opens_only_with_the_released_password(client, auth, run_jobs):
    created, artifact = _completed(client, auth, run_jobs, **PROTECTED)
    assert artifact["password_protected"] is True and artifact["password_released_at"] is None
    assert "password" not in artifact["download_url"]
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["delivery"] == {"password_protected": True, "password_released": False,
                                  "password_released_at": None, "password_releases": 0}
    downloaded = client.get(_path(artifact["download_url"]))
    assert downloaded.status_code == 200
    data = downloaded.data
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"] and len(data) == artifact["size"]

    # Without the password nothing opens: not with the standard library, not with pyzipper.
    with zipfile.ZipFile(io.BytesIO(data)) as plain:
        assert "manifest.json" in plain.namelist()  # names are visible (ZIP encrypts contents, not names)
        # Every member encrypted (flag bit 0) with WinZip AES (method 99).
        assert all(i.flag_bits & 1 and i.compress_type == 99 for i in plain.infolist())
        with pytest.raises((NotImplementedError, RuntimeError)):
            plain.read("manifest.json")
    assert b"Mustermann" not in data and b'"sha256"' not in data and b"%PDF" not in data
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        with pytest.raises(RuntimeError, match="password"):
            archive.read("manifest.json")
        with pytest.raises(RuntimeError, match=r"[Bb]ad password"):
            archive.read("manifest.json", pwd=b"k7dq-x2mf-9rta-bn4e-wh3s-c8pz")
        assert {info.wz_aes_strength for info in archive.infolist()} == {3}  # 3: AES-256

    released = _release(client, auth, created["id"])
    assert released.status_code == 200, released.get_json()
    assert released.headers["Cache-Control"] == "no-store"
    body = released.get_json()
    assert PASSWORD.match(body["password"]), body["password"]
    assert body["artifact_id"] == artifact["id"] and body["releases"] == 1

    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        archive.setpassword(body["password"].encode())
        assert _verify_manifest(archive) > 5  # the report, CSV and JSON files, documentation: all verify
        assert archive.read("report.pdf").startswith(b"%PDF")
        assert MAX.encode() in b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".csv"))

    again = _release(client, auth, created["id"], channel="letter").get_json()
    assert again["password"] == body["password"] and again["releases"] == 2
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["delivery"]["password_released"] is True and detail["delivery"]["password_releases"] == 2
    releases = [e for e in detail["timeline"] if e["action"] == "package.password_released"]
    assert [(e["actor"], e["data"]["channel"]) for e in releases] == [("token:tests", "phone"),
                                                                     ("token:tests", "letter")]
    listed = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]
    assert listed["password_released_at"] == detail["delivery"]["password_released_at"]


def test_the_password_is_never_stored_in_clear_nor_audited_nor_logged(client, auth, run_jobs, app, caplog):
    caplog.set_level(logging.DEBUG)
    created, artifact = _completed(client, auth, run_jobs, **PROTECTED)
    client.get(_path(artifact["download_url"]))
    password = _release(client, auth, created["id"]).get_json()["password"]
    runtime = app.extensions["dsr"].runtime

    # Every row of every table, as the database gives it back.
    with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    raw = value if isinstance(value, bytes) else repr(value).encode()
                    assert password.encode() not in raw, (table.name, row)
        events = conn.execute(select(AuditEvent.action, AuditEvent.data)).all()
    assert password not in json.dumps([list(e) for e in events])
    assert password not in caplog.text

    # The stored artifact: sealed, and the ZIP inside does not carry it either.
    with runtime.sessions() as session:
        row = session.get(Artifact, uuid.UUID(artifact["id"]))
        stored, sealed_password, artifact_id = runtime.storage.root / row.path, row.password_sealed, row.id
    assert stored.is_file() and password.encode() not in stored.read_bytes()
    assert password.encode() not in b"".join(unseal(stored, runtime.seal_key))
    assert not [p for p in runtime.storage.root.rglob("*") if p.is_file() and p != stored]  # no plain copy left
    # The sealed password opens only for its own artifact, and only with this installation's key.
    assert unseal_password(sealed_password, runtime.seal_key, artifact_id) == password
    with pytest.raises(PasswordUnreadable):
        unseal_password(sealed_password, runtime.seal_key, uuid.uuid4())
    with pytest.raises(PasswordUnreadable):
        unseal_password(sealed_password, bytes(32), artifact_id)


def test_each_package_gets_its_own_password(client, auth, run_jobs):
    first, _ = _completed(client, auth, run_jobs, **PROTECTED)
    second, _ = _completed(client, auth, run_jobs, **PROTECTED)
    assert _release(client, auth, first["id"]).get_json()["password"] != \
        _release(client, auth, second["id"]).get_json()["password"]


def test_an_unprotected_package_is_a_plain_zip_and_has_no_password(client, auth, run_jobs):
    created, artifact = _completed(client, auth, run_jobs)
    assert artifact["password_protected"] is False
    with zipfile.ZipFile(io.BytesIO(client.get(_path(artifact["download_url"])).data)) as archive:
        assert _verify_manifest(archive) > 5
    response = _release(client, auth, created["id"])
    assert response.status_code == 409 and "built without a password" in response.get_json()["message"]
    assert "password" not in {k for k in response.get_json() if k != "message"}
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["delivery"]["password_protected"] is False
    assert not [e for e in detail["timeline"] if e["action"] == "package.password_released"]


def test_no_password_before_the_package_is_built(client, auth):
    created = submit(client, **PROTECTED)
    response = _release(client, auth, created["id"])
    assert response.status_code == 409 and "password" not in response.get_json()


def test_an_expired_package_releases_no_password(client, auth, run_jobs, app):
    runtime = app.extensions["dsr"].runtime
    created, _artifact = _completed(client, auth, run_jobs, **PROTECTED)
    with runtime.sessions.begin() as session:
        session.execute(update(Artifact).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = _release(client, auth, created["id"])
    assert response.status_code == 410 and "password" not in response.get_json()
    assert purge_expired(runtime.sessions, runtime.storage) == 1
    assert _release(client, auth, created["id"]).status_code == 410


def test_after_the_secret_key_changed_the_password_is_an_error_not_a_guess(make_app, client, auth, run_jobs):
    created, _ = _completed(client, auth, run_jobs, **PROTECTED)
    other = make_app(secret_key="another-secret-" + "y" * 32)
    response = other.test_client().post(f"/api/v1/requests/{created['id']}/package-password",
                                        headers=dpo_auth(other))
    assert response.status_code == 500 and "cannot be read" in response.get_json()["message"]
    assert "password" not in response.get_json()
    with other.extensions["dsr"].runtime.sessions() as session:  # nothing released, nothing audited
        assert session.scalar(select(Artifact.password_releases)) == 0
        assert not session.execute(select(AuditEvent).where(AuditEvent.action == "package.password_released")).all()


def test_the_password_needs_a_token_and_a_known_channel_and_a_refusal_releases_nothing(client, auth, run_jobs,
                                                                                       app):
    created, _ = _completed(client, auth, run_jobs, **PROTECTED)
    url = f"/api/v1/requests/{created['id']}/package-password"
    for headers in ({}, {"Authorization": "Bearer dsr_wrong"}):
        response = client.post(url, headers=headers)
        assert response.status_code == 401 and set(response.get_json()) <= {"code", "status", "message"}
    response = _release(client, auth, created["id"], channel="e-mail with the link")
    assert response.status_code == 422 and set(response.get_json()["errors"]["json"]) == {"channel"}
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.scalar(select(Artifact.password_releases)) == 0
        assert not session.execute(select(AuditEvent).where(AuditEvent.action == "package.password_released")).all()
    assert client.post(url, headers=auth).status_code == 200  # no body: the channel is "other"


# --- choosing the option ----------------------------------------------------------------------------


def test_the_installation_default_applies_unless_the_request_says_otherwise(make_app):
    app = make_app(password_protect_packages=True)
    client, auth = app.test_client(), dpo_auth(app)
    default = submit(client)
    declined = submit(client, delivery={"password_protected": False})
    erasure = submit(client, type="erasure")  # the default does not make a request without a package fail
    work = {r["id"]: r for r in (default, declined, erasure)}
    for request_id in work:
        client.post(f"/api/v1/requests/{request_id}/verify", headers=auth)
    work_off(app)
    with app.extensions["dsr"].runtime.sessions() as session:
        stored = {str(r.id): r.password_protected for r in session.execute(select(Request)).scalars()}
    assert stored == {default["id"]: True, declined["id"]: False, erasure["id"]: False}
    artifacts = client.get(f"/api/v1/requests/{default['id']}/artifacts", headers=auth).get_json()
    assert artifacts[0]["password_protected"] is True


@pytest.mark.parametrize(("body", "errors"), [
    pytest.param({"type": "erasure", **PROTECTED}, {"delivery": {"password_protected"}}, id="type-without-package"),
    pytest.param({"type": "objection", **PROTECTED}, {"delivery": {"password_protected"}}, id="objection"),
    pytest.param({"delivery": {"password_protected": "yes"}}, {"delivery": {"password_protected"}}, id="not-boolean"),
    pytest.param({"delivery": {"password_protected": 1}}, {"delivery": {"password_protected"}}, id="number"),
    pytest.param({"delivery": {"password": "mine"}}, {"delivery": {"password"}}, id="unknown-field"),
    pytest.param({"delivery": True}, {"delivery": None}, id="not-an-object"),
])
def test_bad_delivery_options_are_refused_naming_the_field_and_nothing_is_stored(client, app, body, errors):
    response = client.post("/api/v1/requests", json={"type": "access", "email": MAX, **body})
    assert response.status_code == 422, response.get_json()
    named = response.get_json()["errors"]["json"]
    assert set(named) == set(errors)
    for field, inner in errors.items():
        if inner is not None:
            assert set(named[field]) == inner, named
    if body.get("type") == "erasure":
        assert "access and portability" in json.dumps(named)
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.scalar(select(text("count(*)")).select_from(Request)) == 0


def test_portability_may_be_protected(client, auth, run_jobs):
    created, artifact = _completed(client, auth, run_jobs, type="portability", **PROTECTED)
    assert artifact["password_protected"] is True
    password = _release(client, auth, created["id"]).get_json()["password"]
    with pyzipper.AESZipFile(io.BytesIO(client.get(_path(artifact["download_url"])).data)) as archive:
        archive.setpassword(password.encode())
        assert "portability" in json.loads(archive.read("manifest.json"))["scope"]


def test_the_dpo_switches_protection_on_before_the_package_is_built(client, auth, run_jobs, app):
    created = submit(client)
    response = client.put(f"/api/v1/requests/{created['id']}/delivery", json={"password_protected": True},
                          headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["password_protected"] is True
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["delivery"]["password_protected"] is True
    changed = [e for e in detail["timeline"] if e["action"] == "delivery.changed"]
    assert [(e["actor"], e["data"]) for e in changed] == [("token:tests", {"password_protected": True})]
    assert _release(client, auth, created["id"]).status_code == 200

    late = client.put(f"/api/v1/requests/{created['id']}/delivery", json={"password_protected": False},
                      headers=auth)
    assert late.status_code == 409 and "built already" in late.get_json()["message"]


@pytest.mark.parametrize(("request_type", "body", "status", "field"), [
    pytest.param("erasure", {"password_protected": True}, 422, "password_protected", id="type-without-package"),
    pytest.param("access", {}, 422, "password_protected", id="missing"),
    pytest.param("access", {"password_protected": "on"}, 422, "password_protected", id="not-boolean"),
    pytest.param("access", {"password_protected": True, "pin": "1234"}, 422, "pin", id="unknown-field"),
])
def test_bad_delivery_changes_are_refused_naming_the_field(client, auth, app, request_type, body, status, field):
    created = submit(client, type=request_type)
    response = client.put(f"/api/v1/requests/{created['id']}/delivery", json=body, headers=auth)
    assert response.status_code == status, response.get_json()
    assert field in response.get_json()["errors"]["json"]
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.get(Request, uuid.UUID(created["id"])).password_protected is False


def test_changing_the_delivery_needs_a_token(client, app):
    created = submit(client)
    response = client.put(f"/api/v1/requests/{created['id']}/delivery", json={"password_protected": True})
    assert response.status_code == 401
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.get(Request, uuid.UUID(created["id"])).password_protected is False


def test_the_openapi_document_describes_the_option_and_the_release(client):
    import openapi_spec_validator

    doc = client.get("/api/v1/openapi.json").get_json()
    openapi_spec_validator.validate(doc)
    paths = doc["paths"]
    for path, method in (("/api/v1/requests/{request_id}/package-password", "post"),
                         ("/api/v1/requests/{request_id}/delivery", "put")):
        assert {"bearerAuth": []} in paths[path][method]["security"]
        assert {"401", "404", "409"} <= set(paths[path][method]["responses"])
    shapes = paths["/api/v1/requests"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    for shape in shapes:  # with a package (may be protected) and without (password_protected only false)
        assert "delivery" in doc["components"]["schemas"][shape["$ref"].rsplit("/", 1)[-1]]["properties"]


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("on", True), ("TRUE", True), ("0", False),
                                               ("no", False), ("", False)])
def test_the_default_is_read_from_the_environment(raw, expected):
    assert Settings.from_env({"DSR_PASSWORD_PROTECT_PACKAGES": raw}).password_protect_packages is expected


def test_a_bad_default_names_its_variable():
    with pytest.raises(ConfigError, match=r"DSR_PASSWORD_PROTECT_PACKAGES must be 1 or 0.*'sometimes'"):
        Settings.from_env({"DSR_PASSWORD_PROTECT_PACKAGES": "sometimes"})
