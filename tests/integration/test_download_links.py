"""Download links: only a completed GET counts, the limit counts per link, an expired link says so
(410) while a forged one stays 403, and a DPO can issue a new link that works where the old one no
longer does, without bringing the old one back."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select, update

from dsr.domain.audit import verify_chain
from dsr.models import Artifact, AuditEvent
from dsr.web.downloads import SALT, LinkSigner
from tests.conftest import SECRET
from tests.helpers import dpo_auth, submit, work_off

ASK = "ask the controller's data protection office for a new link"


def _answered(app: Flask) -> tuple[FlaskClient, dict[str, str], dict[str, Any], dict[str, Any]]:
    """A completed access request on ``app``: client, DPO headers, the request, and its package as listed."""
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    [artifact] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    return client, auth, created, artifact


def _path(url: str) -> str:
    return url.removeprefix("http://localhost")


def _get(client: FlaskClient, path: str) -> int:
    """GET the whole of ``path``, as a browser does (only a download read to the end counts)."""
    response = client.get(path)
    response.get_data()
    return response.status_code


def _row(app: Flask, artifact_id: str) -> Artifact:
    with app.extensions["dsr"].runtime.sessions() as session:
        row = session.get(Artifact, uuid.UUID(artifact_id))
        session.expunge(row)
        return row


def _events(app: Flask, action: str) -> list[AuditEvent]:
    with app.extensions["dsr"].runtime.sessions() as session:
        return list(session.execute(select(AuditEvent).where(AuditEvent.action == action)
                                    .order_by(AuditEvent.seq)).scalars())


def test_a_head_or_a_download_broken_off_does_not_count_only_a_completed_get(make_app):
    app = make_app(download_limit=2)
    client, _auth, _created, artifact = _answered(app)
    path = _path(artifact["download_url"])

    for _ in range(3):  # a link checker, a mail scanner: HEAD used to use up the downloads
        head = client.head(path)
        assert head.status_code == 200 and head.data == b""
        assert head.headers["Content-Length"] == str(artifact["size"])
    broken = client.get(path, buffered=False)  # the subject's connection drops after the first chunk
    assert broken.status_code == 200
    assert next(iter(broken.response))
    broken.close()
    assert (_row(app, artifact["id"]).downloads, _events(app, "artifact.downloaded")) == (0, [])

    assert [_get(client, path) for _ in range(2)] == [200, 200]
    refused = client.get(path)
    assert refused.status_code == 410
    assert refused.get_json()["message"] == f"this download link was used as often as allowed (2 downloads); {ASK}"
    assert client.head(path).status_code == 410  # a HEAD answers what a GET would
    row = _row(app, artifact["id"])
    assert (row.downloads, row.link_downloads) == (2, 2)
    assert [e.data["link"] for e in _events(app, "artifact.downloaded")] == [1, 1]


def test_a_new_link_works_after_the_limit_and_the_old_one_stays_dead(make_app):
    app = make_app(download_limit=1)
    client, auth, created, artifact = _answered(app)
    old = _path(artifact["download_url"])
    assert [_get(client, old) for _ in range(2)] == [200, 410]
    # Listing the artifacts again signs a fresh link, but for the same, used-up link number.
    [listed] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert client.get(_path(listed["download_url"])).status_code == 410

    links = f"/api/v1/artifacts/{artifact['id']}/links"
    assert client.post(links).status_code == 401
    issued = client.post(links, headers=auth)

    assert issued.status_code == 201, issued.get_json()
    new = issued.get_json()
    assert (new["artifact_id"], new["link"], new["downloads_allowed"]) == (artifact["id"], 2, 1)
    assert datetime.fromisoformat(new["expires_at"]) <= datetime.fromisoformat(artifact["expires_at"])
    assert _get(client, _path(new["download_url"])) == 200
    assert _get(client, _path(new["download_url"])) == 410  # the new link has its own limit
    for dead in (old, _path(listed["download_url"])):
        replaced = client.get(dead)
        assert replaced.status_code == 410
        assert replaced.get_json()["message"].startswith("this download link was replaced by a newer one")
    [after] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert (after["downloads"], after["link_downloads"]) == (2, 1)
    [event] = _events(app, "artifact.link_issued")
    assert event.actor, "the trail names who issued it"
    assert event.data == {"artifact_id": artifact["id"], "link": 2, "replaced": 1, "replaced_downloads": 1}
    with app.extensions["dsr"].runtime.sessions() as session:
        assert verify_chain(session).ok
    openapi = client.get("/api/v1/openapi.json").get_json()
    assert {"bearerAuth": []} in openapi["paths"]["/api/v1/artifacts/{artifact_id}/links"]["post"]["security"]


def test_no_new_link_for_an_unknown_or_expired_file(make_app):
    app = make_app()
    client, auth, _created, artifact = _answered(app)
    assert client.post(f"/api/v1/artifacts/{uuid.uuid4()}/links", headers=auth).status_code == 404
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        session.execute(update(Artifact).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    gone = client.post(f"/api/v1/artifacts/{artifact['id']}/links", headers=auth)
    assert gone.status_code == 410 and "expired" in gone.get_json()["message"]
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action == "artifact.link_issued")) == 0


def test_an_expired_link_is_gone_saying_what_to_do_and_a_forged_one_is_forbidden(make_app):
    app = make_app()
    client, auth, _created, artifact = _answered(app)
    short = make_app(download_link_ttl_seconds=1)  # the same installation, with links valid for a second
    path = _path(artifact["download_url"])
    time.sleep(2.1)  # itsdangerous counts whole seconds

    expired = short.test_client().get(path)
    assert expired.status_code == 410, expired.get_json()
    assert expired.get_json()["message"] == f"this download link has expired; {ASK}"

    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(forged).status_code == 403
    elsewhere = path.replace(artifact["id"], str(uuid.uuid4()))  # genuine, but for another file
    assert client.get(elsewhere).status_code == 403
    assert client.get(path).status_code == 200  # within the installation's own TTL it still works
    # The DPO's new link is what the subject is told to ask for.
    fresh = client.post(f"/api/v1/artifacts/{artifact['id']}/links", headers=auth).get_json()["download_url"]
    assert client.get(_path(fresh)).status_code == 200


def test_a_link_signed_before_links_had_numbers_is_link_one():
    artifact_id = uuid.uuid4()
    old = URLSafeTimedSerializer(SECRET, salt=SALT).dumps({"artifact": str(artifact_id)})
    link = LinkSigner(SECRET, 60).read(old)
    assert link is not None and (link.artifact_id, link.number, link.expired) == (artifact_id, 1, False)
    assert LinkSigner("another-" + SECRET, 60).read(old) is None
