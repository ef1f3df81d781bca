"""One process is a complete system: the worker thread started by the app does the work itself."""

from __future__ import annotations

import time

import pytest

from tests.helpers import submit


@pytest.fixture
def live_app(make_app):
    return make_app(embedded_worker=True, start_worker=True)


def _wait_for(client, request_id, headers, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = client.get(f"/api/v1/requests/{request_id}", headers=headers).get_json()
        if detail["status"] in ("completed", "failed"):
            return detail
        time.sleep(0.1)
    pytest.fail(f"request still {detail['status']} after {timeout} s")


def test_the_app_works_requests_off_by_itself(live_app):
    from dsr.domain.accounts import create_api_token
    from dsr.models import Role

    with live_app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, token = create_api_token(session, name="t", role=Role.DPO)
    headers = {"Authorization": f"Bearer {token}"}
    client = live_app.test_client()
    created = submit(client)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=headers).status_code == 200
    detail = _wait_for(client, created["id"], headers)
    assert detail["status"] == "completed"
    worker = live_app.extensions["dsr"].worker
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 5
    assert not any(t.is_alive() for t in worker.threads)
