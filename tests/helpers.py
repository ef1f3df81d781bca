"""Small helpers shared by tests: submitting a request and reading a package back."""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

from flask.testing import FlaskClient

MAX = "max.mustermann@example.com"


def submit(client: FlaskClient, **overrides: Any) -> dict[str, Any]:
    body = {"type": "access", "email": MAX, "locale": "de", **overrides}
    response = client.post("/api/v1/requests", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def dpo_auth(app: Any) -> dict[str, str]:
    """Headers with a new DPO token for ``app`` (for tests that build an app of their own)."""
    from dsr.domain.accounts import create_api_token
    from dsr.models import Role

    with app.extensions["dsr"].runtime.sessions.begin() as session:
        _row, token = create_api_token(session, name="tests", role=Role.DPO)
    return {"Authorization": f"Bearer {token}"}


def work_off(app: Any, logging_level: str = "ERROR") -> bool:
    """Run every job queued for ``app`` (and the jobs they enqueue) in this thread, then return."""
    from dsr.queue import DsrSimpleWorker

    context = app.extensions["dsr"]
    worker = DsrSimpleWorker([context.queue], connection=context.queue.connection, runtime=context.runtime)
    return worker.work(burst=True, logging_level=logging_level)


def tell_by_hand(app: Any, client: FlaskClient, auth: dict[str, str], request_id: str, *,
                 run: bool = True) -> list[str]:
    """Complete every Art. 19 notice of the request that waits for a person (``notify: manual``) as the
    DPO office would, with a note and a file, then run the jobs (unless ``run`` is false: workers of
    their own run them). Returns the recipients so told."""
    detail = client.get(f"/api/v1/requests/{request_id}", headers=auth).get_json()
    told = []
    for task in detail["tasks"]:
        if task["action"] == "notify" and task["status"] == "waiting":
            answer = client.post(f"/api/v1/requests/{request_id}/tasks/{task['id']}/complete", headers=auth,
                                 data={"note": f"told {task['store']} by letter",
                                       "evidence": (io.BytesIO(b"%PDF-1.4 letter"), "letter.pdf")},
                                 content_type="multipart/form-data")
            assert answer.status_code == 200, answer.get_json()
            told.append(task["store"])
    if run:
        work_off(app)
    return told


def without_processor(raw: dict[str, Any]) -> dict[str, Any]:
    """The default map (as loaded from YAML) without the Vonage store: tests that are not about
    processors need no simulator. tests/integration/test_processor_store.py runs it with one."""
    raw = {**raw, "stores": {k: v for k, v in raw["stores"].items() if k != "vonage"}}
    raw["recipients"] = {**raw["recipients"], "vonage": {**raw["recipients"]["vonage"], "notify": {"via": "manual"}}}
    return raw


def read_zip(data: bytes) -> dict[str, list[dict[str, str]]]:
    """The data tables (CSV) by archive path, each as a list of row dicts (not documentation/*.csv)."""
    tables = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith(".csv") and not name.startswith("documentation/"):
                text = archive.read(name).decode("utf-8-sig")
                tables[name] = list(csv.DictReader(io.StringIO(text)))
    return tables
