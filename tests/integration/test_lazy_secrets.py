"""A store's ${VARIABLE}s are read where they are used: the web tier starts without the workers'
database passwords, a worker's task names the variable it lacks, and the web tier still reads the
one secret it needs (a processor's, to check a signed callback)."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from dsr.config import DEFAULT_DATAMAP
from dsr.models import Task
from dsr.queue import DsrSimpleWorker
from dsr.stores import StoreUnavailable
from dsr.stores.processor import CALLBACK_PREFIX, sign
from tests.helpers import dpo_auth, submit

PASSWORD_VAR = "DSR_TEST_ARCHIVE_PASSWORD"


@pytest.fixture
def map_with_a_password(tmp_path, monkeypatch):
    """The default map (with its processor store) plus a store whose URL holds a password variable."""
    raw = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))
    archive = dict(raw["stores"]["portal_db"])
    archive["connection"] = {"url": f"postgresql+psycopg://dsr:${{{PASSWORD_VAR}}}@127.0.0.1:1/archive"}
    archive["tables"] = {"accounts": raw["stores"]["portal_db"]["tables"]["accounts"]}
    archive["identities"] = {"email": raw["stores"]["portal_db"]["identities"]["email"]}
    raw["stores"]["archive_db"] = archive
    raw["stores"]["vonage"]["connection"]["url"] = "http://127.0.0.1:1/opendsr"
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    monkeypatch.delenv("DSR_VONAGE_SECRET", raising=False)
    return path


def test_the_web_tier_starts_without_a_stores_password_and_the_worker_names_it(make_app, map_with_a_password):
    app = make_app(datamap_path=map_with_a_password)  # loads the map, as every process does
    rt = app.extensions["dsr"].runtime
    assert rt.datamap.stores["archive_db"].variables == {"url": (PASSWORD_VAR,)}
    assert "${" + PASSWORD_VAR + "}" in rt.datamap.stores["archive_db"].connection["url"]  # not read at load
    with pytest.raises(StoreUnavailable, match=rf"store archive_db: the environment variable {PASSWORD_VAR} "
                                               r"\(in connection.url\) is not set in this process"):
        rt.connector("archive_db")

    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    queue = app.extensions["dsr"].queue
    DsrSimpleWorker([queue], connection=queue.connection, runtime=rt).work(burst=True)  # a worker process
    with rt.sessions() as session:
        task = session.query(Task).filter_by(request_id=uuid.UUID(created["id"]), store="archive_db").one()
    assert task.status == "failed" and PASSWORD_VAR in (task.error or "") and "archive_db" in (task.error or "")


def test_the_web_tier_reads_a_processors_callback_secret_when_a_callback_comes(make_app, map_with_a_password,
                                                                               monkeypatch):
    app = make_app(datamap_path=map_with_a_password)
    client = app.test_client()
    url = f"{CALLBACK_PREFIX}/opendsr/vonage/{uuid.uuid4()}"
    body = json.dumps({"request_status": "completed"}).encode()
    secret = "s" * 40
    # Not set: refused like a wrong signature (the log names the variable), so an unsigned caller learns
    # nothing about which stores exist or how they are set up.
    assert client.post(url, data=body, headers=sign(secret, body)).status_code == 403
    monkeypatch.setenv("DSR_VONAGE_SECRET", secret)  # read when the callback comes, not at start
    assert client.post(url, data=body, headers=sign("w" * 40, body)).status_code == 403
    answer = client.post(url, data=body, headers=sign(secret, body))
    assert answer.status_code == 400  # signed right: the body is read (and is no callback for this request)
