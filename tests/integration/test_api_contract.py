"""The JSON API contract (v1), call by call: what goes in, what comes out, and what is refused.

The contract: ``POST /api/v1/requests`` is public and answers ``202 {id, reference, status, due_at}``;
bad input is ``400``/``422`` naming each bad field, and nothing is stored. Everything about a case
(detail, verify, artifacts) needs ``Authorization: Bearer <token>``; a missing or wrong token gets
``401`` and no data. ``GET /api/v1/openapi.json`` documents all of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from dsr.domain.deadlines import DeadlinePolicy
from dsr.models import ApiToken, Artifact, AuditEvent, OutboxJob, ReferenceCounter, Request
from dsr.web import api as api_module
from tests.helpers import MAX, submit

TYPES = ["access", "portability", "erasure", "rectification", "restriction", "objection"]
REFERENCE = re.compile(r"^DSR-(\d{4})-(\d{6})$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


# --- helpers ------------------------------------------------------------------------------------


def _aware(value: str) -> datetime:
    """An ISO 8601 datetime that carries a UTC offset (a naive one fails the test)."""
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value!r} has no UTC offset"
    return parsed


def _counts(app: Flask) -> dict[str, int]:
    """Rows in every table an intake writes to."""
    with app.extensions["dsr"].runtime.sessions() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Request, AuditEvent, OutboxJob, ReferenceCounter)
        }


def _path(url: str) -> str:
    """The path and query of an absolute URL, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _completed(client: FlaskClient, auth: dict[str, str], run_jobs: Any, **overrides: Any) -> dict[str, Any]:
    """Submit, verify and let the worker finish an access request; return the submit answer."""
    created = submit(client, **overrides)
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    run_jobs()
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    return created


def _dpo_call(client: FlaskClient, call: str, request_id: str, headers: dict[str, str]) -> TestResponse:
    if call == "detail":
        return client.get(f"/api/v1/requests/{request_id}", headers=headers)
    if call == "verify":
        return client.post(f"/api/v1/requests/{request_id}/verify", headers=headers)
    return client.get(f"/api/v1/requests/{request_id}/artifacts", headers=headers)


def _openapi(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


# --- 1. intake ----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_type", TYPES)
def test_each_request_type_is_accepted_with_a_reference_and_a_due_date(client, auth, request_type):
    response = client.post("/api/v1/requests",
                           json={"type": request_type, "email": MAX, "locale": "de", "details": {}})

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"id", "reference", "status", "due_at"}
    uuid.UUID(body["id"])
    assert REFERENCE.match(body["reference"]), body["reference"]
    assert body["status"] == "received"
    due_at = _aware(body["due_at"])

    detail = client.get(f"/api/v1/requests/{body['id']}", headers=auth).get_json()
    assert detail["type"] == request_type
    received_at = _aware(detail["received_at"])
    assert due_at > received_at
    # The reference is numbered in the year of receipt, counted in the controller's time zone.
    assert int(REFERENCE.match(body["reference"]).group(1)) == DeadlinePolicy().local_date(received_at).year


def test_references_are_consecutive_in_the_order_of_receipt(client):
    numbers = []
    for request_type in TYPES:
        reference = submit(client, type=request_type)["reference"]
        match = REFERENCE.match(reference)
        assert match, reference
        numbers.append(int(match.group(2)))
    assert numbers == list(range(1, len(TYPES) + 1))


def test_locale_and_details_are_optional(client, auth):
    created = client.post("/api/v1/requests", json={"type": "access", "email": MAX})
    assert created.status_code == 202
    detail = client.get(f"/api/v1/requests/{created.get_json()['id']}", headers=auth).get_json()
    assert detail["locale"] == "en"
    assert detail["details"] == {}


# --- 2. bad input -------------------------------------------------------------------------------

VALID = {"type": "access", "email": MAX, "locale": "de", "details": {}}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


DEEP = json.loads("[" * 40 + "]" * 40)  # parsable, but deeper than any field of the API nests
LONG_EMAIL = "a" * (400 - len("@example.com")) + "@example.com"

BAD_INPUT = [
    # (post kwargs, accepted status codes, fields the error must name exactly)
    pytest.param({"json": _without("type")}, {422}, {"type"}, id="missing-type"),
    pytest.param({"json": {**VALID, "type": "delete_everything"}}, {422}, {"type"}, id="unknown-type"),
    pytest.param({"json": _without("email")}, {422}, {"email"}, id="missing-email"),
    pytest.param({"json": {**VALID, "email": "not-an-email"}}, {422}, {"email"}, id="malformed-email"),
    pytest.param({"json": {**VALID, "email": LONG_EMAIL}}, {422}, {"email"}, id="email-400-chars"),
    pytest.param({"json": {**VALID, "locale": "fr"}}, {422}, {"locale"}, id="unsupported-locale"),
    pytest.param({"json": {**VALID, "details": ["a", "list"]}}, {422}, {"details"}, id="details-not-an-object"),
    pytest.param({"json": {**VALID, "admin": True}}, {422}, {"admin"}, id="unknown-extra-field"),
    pytest.param({"json": {**VALID, "type": 15}}, {422}, {"type"}, id="type-is-a-number"),
    pytest.param({"json": {}}, {422}, {"type", "email"}, id="empty-object"),
    pytest.param({"json": "just a string"}, {422}, {"_schema"}, id="json-string-not-object"),
    pytest.param({"data": '{"type": "access", "email": ', "content_type": "application/json"}, {400}, None,
                 id="malformed-json"),
    # Nested ~1,000 levels: the parser's recursion ran out of stack and the answer was a 500.
    pytest.param({"data": "[" * 1000 + "]" * 1000, "content_type": "application/json"}, {400}, None,
                 id="arrays-nested-1000-deep"),
    pytest.param({"data": '{"a":' * 1000 + "1" + "}" * 1000, "content_type": "application/json"}, {400}, None,
                 id="objects-nested-1000-deep"),
    pytest.param({"data": json.dumps({**VALID, "details": {"a": DEEP}}), "content_type": "application/json"},
                 {400}, None, id="details-nested-past-the-limit"),
    pytest.param({"data": b'{"type": "\xff"}', "content_type": "application/json"}, {400}, None, id="not-utf-8"),
]


@pytest.mark.parametrize(("post", "statuses", "fields"), BAD_INPUT)
def test_bad_input_is_refused_naming_each_bad_field_and_nothing_is_stored(client, app, post, statuses, fields):
    before = _counts(app)

    response = client.post("/api/v1/requests", **post)

    assert response.status_code in statuses, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["code"] == response.status_code
    assert "json" in body["errors"], body
    if fields is not None:
        assert set(body["errors"]["json"]) == fields, body
    elif response.status_code == 422:
        assert body["errors"]["json"], body  # still names what is wrong
    assert _counts(app) == before


JSON_CALLS = [  # (method, path) of every call that reads a JSON body; the ids need not exist
    ("POST", "/api/v1/requests"),
    ("POST", f"/api/v1/requests/{UNKNOWN_ID}/verify"),
    ("PUT", f"/api/v1/requests/{UNKNOWN_ID}/delivery"),
    ("POST", f"/api/v1/requests/{UNKNOWN_ID}/package-password"),
]


@pytest.mark.parametrize(("method", "path"), JSON_CALLS)
@pytest.mark.parametrize("body", ["[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000, '{"a": ',
                                  json.dumps({"a": DEEP})], ids=["arrays", "objects", "truncated", "past-limit"])
def test_bad_json_is_a_400_naming_the_problem_on_every_json_call(client, auth, method, path, body):
    response = client.open(path, method=method, data=body, content_type="application/json", headers=auth)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    error = response.get_json()
    assert error["code"] == 400
    assert "JSON" in error["message"] and error["errors"]["json"] == [error["message"]], error


def test_get_json_refuses_a_deep_body_with_a_400_too(app):
    """Handlers that read the body themselves (``request.get_json``) go through the same provider."""
    from flask import request
    from werkzeug.exceptions import BadRequest

    deep = app.test_request_context("/", method="POST", data="[" * 1000 + "]" * 1000, content_type="application/json")
    with deep, pytest.raises(BadRequest) as caught:
        request.get_json()
    assert caught.value.code == 400
    assert "nested deeper than" in caught.value.data["message"]  # type: ignore[attr-defined]


def test_a_body_that_is_not_json_is_refused_as_such(client, app):
    before = _counts(app)
    response = client.post("/api/v1/requests", data="type=access&email=x", content_type="text/plain")
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.get_json()["message"]
    assert _counts(app) == before


def test_a_refused_submission_uses_up_no_reference_number(client):
    assert client.post("/api/v1/requests", json={**VALID, "locale": "fr"}).status_code == 422
    assert client.post("/api/v1/requests", json={}).status_code == 422
    assert submit(client)["reference"].endswith("-000001")


def test_details_keys_longer_than_100_characters_are_refused(client, app):
    before = _counts(app)
    response = client.post("/api/v1/requests", json={**VALID, "details": {"k" * 101: "v"}})
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == {"details"}
    assert _counts(app) == before


def test_a_body_over_one_megabyte_is_refused_with_a_json_error(client, app):
    before = _counts(app)
    response = client.post("/api/v1/requests", json={**VALID, "details": {"note": "x" * (1024 * 1024)}})
    assert response.status_code == 413
    assert response.is_json and response.get_json()["code"] == 413
    assert _counts(app) == before


# --- 3. authentication --------------------------------------------------------------------------

DPO_CALLS = ["detail", "verify", "artifacts"]


def _revoke(app: Flask, secret: str) -> None:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        result = session.execute(update(ApiToken).where(ApiToken.token_sha256 == digest)
                                 .values(revoked_at=datetime.now(UTC)))
        assert result.rowcount == 1


BAD_CREDENTIALS = [
    pytest.param(lambda token: {}, id="no-header"),
    pytest.param(lambda token: {"Authorization": "Bearer wrong"}, id="bearer-wrong"),
    pytest.param(lambda token: {"Authorization": "Bearer dsr_" + secrets.token_urlsafe(32)}, id="bearer-random-dsr"),
    pytest.param(lambda token: {"Authorization": "Basic ZHBvOnNlY3JldA=="}, id="basic"),
    pytest.param(lambda token: {"Authorization": f"Basic {token}"}, id="valid-token-wrong-scheme"),
    pytest.param(lambda token: {"Authorization": "Bearer "}, id="bearer-empty"),
    pytest.param(lambda token: {"Authorization": f"Bearer {token}x"}, id="bearer-altered-token"),
]


@pytest.mark.parametrize("call", DPO_CALLS)
@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
def test_dpo_calls_without_a_valid_token_get_401_and_no_data(client, app, token, call, credentials):
    created = submit(client)

    response = _dpo_call(client, call, created["id"], credentials(token))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    text = response.get_data(as_text=True)
    assert created["reference"] not in text and MAX not in text
    assert set(response.get_json()) <= {"code", "status", "message"}
    # ... and no effect: the request still waits for verification.
    with app.extensions["dsr"].runtime.sessions() as session:
        assert session.get(Request, uuid.UUID(created["id"])).status == "received"


@pytest.mark.parametrize("call", DPO_CALLS)
def test_a_revoked_token_gets_401(client, app, token, call):
    created = submit(client)
    _revoke(app, token)

    response = _dpo_call(client, call, created["id"], {"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert created["reference"] not in response.get_data(as_text=True)


@pytest.mark.parametrize("call", DPO_CALLS)
def test_a_valid_token_is_let_through(client, auth, call):
    created = submit(client)
    assert _dpo_call(client, call, created["id"], auth).status_code == 200


def test_the_bearer_scheme_name_is_case_insensitive(client, token):
    created = submit(client)
    response = client.get(f"/api/v1/requests/{created['id']}", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


def test_artifact_list_of_a_completed_request_needs_a_token(client, auth, run_jobs):
    created = _completed(client, auth, run_jobs)
    response = client.get(f"/api/v1/requests/{created['id']}/artifacts")
    assert response.status_code == 401
    text = response.get_data(as_text=True)
    assert "download" not in text and "sig=" not in text and "sha256" not in text


@pytest.mark.parametrize("post", [
    pytest.param({"json": {"method": ""}}, id="invalid-method"),
    pytest.param({"json": {"unexpected": 1}}, id="unknown-field"),
    pytest.param({"data": "{not json", "content_type": "application/json"}, id="malformed-json"),
])
def test_verify_without_a_token_is_401_whatever_the_body(client, post):
    created = submit(client)
    response = client.post(f"/api/v1/requests/{created['id']}/verify", **post)
    assert response.status_code == 401


# --- 4. unknown ids -----------------------------------------------------------------------------


@pytest.mark.parametrize("call", DPO_CALLS)
@pytest.mark.parametrize("request_id", [UNKNOWN_ID, "not-a-uuid"], ids=["unknown-uuid", "malformed-id"])
def test_unknown_or_malformed_request_ids_get_a_json_404(client, auth, call, request_id):
    response = _dpo_call(client, call, request_id, auth)
    assert response.status_code == 404
    assert response.is_json and response.get_json()["code"] == 404


# --- 5. verify ----------------------------------------------------------------------------------


def test_verify_starts_the_work_and_a_second_verify_is_a_conflict(client, auth):
    created = submit(client)

    first = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    assert first.status_code == 200
    assert first.get_json()["status"] == "verified"
    assert first.get_json()["reference"] == created["reference"]

    second = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    assert second.status_code == 409
    assert second.is_json and second.get_json()["message"]
    assert "verified" in second.get_json()["message"]

    timeline = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["timeline"]
    assert [e["action"] for e in timeline].count("identity.verified") == 1


def test_verify_on_a_completed_request_is_a_conflict(client, auth, run_jobs):
    created = _completed(client, auth, run_jobs)

    response = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)

    assert response.status_code == 409
    assert "completed" in response.get_json()["message"]
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed"


def test_verify_records_the_method_given(client, auth):
    created = submit(client)
    response = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth, json={"method": "video-call"})
    assert response.status_code == 200
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["verification_method"] == "video-call"
    event = next(e for e in detail["timeline"] if e["action"] == "identity.verified")
    assert event["data"] == {"method": "video-call"}
    assert event["actor"] == "token:tests"


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({"method": ""}, "method", id="empty-method"),
    pytest.param({"method": "m" * 41}, "method", id="method-too-long"),
    pytest.param({"approved": True}, "approved", id="unknown-field"),
])
def test_verify_with_a_bad_body_is_422_and_changes_nothing(client, auth, body, field):
    created = submit(client)
    response = client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth, json=body)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == {field}
    assert client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["status"] == "received"


# --- 6. request detail --------------------------------------------------------------------------

DETAIL_KEYS = {"id", "reference", "type", "status", "email", "locale", "received_at", "due_at", "legal_end",
               "target_on", "tasks", "timeline"}


def test_request_detail_after_the_full_flow_has_status_tasks_and_timeline(client, auth, run_jobs):
    details = {"note": "Bitte alles zu Vertrag 4711-Hauptstraße senden"}
    created = _completed(client, auth, run_jobs, details=details)

    response = client.get(f"/api/v1/requests/{created['id']}", headers=auth)

    assert response.status_code == 200
    detail = response.get_json()
    assert set(detail) >= DETAIL_KEYS
    assert detail["id"] == created["id"]
    assert detail["reference"] == created["reference"]
    assert (detail["type"], detail["status"], detail["email"], detail["locale"]) == ("access", "completed", MAX, "de")
    assert detail["details"] == details
    assert detail["due_at"] == created["due_at"]
    _aware(detail["received_at"])
    date.fromisoformat(detail["legal_end"])
    date.fromisoformat(detail["target_on"])

    assert detail["tasks"], "an access request plans at least one task"
    for task in detail["tasks"]:
        assert {"store", "action", "status", "attempts", "counts"} <= set(task)
        assert (task["action"], task["status"]) == ("collect", "done")
        assert task["attempts"] >= 1
        assert isinstance(task["counts"], dict)

    timeline = detail["timeline"]
    seqs = [event["seq"] for event in timeline]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for event in timeline:
        assert {"at", "actor", "action"} <= set(event)
        assert event["actor"] and event["action"]
        _aware(event["at"])
    assert timeline[0]["action"] == "request.received"
    assert timeline[-1]["action"] == "request.completed"


def test_the_timeline_holds_references_not_the_subjects_data(client, auth, run_jobs):
    """The logging dilemma: the audit trail must not become a second copy of personal data."""
    email = "erika.musterfrau@example.org"
    secret_detail = "Geheimweg 12, 50667 Köln"
    created = _completed(client, auth, run_jobs, email=email, details={"address": secret_detail})

    timeline = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["timeline"]

    assert timeline
    for event in timeline:
        data = json.dumps(event.get("data", {}), ensure_ascii=False).lower()
        assert email not in data, event
        assert secret_detail.lower() not in data, event
        assert event["actor"].lower() != email


# --- 7. deadlines -------------------------------------------------------------------------------


def test_due_at_and_legal_end_follow_the_deadline_policy(client, auth):
    created = submit(client)
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()

    expected = DeadlinePolicy().compute(_aware(detail["received_at"]))

    assert _aware(created["due_at"]) == expected.due_at
    assert _aware(detail["due_at"]) == expected.due_at
    assert date.fromisoformat(detail["legal_end"]) == expected.legal_end
    assert date.fromisoformat(detail["target_on"]) == expected.target


@pytest.mark.parametrize(("received_at", "reference", "legal_end", "target_on", "due_at"), [
    # 23:30 UTC on New Year's Eve is already 1 January in Berlin: a 2027 case, ending on Monday 1 Feb.
    pytest.param("2026-12-31T23:30:00+00:00", "DSR-2027-000001", "2027-02-01", "2027-01-27",
                 "2027-02-01T23:00:00+00:00", id="new-year-in-berlin"),
    # Received 25 Nov: the month ends on Christmas Day, rolls over the 26th and the weekend to Monday.
    pytest.param("2026-11-25T10:00:00+00:00", "DSR-2026-000001", "2026-12-28", "2026-12-20",
                 "2026-12-28T23:00:00+00:00", id="rolled-over-christmas"),
    # Received 31 Jan (Berlin): the period ends on the last day of February (a Sunday) -> Monday 1 March.
    pytest.param("2027-01-30T23:30:00+00:00", "DSR-2027-000001", "2027-03-01", "2027-02-23",
                 "2027-03-01T23:00:00+00:00", id="short-month-then-weekend"),
    # Received on the night of the spring DST change: the end of day is 22:00 UTC in summer time.
    pytest.param("2026-03-28T23:30:00+00:00", "DSR-2026-000001", "2026-04-29", "2026-04-24",
                 "2026-04-29T22:00:00+00:00", id="summer-time"),
])
def test_deadline_of_a_request_received_at_a_given_instant(client, auth, monkeypatch, received_at, reference,
                                                           legal_end, target_on, due_at):
    moment = datetime.fromisoformat(received_at)
    monkeypatch.setattr(api_module, "utcnow", lambda: moment)

    created = submit(client)
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()

    assert created["reference"] == reference
    assert _aware(detail["received_at"]) == moment
    assert (detail["legal_end"], detail["target_on"]) == (legal_end, target_on)
    assert _aware(created["due_at"]) == _aware(detail["due_at"]) == datetime.fromisoformat(due_at)


# --- 8. OpenAPI ---------------------------------------------------------------------------------

DPO_OPERATIONS = [
    ("/api/v1/requests/{request_id}", "get"),
    ("/api/v1/requests/{request_id}/verify", "post"),
    ("/api/v1/requests/{request_id}/artifacts", "get"),
    ("/api/v1/artifacts/{artifact_id}/links", "post"),
]


def test_openapi_document_lists_every_call(client):
    doc = _openapi(client)
    assert doc["openapi"].startswith("3.")
    assert {
        "/api/v1/requests",
        "/api/v1/requests/{request_id}",
        "/api/v1/requests/{request_id}/verify",
        "/api/v1/requests/{request_id}/artifacts",
        "/api/v1/artifacts/{artifact_id}/download",
        "/api/v1/artifacts/{artifact_id}/links",
    } <= set(doc["paths"])
    assert "post" in doc["paths"]["/api/v1/requests"]


def test_openapi_dpo_operations_declare_bearer_auth_and_intake_does_not(client):
    doc = _openapi(client)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    for path, method in DPO_OPERATIONS:
        assert {"bearerAuth": []} in doc["paths"][path][method].get("security", []), (path, method)
    assert not doc["paths"]["/api/v1/requests"]["post"].get("security")
    assert not doc.get("security"), "a global security requirement would cover the public intake too"


def test_openapi_request_body_of_intake_lists_the_six_types(client):
    doc = _openapi(client)
    body = doc["paths"]["/api/v1/requests"]["post"]["requestBody"]
    assert body["required"] is True
    shapes = [doc["components"]["schemas"][one["$ref"].rsplit("/", 1)[-1]]
              for one in body["content"]["application/json"]["schema"]["oneOf"]]
    # two shapes (answered with a package or not) that together take each type once
    assert sorted(t for schema in shapes for t in schema["properties"]["type"]["enum"]) == sorted(TYPES)
    for schema in shapes:
        assert sorted(schema["properties"]["locale"]["enum"]) == ["de", "en"]
        assert set(schema["required"]) == {"type", "email"}
        assert schema.get("additionalProperties") is False
    assert "202" in doc["paths"]["/api/v1/requests"]["post"]["responses"]
    assert "422" in doc["paths"]["/api/v1/requests"]["post"]["responses"]


@pytest.mark.parametrize(("path", "method"), [
    pytest.param(*DPO_OPERATIONS[0], id="detail"),
    pytest.param(*DPO_OPERATIONS[1], id="verify"),
    pytest.param(*DPO_OPERATIONS[2], id="artifacts"),
])
def test_openapi_documents_401_and_404_of_every_dpo_operation(client, path, method):
    responses = _openapi(client)["paths"][path][method]["responses"]
    assert {"401", "404"} <= set(responses), sorted(responses)


def test_openapi_document_is_valid(client):
    import openapi_spec_validator

    openapi_spec_validator.validate(_openapi(client))


def test_responses_match_the_schemas_the_openapi_document_declares(client, auth, run_jobs):
    import openapi_schema_validator as oas
    doc = _openapi(client)

    def check(instance: Any, schema: dict[str, Any]) -> None:
        oas.validate(instance, {**schema, "components": doc["components"]}, cls=oas.OAS30Validator,
                     format_checker=oas.oas30_format_checker)

    def response_schema(path: str, method: str, status: str) -> dict[str, Any]:
        return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    created = client.post("/api/v1/requests", json=VALID)
    check(created.get_json(), response_schema("/api/v1/requests", "post", "202"))
    request_id = created.get_json()["id"]
    verified = client.post(f"/api/v1/requests/{request_id}/verify", headers=auth)
    check(verified.get_json(), response_schema("/api/v1/requests/{request_id}/verify", "post", "200"))
    run_jobs()
    detail = client.get(f"/api/v1/requests/{request_id}", headers=auth)
    check(detail.get_json(), response_schema("/api/v1/requests/{request_id}", "get", "200"))
    artifacts = client.get(f"/api/v1/requests/{request_id}/artifacts", headers=auth)
    check(artifacts.get_json(), response_schema("/api/v1/requests/{request_id}/artifacts", "get", "200"))
    assert artifacts.get_json()

    error = {"$ref": "#/components/schemas/Error"}
    check(client.post("/api/v1/requests", json={}).get_json(), error)
    check(client.get(f"/api/v1/requests/{request_id}").get_json(), error)
    check(client.get(f"/api/v1/requests/{UNKNOWN_ID}", headers=auth).get_json(), error)


# --- 9. artifacts -------------------------------------------------------------------------------


def test_a_request_not_yet_completed_has_no_artifacts(client, auth):
    created = submit(client)
    response = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == []

    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    assert client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json() == []


def test_artifacts_of_a_completed_request_carry_checksum_size_and_a_download_link(client, auth, run_jobs):
    created = _completed(client, auth, run_jobs)

    response = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth)

    assert response.status_code == 200
    artifacts = response.get_json()
    assert len(artifacts) == 1
    for artifact in artifacts:
        assert {"id", "kind", "filename", "size", "sha256", "expires_at", "downloads", "download_url"} <= set(artifact)
        uuid.UUID(artifact["id"])
        assert artifact["kind"] == "package"
        assert artifact["filename"].startswith(created["reference"])
        assert isinstance(artifact["size"], int) and artifact["size"] > 0
        assert SHA256.match(artifact["sha256"]), artifact["sha256"]
        assert _aware(artifact["expires_at"]) > datetime.now(UTC)
        assert artifact["downloads"] == 0
        assert f"/api/v1/artifacts/{artifact['id']}/download?sig=" in artifact["download_url"]

        download = client.get(_path(artifact["download_url"]))  # the signed link needs no token
        assert download.status_code == 200
        assert len(download.data) == artifact["size"]
        assert hashlib.sha256(download.data).hexdigest() == artifact["sha256"]


# --- 10. expiry ---------------------------------------------------------------------------------


def test_an_expired_artifact_is_gone_410_and_no_bytes_are_sent(client, app, auth, run_jobs):
    created = _completed(client, auth, run_jobs)
    [artifact] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    with app.extensions["dsr"].runtime.sessions.begin() as session:
        session.execute(update(Artifact).where(Artifact.id == uuid.UUID(artifact["id"]))
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))

    response = client.get(_path(artifact["download_url"]))

    assert response.status_code == 410
    assert response.is_json and response.get_json()["code"] == 410
    assert not response.data.startswith(b"PK")  # no ZIP bytes
    assert "attachment" not in response.headers.get("Content-Disposition", "")
    [after] = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    assert after["downloads"] == 0
    timeline = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["timeline"]
    assert "artifact.downloaded" not in [e["action"] for e in timeline]


# --- the contract and the server agree (issue 12.10) --------------------------------------------


def test_a_token_is_checked_before_the_body_s_content_type(client):
    """Who is asking comes first: a body of the wrong type without a token is a 401, not a 415."""
    path = f"/api/v1/requests/{uuid.uuid4()}/tasks/{uuid.uuid4()}/complete"
    for body in ({"data": {"note": "searched"}},
                 {"data": "note=x", "content_type": "application/x-www-form-urlencoded"},
                 {"data": "<note/>", "content_type": "application/xml"}):
        response = client.post(path, **body)
        assert response.status_code == 401, body
        assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    verify = client.post(f"/api/v1/requests/{uuid.uuid4()}/verify", data="method=x",
                         content_type="application/x-www-form-urlencoded")
    assert verify.status_code == 401


def test_completing_a_task_is_documented_as_the_multipart_form_it_takes(client, auth):
    doc = _openapi(client)
    body = doc["paths"]["/api/v1/requests/{request_id}/tasks/{task_id}/complete"]["post"]["requestBody"]
    assert list(body["content"]) == ["multipart/form-data"]
    schema = doc["components"]["schemas"][body["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    assert schema["properties"]["evidence"]["items"] == {"type": "string", "format": "binary"}
    # With a token, a url-encoded form is named as the wrong type for this call.
    path = f"/api/v1/requests/{uuid.uuid4()}/tasks/{uuid.uuid4()}/complete"
    refused = client.post(path, data="note=x", content_type="application/x-www-form-urlencoded", headers=auth)
    assert refused.status_code == 415 and "multipart/form-data" in refused.get_json()["message"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("put", "/api/v1/requests", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("delete", "/api/v1/requests/00000000-0000-4000-8000-000000000000", {"GET", "HEAD", "OPTIONS"}),
    ("get", "/api/v1/requests/00000000-0000-4000-8000-000000000000/verify", {"POST", "OPTIONS"}),
])
def test_405_names_the_allowed_methods(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    assert response.get_json()["code"] == 405


@pytest.mark.parametrize(("body", "accepted"), [
    ({"type": "access", "email": MAX, "delivery": {"password_protected": True}}, True),
    ({"type": "portability", "email": MAX, "delivery": {"password_protected": False}}, True),
    ({"type": "erasure", "email": MAX, "delivery": {"password_protected": False}}, True),
    ({"type": "erasure", "email": MAX}, True),
    ({"type": "erasure", "email": MAX, "delivery": {"password_protected": True}}, False),
    ({"type": "objection", "email": MAX, "delivery": {"password_protected": True}}, False),
])
def test_what_the_contract_allows_the_server_accepts_and_nothing_else(client, body, accepted):
    """A client generated from the OpenAPI document must work: the submission's documented schema
    refuses exactly what the server refuses (password protection only for answers that are packages)."""
    from openapi_schema_validator import OAS30Validator

    doc = _openapi(client)
    schema = doc["paths"]["/api/v1/requests"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = not list(OAS30Validator(_inlined(schema, doc)).iter_errors(body))
    assert valid == accepted
    assert (client.post("/api/v1/requests", json=body).status_code == 202) == accepted


def _inlined(node: Any, doc: dict[str, Any]) -> Any:
    """A schema with its $refs to the document's components replaced by what they point to."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]], doc)
        return {k: _inlined(v, doc) for k, v in node.items()}
    if isinstance(node, list):
        return [_inlined(v, doc) for v in node]
    return node
