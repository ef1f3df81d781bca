"""The ``processor`` store against the processor simulator, over real HTTP on loopback.

The simulator plays Vonage in this test process (``dsr.demo.processor_sim`` on an ephemeral port).
For the callback tests the dsr app itself is served on another ephemeral loopback port, so the
simulator's signed callbacks arrive over HTTP like in production. Every server stops with its test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from flask import Flask
from rq.scheduler import RQScheduler
from sqlalchemy import select
from werkzeug.datastructures import EnvironHeaders, Headers
from werkzeug.serving import make_server

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap.model import Store, Table
from dsr.demo import processor_sim
from dsr.domain.accounts import create_api_token
from dsr.models import Role, Task, utcnow
from dsr.queue import DsrSimpleWorker, purge_queue
from dsr.stores import ConnectorContext, Pending, StoreUnavailable, Subject
from dsr.stores.processor import ProcessorConnector, encode, inbox_path, sign, subject_request_id
from dsr.web import callbacks
from dsr.web.app import create_app
from tests.helpers import MAX, read_zip, submit, tell_by_hand

SECRET = "vonage-shared-secret-" + "v" * 32


# --- servers ----------------------------------------------------------------------------------------


class _Live:
    """A WSGI app served on an ephemeral loopback port in a thread (the app may be set after binding)."""

    def __init__(self, app: Callable[..., Any] | None = None) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def _dispatch(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def sim() -> Iterator[processor_sim.Handle]:
    handle = processor_sim.serve(port=0, secret=SECRET, delay=0.5)
    yield handle
    handle.shutdown()


@pytest.fixture
def live() -> Iterator[_Live]:
    server = _Live()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def make_app(settings, tmp_path, monkeypatch) -> Iterator[Callable[..., Flask]]:
    """A dsr app whose data map is the default plus the Vonage store (notified through it)."""
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)
    apps: list[Flask] = []

    def build(url: str, *, base_url: str | None = None, retry_intervals: tuple[int, ...] = (),
              **store_options: Any) -> Flask:
        raw = processor_sim.with_vonage_store(yaml.safe_load(DEFAULT_DATAMAP.read_text()), url, **store_options)
        path = tmp_path / "datamap.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
        app = create_app(replace(settings, datamap_path=path, base_url=base_url, retry_intervals=retry_intervals))
        app.config["TESTING"] = True
        if "callbacks" not in app.blueprints:  # until app.py registers it
            app.extensions["flask-smorest"]["apis"][""]["ext_obj"].register_blueprint(callbacks.blp)
        apps.append(app)
        return app

    yield build
    for app in apps:
        context = app.extensions["dsr"]
        if settings.redis_url:
            purge_queue(context.queue)
        context.runtime.close()


def _auth(app: Flask) -> dict[str, str]:
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, token = create_api_token(session, name="t", role=Role.DPO)
    return {"Authorization": f"Bearer {token}"}


def _run(app: Flask) -> None:
    context = app.extensions["dsr"]
    DsrSimpleWorker([context.queue], connection=context.queue.connection, runtime=context.runtime).work(
        burst=True, logging_level="CRITICAL")


def _run_due_polls(app: Flask) -> None:
    """As soon as the scheduled poll is due, let RQ's scheduler move it to the queue, and run it."""
    queue = app.extensions["dsr"].queue
    scheduler = RQScheduler([queue], connection=queue.connection)
    scheduler.prepare_registries([queue.name])

    def moved() -> bool:
        scheduler.enqueue_scheduled_jobs()
        return queue.count > 0

    _wait_for(moved, timeout=5)
    _run(app)


def _start(app: Flask, auth: dict[str, str]) -> tuple[str, dict[str, Any]]:
    client = app.test_client()
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    _run(app)
    return created["id"], _detail(app, created["id"], auth)


def _detail(app: Flask, request_id: str, auth: dict[str, str]) -> dict[str, Any]:
    return app.test_client().get(f"/api/v1/requests/{request_id}", headers=auth).get_json()


def _tasks(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["store"]: t for t in detail["tasks"]}


def _actions(detail: dict[str, Any]) -> list[str]:
    return [e["action"] for e in detail["timeline"]]


def _package(app: Flask, request_id: str, auth: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    client = app.test_client()
    url = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()[0]["download_url"]
    return read_zip(client.get(url.replace("http://localhost", "")).data)


def _wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s")


def _completed_callbacks(handle: processor_sim.Handle) -> list[tuple[str, str, int | str]]:
    return [c for c in handle.simulator.callbacks if c[1] == "completed"]


def _assert_max_rows(tables: dict[str, list[dict[str, str]]]) -> None:
    messages = tables["vonage/messages.csv"]
    assert [m["message_id"] for m in messages] == [f"MSG-7F3A-{n:04d}" for n in range(1, 6)]
    assert all(m["from_number"] == "'+4915100000001" for m in messages)  # quoted against CSV formulas
    assert all(m["to_number"].endswith("xxx") for m in messages)  # Art. 15(4) mask of the map applies
    assert messages[0]["text_snippet"] == "Termin morgen um 10 Uhr bestätigt."  # umlauts intact
    assert len(tables["vonage/call_recordings_meta.csv"]) == 3
    assert tables["portal_db/accounts.csv"][0]["email"] == MAX


# --- the whole flow -----------------------------------------------------------------------------------


def test_a_signed_callback_wakes_the_waiting_task_and_the_package_holds_the_processors_rows(
        make_app, sim, live):
    app = make_app(sim.url, base_url=live.url)
    live.app = app
    sim.simulator.delay = 3600  # it completes when the test says so below, not while the first jobs still run
    auth = _auth(app)
    request_id, detail = _start(app, auth)

    # The processor accepted the request and works on it: the task waits, the request stays open.
    tasks = _tasks(detail)
    assert detail["status"] == "in_progress"
    assert tasks["vonage"]["status"] == "waiting" and tasks["portal_db"]["status"] == "done"
    reference = subject_request_id(request_id, "vonage")
    assert "signed receipt verified" in tasks["vonage"]["counts"]["notes"][0]
    assert _actions(detail).count("task.waiting") == 1
    waiting = next(e for e in detail["timeline"] if e["action"] == "task.waiting")
    assert waiting["data"]["store"] == "vonage" and waiting["data"]["reference"] == reference
    assert "signed receipt verified" in waiting["data"]["answer"]  # the receipt is evidence (LC-61)
    assert sim.simulator.cases[reference].document["status_callback_urls"] == [
        f"{live.url}/api/v1/callbacks/opendsr/vonage/{request_id}"]

    # The simulator completes and calls back over HTTP; the signature checks out; the task is woken.
    sim.simulator.advance(reference, "completed")
    assert _completed_callbacks(sim)[0][2] == 204
    detail = _detail(app, request_id, auth)
    assert _actions(detail).count("processor.callback") == 1
    event = next(e for e in detail["timeline"] if e["action"] == "processor.callback")
    assert event["actor"] == "processor:vonage"
    assert event["data"] == {"store": "vonage", "reference": reference, "status": "completed", "attempt": 1}

    _run(app)
    detail = _detail(app, request_id, auth)
    assert detail["status"] == "completed", detail
    assert _tasks(detail)["vonage"]["counts"]["found"] == {"messages": 5, "call_recordings_meta": 3}
    _assert_max_rows(_package(app, request_id, auth))
    seen = len(_detail(app, request_id, auth)["timeline"])  # the download above is an event too

    # The same callback again: accepted, and nothing changes.
    sim.simulator.send_callbacks(reference)
    assert sim.simulator.callbacks[-1][2] == 204
    _run(app)
    after = _detail(app, request_id, auth)["timeline"]
    assert len(after) == seen, [e["action"] for e in after]

    # A forged, stale or unsigned callback is refused before it is read, and changes nothing.
    client = app.test_client()
    path = f"/api/v1/callbacks/opendsr/vonage/{request_id}"
    body = encode({"subject_request_id": reference, "request_status": "completed"})
    forged = client.post(path, data=body, content_type="application/json", headers=sign("not-the-secret", body))
    stale = client.post(path, data=body, content_type="application/json",
                        headers=sign(SECRET, body, now=time.time() - 600))
    unsigned = client.post(path, data=body, content_type="application/json")
    assert (forged.status_code, stale.status_code, unsigned.status_code) == (403, 403, 401)
    assert unsigned.get_json()["message"].startswith("the callback is not signed correctly")
    assert len(_detail(app, request_id, auth)["timeline"]) == seen


def test_at31_an_erasure_request_waits_for_the_processors_signed_completion_and_keeps_it_as_evidence(
        own_stores, make_app, sim, live):
    """AT-31 in the request flow: the processor's part is its own erasure request, answered by signed
    callback; the completion is kept with the task, and the processor holds nothing of Max afterwards."""
    app = make_app(sim.url, base_url=live.url)
    live.app = app
    sim.simulator.delay = 3600  # completes when the test says so
    auth, client = _auth(app), app.test_client()
    created = submit(client, type="erasure", locale="en")
    request_id = created["id"]
    assert client.post(f"/api/v1/requests/{request_id}/verify", headers=auth).status_code == 200
    _run(app)
    detail = _detail(app, request_id, auth)
    assert detail["status"] == "awaiting_approval"
    assert detail["preview"]["stores"]["vonage"]["by"] == "processor"
    assert not sim.simulator.cases  # nothing asked of the processor before the approval
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=auth).status_code == 202
    _run(app)
    detail = _detail(app, request_id, auth)
    erase = next(t for t in detail["tasks"] if t["action"] == "erase" and t["store"] == "vonage")
    assert detail["status"] == "in_progress" and erase["status"] == "waiting"
    reference = subject_request_id(request_id, "vonage", "erase")
    assert reference in sim.simulator.cases and subject_request_id(request_id, "vonage") not in sim.simulator.cases

    sim.simulator.advance(reference, "completed")
    assert _completed_callbacks(sim)[-1][2] == 204
    _run(app)
    # Vonage is told by its own erasure (notify via store); the other recipients by a person.
    told = tell_by_hand(app, client, auth, request_id, run=False)
    _run(app)
    assert "vonage" not in told
    detail = _detail(app, request_id, auth)
    notice = next(t for t in detail["tasks"] if t["action"] == "notify" and t["store"] == "vonage")
    assert notice["status"] == "done"
    assert detail["status"] == "completed", [(t["store"], t["status"], t["error"]) for t in detail["tasks"]]
    vonage = next(t for t in detail["tasks"] if t["action"] == "erase" and t["store"] == "vonage")
    assert vonage["counts"]["erasure"]["messages"]["deleted"] == 5 and vonage["counts"]["evidence"], vonage["counts"]
    assert any(e["action"] == "processor.callback" for e in detail["timeline"])
    artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth).get_json()
    assert [a["kind"] for a in artifacts] == ["confirmation"]
    # The processor holds nothing of Max any more.
    held = sim.simulator._holding(sim.simulator.cases[reference].document["subject_identities"])
    assert held and all(rows == [] for rows in held.values())


def test_callbacks_are_refused_for_unknown_stores_requests_and_foreign_ids(make_app, sim):
    app = make_app(sim.url)
    auth = _auth(app)
    request_id, detail = _start(app, auth)
    assert _tasks(detail)["vonage"]["status"] == "waiting"
    client = app.test_client()
    reference = subject_request_id(request_id, "vonage")

    def post(path: str, document: dict[str, Any], secret: str = SECRET) -> int:
        body = encode(document)
        return client.post(path, data=body, content_type="application/json", headers=sign(secret, body)).status_code

    ok = {"subject_request_id": reference, "request_status": "completed"}
    # An address that names no processor store answers as a wrong signature does, signed or not: the
    # answers never tell which stores exist (issue 12.11).
    for path in (f"/api/v1/callbacks/opendsr/portal_db/{request_id}",  # not a processor store
                 f"/api/v1/callbacks/webhook/vonage/{request_id}",  # not its protocol
                 f"/api/v1/callbacks/opendsr/no_such_store/{request_id}"):
        body = encode(ok)
        signed = client.post(path, data=body, content_type="application/json", headers=sign(SECRET, body))
        forged = client.post(path, data=body, content_type="application/json", headers=sign("guess", body))
        unsigned = client.post(path, data=body, content_type="application/json")
        real = f"/api/v1/callbacks/opendsr/vonage/{request_id}"
        known = client.post(real, data=body, content_type="application/json", headers=sign("guess", body))
        known_unsigned = client.post(real, data=body, content_type="application/json")
        assert (signed.status_code, forged.status_code, unsigned.status_code) == (403, 403, 401), path
        assert forged.get_json() == signed.get_json() == known.get_json()
        assert unsigned.get_json() == known_unsigned.get_json()
    other = str(uuid.uuid4())
    assert post(f"/api/v1/callbacks/opendsr/vonage/{other}",
                {**ok, "subject_request_id": subject_request_id(other, "vonage")}) == 404  # no such task
    path = f"/api/v1/callbacks/opendsr/vonage/{request_id}"
    assert post(path, {**ok, "subject_request_id": subject_request_id(other, "vonage")}) == 400
    assert post(path, {**ok, "request_status": "done"}) == 400
    assert post(path, {**ok, "status_callback_url": "https://elsewhere.example/cb"}) == 400
    body = b"not json"
    assert client.post(path, data=body, headers=sign(SECRET, body)).status_code == 400
    assert post(path, {**ok, "request_status": "in_progress"}) == 204  # fine, but nothing to do
    detail = _detail(app, request_id, auth)
    assert "processor.callback" not in _actions(detail)
    assert _tasks(detail)["vonage"]["status"] == "waiting"

    # The callback is documented in the OpenAPI document, which stays valid.
    import openapi_spec_validator

    doc = client.get("/api/v1/openapi.json").get_json()
    openapi_spec_validator.validate(doc)
    operation = doc["paths"]["/api/v1/callbacks/{protocol}/{store}/{request_id}"]["post"]
    assert {"204", "401", "403"} <= set(operation["responses"])


def test_polling_alone_completes_the_request_when_no_callback_can_arrive(make_app, sim):
    app = make_app(sim.url, poll_seconds=1)  # no base URL: the processor cannot call back
    sim.simulator.delay = 0.3
    auth = _auth(app)
    request_id, detail = _start(app, auth)
    vonage = _tasks(detail)["vonage"]
    assert vonage["status"] == "waiting" and "polled only" in vonage["counts"]["notes"][0]

    _run_due_polls(app)
    detail = _detail(app, request_id, auth)
    assert detail["status"] == "completed", detail
    assert sim.simulator.callbacks == []
    assert _actions(detail).count("task.waiting") == 1
    _assert_max_rows(_package(app, request_id, auth))


def test_a_processor_that_is_down_fails_its_task_after_the_retries(make_app, closed_port):
    url = f"http://127.0.0.1:{closed_port}/opendsr"
    app = make_app(url, retry_intervals=(0, 0))
    auth = _auth(app)
    _request_id, detail = _start(app, auth)
    vonage = _tasks(detail)["vonage"]
    assert detail["status"] == "failed"
    assert vonage["status"] == "failed" and vonage["attempts"] == 3
    assert "StoreUnavailable" in vonage["error"] and f"GET {url}/requests/" in vonage["error"]
    assert "cannot reach the processor" in vonage["error"]
    assert _tasks(detail)["portal_db"]["status"] == "done"


def test_a_processor_that_misses_its_deadline_fails_the_task(make_app, sim):
    app = make_app(sim.url, poll_seconds=1)
    sim.simulator.delay = 3600  # never answers within the test
    auth = _auth(app)
    request_id, detail = _start(app, auth)
    assert _tasks(detail)["vonage"]["status"] == "waiting"
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        task = session.execute(select(Task).where(Task.store == "vonage")).scalar_one()
        task.checkpoint = {**task.checkpoint, "waiting_since": (utcnow() - timedelta(days=11)).isoformat()}

    _run_due_polls(app)
    detail = _detail(app, request_id, auth)
    vonage = _tasks(detail)["vonage"]
    assert vonage["status"] == "failed"
    assert "did not answer within 10 days" in vonage["error"]
    assert subject_request_id(request_id, "vonage") in vonage["error"]
    assert detail["status"] == "failed"
    failed = [e for e in detail["timeline"] if e["action"] == "task.failed"]
    assert [e["data"]["error"] for e in failed] == ["deadline"]

    # The office runs it again: the processor gets another whole period, not a failure for the old one.
    answer = app.test_client().post(f"/api/v1/requests/{request_id}/tasks/{vonage['id']}/rerun", headers=auth)
    assert answer.status_code == 202
    _run(app)
    assert _tasks(_detail(app, request_id, auth))["vonage"]["status"] == "waiting"


def test_a_webhook_recipient_answers_by_signed_callback_with_the_results_inline(make_app, sim, live, tmp_path):
    app = make_app(sim.webhook_url, base_url=live.url, protocol="webhook")
    live.app = app
    sim.simulator.delay = 3600  # it answers when the test says so below, not while the first jobs still run
    auth = _auth(app)
    request_id, detail = _start(app, auth)
    vonage = _tasks(detail)["vonage"]
    assert vonage["status"] == "waiting" and "signed webhook" in vonage["counts"]["notes"][0]
    reference = subject_request_id(request_id, "vonage")
    assert sim.simulator.cases[reference].protocol == "webhook"

    sim.simulator.advance(reference, "completed")  # the answer, by signed callback over HTTP
    assert _completed_callbacks(sim)[0][2] == 204
    inbox = inbox_path(app.extensions["dsr"].runtime.settings.instance_dir, "vonage", reference)
    assert inbox.exists() and inbox.stat().st_mode & 0o077 == 0
    _run(app)
    detail = _detail(app, request_id, auth)
    assert detail["status"] == "completed", detail
    assert _actions(detail).count("processor.callback") == 1
    _assert_max_rows(_package(app, request_id, auth))
    assert not inbox.exists()  # no second copy of the subject's data stays behind


def test_a_webhook_recipients_failure_fails_the_task_with_its_reason(make_app, sim):
    sim.simulator.delay = 3600  # the simulator takes the request; the answer below is the test's own
    app = make_app(sim.webhook_url, base_url="https://dsr.example/prefix", protocol="webhook")
    auth = _auth(app)
    request_id, detail = _start(app, auth)
    assert _tasks(detail)["vonage"]["status"] == "waiting"
    reference = subject_request_id(request_id, "vonage")
    path = f"/api/v1/callbacks/webhook/vonage/{request_id}"
    body = encode({"subject_request_id": reference, "request_status": "failed", "reason": "quota exceeded",
                   "status_callback_url": f"https://dsr.example/prefix{path}"})  # behind a proxy's prefix
    response = app.test_client().post(path, data=body, content_type="application/json", headers=sign(SECRET, body))
    assert response.status_code == 204
    _run(app)
    detail = _detail(app, request_id, auth)
    vonage = _tasks(detail)["vonage"]
    assert vonage["status"] == "failed" and "as failed: quota exceeded" in vonage["error"]
    assert detail["status"] == "failed"
    assert [e["data"]["status"] for e in detail["timeline"] if e["action"] == "processor.callback"] == ["failed"]


# --- the connector against the simulator, without dsr around it --------------------------------------


def _store(url: str, **connection: Any) -> Store:
    return Store(
        name="vonage", connector="processor", description={"de": "x", "en": "x"},
        connection={"protocol": "opendsr", "url": url, "secret_env": "DSR_VONAGE_SECRET", "poll_seconds": 60,
                    "timeout_seconds": 2, **connection},
        identities={"email": {"format": "sha256"}},
        tables={"messages": Table("messages", "comm_content", {}, {}),
                "call_recordings_meta": Table("call_recordings_meta", "comm_content", {}, {})},
        recipient="vonage", deadline_days=10,
    )


class _Sink:
    def __init__(self) -> None:
        self.rows: dict[str, list[Any]] = {}

    def open_table(self, name: str, columns: Any, kinds: Any = None) -> Any:
        rows = self.rows.setdefault(name, [])

        class _W:
            def write(self, batch: Any) -> None:
                rows.extend(batch)

            def close(self) -> None:
                pass

        return _W()

    def add_file(self, table: str, name: str, content: Any) -> None:
        raise AssertionError


def _subject(email: str = MAX) -> Subject:
    return Subject.from_email(email, case_id=str(uuid.uuid4()), received_at=datetime.now(UTC), request_type="access")


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)


def _until_done(connector: ProcessorConnector, subject: Subject, sink: _Sink) -> Any:
    def attempt() -> Any:
        try:
            return connector.collect(subject, sink)
        except Pending:
            return None

    return _wait_for(attempt)


def test_the_connector_submits_once_polls_and_collects_hashed_identities(tmp_path, secret_env, sim):
    sim.simulator.delay = 0.2
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    with pytest.raises(Pending) as pending:
        connector.collect(subject, _Sink())
    reference = subject_request_id(str(subject.case_id), "vonage")
    assert pending.value.reference == reference and pending.value.retry_after == 60
    sent = sim.simulator.cases[reference].document
    assert sent["subject_identities"][0]["identity_format"] == "sha256"
    assert MAX not in json.dumps(sent)  # only the hash left dsr
    sink = _Sink()
    result = _until_done(connector, subject, sink)
    assert result.found == {"messages": 5, "call_recordings_meta": 3}
    assert len(sink.rows["messages"]) == 5 and len(sim.simulator.cases) == 1  # one request, however often asked
    other = _until_done(connector, _subject("someone.else@example.com"), _Sink())
    assert other.found == {"messages": 0, "call_recordings_meta": 0}  # nothing for unknown subjects


def test_a_pending_request_can_be_cancelled_and_then_fails(tmp_path, secret_env, sim):
    sim.simulator.delay = 3600
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    with pytest.raises(Pending):
        connector.collect(subject, _Sink())
    assert connector.cancel(subject) is True
    assert connector.cancel(subject) is True  # cancelling twice is fine
    assert sim.simulator.cases[subject_request_id(str(subject.case_id), "vonage")].status == "cancelled"
    with pytest.raises(StoreUnavailable, match="as cancelled"):
        connector.collect(subject, _Sink())
    assert connector.cancel(_subject()) is False  # never submitted: nothing to cancel


def test_a_request_in_progress_cannot_be_cancelled(tmp_path, secret_env, sim):
    sim.simulator.delay = 0.1
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    subject = _subject()
    _until_done(connector, subject, _Sink())
    with pytest.raises(StoreUnavailable, match=r"DELETE .*/requests/.* was refused with HTTP 409: the request is"):
        connector.cancel(subject)


def test_check_asks_the_discovery_endpoint_and_needs_the_secret(tmp_path, sim, monkeypatch, closed_port):
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    monkeypatch.delenv("DSR_VONAGE_SECRET", raising=False)
    assert connector.check() == ["stores.vonage.connection.secret_env: the environment variable DSR_VONAGE_SECRET "
                                 "is not set"]
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)
    assert connector.check() == []
    down = ProcessorConnector(_store(f"http://127.0.0.1:{closed_port}/x"), ConnectorContext(tmp_path))
    [problem] = down.check()
    assert problem.startswith("stores.vonage.connection.url:") and "cannot reach" in problem


def test_a_wrong_secret_is_a_clear_refusal_naming_url_and_status(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("DSR_VONAGE_SECRET", "a-different-secret-" + "z" * 32)
    connector = ProcessorConnector(_store(sim.url), ConnectorContext(tmp_path))
    with pytest.raises(StoreUnavailable, match=rf"GET {sim.url}/requests/\S+ was refused with HTTP 403: not signed"):
        connector.collect(_subject(), _Sink())


@pytest.fixture
def fake_processor() -> Iterator[tuple[_Live, dict[str, Any]]]:
    """A processor answering whatever the test puts in ``answers`` (path -> (status, document, signed))."""
    answers: dict[str, tuple[int, dict[str, Any], bool]] = {}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        status, document, signed = answers.get(environ["PATH_INFO"], (404, {"error": {"message": "no"}}, True))
        body = encode(document)
        headers = [("Content-Type", "application/json"), *(sign(SECRET, body).items() if signed else [])]
        start_response(f"{status} X", headers)
        return [body]

    server = _Live(app)
    yield server, answers
    server.stop()


def test_answers_that_are_unsigned_elsewhere_or_failing_are_not_used(tmp_path, secret_env, fake_processor):
    server, answers = fake_processor
    connector = ProcessorConnector(_store(server.url), ConnectorContext(tmp_path))
    subject = _subject()
    path = f"/requests/{subject_request_id(str(subject.case_id), 'vonage')}"

    answers[path] = (200, {"request_status": "completed", "results_url": "/results"}, False)
    with pytest.raises(StoreUnavailable, match="not signed with the shared secret"):
        connector.collect(subject, _Sink())

    answers[path] = (200, {"request_status": "completed", "results_url": "http://198.51.100.7/results"}, True)
    with pytest.raises(StoreUnavailable, match="not on the processor's own address"):
        connector.collect(subject, _Sink())

    answers[path] = (503, {"error": {"message": "maintenance"}}, True)
    with pytest.raises(StoreUnavailable, match=r"failed with HTTP 503: maintenance"):
        connector.collect(subject, _Sink())

    answers[path] = (200, {"request_status": "failed", "reason": "account unknown"}, True)
    with pytest.raises(StoreUnavailable, match="as failed: account unknown"):
        connector.collect(subject, _Sink())

    answers[path] = (200, {"request_status": "completed", "results_url": "/results"}, True)
    answers["/results"] = (200, {"tables": {"messages": [{"id": 1}], "voicemails": [{"id": 2}]}}, True)
    result = connector.collect(subject, _Sink())
    assert result.found == {"messages": 1, "call_recordings_meta": 0}
    assert any("'voicemails'" in note for note in result.notes)


def test_the_simulator_sends_signed_callbacks_that_verify(secret_env, sim):
    received: list[tuple[Headers, bytes]] = []

    def receiver(environ: Any, start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        received.append((Headers(EnvironHeaders(environ)), environ["wsgi.input"].read(length)))
        start_response("204 No Content", [])
        return []

    server = _Live(receiver)
    try:
        sim.simulator.delay = 0.2
        rid = str(uuid.uuid4())
        document = {"subject_request_id": rid, "subject_request_type": "access",
                    "submitted_time": "2026-01-01T00:00:00Z",
                    "subject_identities": [{"identity_type": "email", "identity_value": MAX, "identity_format": "raw"}],
                    "status_callback_urls": [f"{server.url}/cb"]}
        body = encode(document)
        request = urllib.request.Request(f"{sim.url}/requests", data=body, method="POST",  # noqa: S310
                                         headers={"Content-Type": "application/json", **sign(SECRET, body)})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback http)
            assert response.status == 201
        _wait_for(lambda: len(received) >= 2)
    finally:
        server.stop()
    from dsr.stores.processor import SignatureError, verify_headers

    statuses = []
    for headers, raw in received:
        verify_headers(SECRET, raw, headers)
        with pytest.raises(SignatureError):
            verify_headers("not-the-secret", raw, headers)
        statuses.append(json.loads(raw))
    assert [s["request_status"] for s in statuses] == ["in_progress", "completed"]
    assert statuses[-1]["status_callback_url"] == f"{server.url}/cb"
    assert statuses[-1]["results_url"] == f"{sim.url}/results/{rid}"
    assert "tables" not in statuses[-1]  # OpenDSR callbacks carry no data, only where to fetch it
