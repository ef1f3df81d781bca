"""GET /api/v1/requests: the office's list, filtered, earliest legal deadline first, in keyset pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dsr.domain import intake
from dsr.models import Request, RequestStatus, RequestType, utcnow

NOW = utcnow()


def _fill(app: Any) -> list[Request]:
    """36 requests received over the last 60 days: every right, several statuses, two subjects."""
    rt = app.extensions["dsr"].runtime
    made = []
    kinds = list(RequestType)
    with rt.sessions.begin() as session:
        for n in range(36):
            received = NOW - timedelta(days=60 - n * 1.5, hours=n % 5)
            submission = intake.Submission(kinds[n % len(kinds)], f"person{n % 2}@example.com", "de")
            request = intake.submit(session, submission, received_at=received, policy=rt.deadlines,
                                    datamap_version="test")
            request.status = [RequestStatus.RECEIVED, RequestStatus.IN_PROGRESS, RequestStatus.COMPLETED][n % 3].value
            made.append(request)
        session.flush()
        session.expunge_all()
    return made


def _all_pages(client: Any, auth: dict[str, str], query: str = "", limit: int = 7) -> list[dict[str, Any]]:
    items, after = [], None
    for _ in range(100):
        url = f"/api/v1/requests?limit={limit}{query}" + (f"&after={after}" if after else "")
        body = client.get(url, headers=auth).get_json()
        assert len(body["items"]) <= limit
        items += body["items"]
        after = body["next"]
        if after is None:
            return items
    raise AssertionError("the pages never ended")


def test_every_request_once_in_deadline_order_across_pages(app, client, auth):
    made = _fill(app)
    items = _all_pages(client, auth)
    assert sorted(i["id"] for i in items) == sorted(str(r.id) for r in made)  # each exactly once
    keys = [(i["due_at"], i["id"]) for i in items]
    assert keys == sorted(keys)
    # A request arriving while someone pages appears on a later page, and no row repeats.
    first = client.get("/api/v1/requests?limit=5", headers=auth).get_json()
    _fill(app)
    rest = _all_pages(client, auth, limit=50)
    assert len(rest) == 72 and len({i["id"] for i in rest}) == 72
    after_first = client.get(f"/api/v1/requests?limit=200&after={first['next']}", headers=auth).get_json()["items"]
    assert not {i["id"] for i in after_first} & {i["id"] for i in first["items"]}


def test_filters_by_status_right_deadline_and_search(app, client, auth):
    made = _fill(app)
    closed = (RequestStatus.COMPLETED.value, RequestStatus.REJECTED.value)

    def ids(query: str) -> set[str]:
        return {i["id"] for i in _all_pages(client, auth, query, limit=200)}

    assert ids("&status=completed") == {str(r.id) for r in made if r.status == "completed"}
    assert ids("&status=received&status=in_progress") == {str(r.id) for r in made if r.status != "completed"}
    assert ids("&type=erasure") == {str(r.id) for r in made if r.type == "erasure"}
    overdue = {str(r.id) for r in made if r.status not in closed and r.due_at <= NOW}
    assert overdue and ids("&overdue=true") == overdue
    assert ids("&overdue=false") == {str(r.id) for r in made} - overdue
    soon = {str(r.id) for r in made if r.status not in closed and r.due_at <= NOW + timedelta(days=7)}
    assert soon > overdue and ids("&due_within_days=7") <= soon | overdue and ids("&due_within_days=7") == soon
    some = made[5]
    assert ids(f"&q={some.reference.lower()}") == {str(some.id)}
    assert ids("&q=PERSON1@example.com") == {str(r.id) for r in made if r.email == "person1@example.com"}
    assert ids("&q=nobody@example.com") == set()
    page = client.get("/api/v1/requests?overdue=true&limit=200", headers=auth).get_json()["items"]
    assert all(i["overdue"] and i["past_target"] for i in page)


def test_bad_parameters_are_named_and_a_token_is_required(app, client, auth):
    assert client.get("/api/v1/requests").status_code == 401
    for query, field in (("status=lost", "status"), ("type=opinion", "type"), ("limit=0", "limit"),
                         ("limit=1000", "limit"), ("due_within_days=-1", "due_within_days"), ("after=%%%", "after"),
                         ("colour=red", "colour")):
        answer = client.get(f"/api/v1/requests?{query}", headers=auth)
        assert answer.status_code == 422, (query, answer.get_json())
        assert field in answer.get_json()["errors"]["query"], (query, answer.get_json())
    forged = "W1siMjAyNi0wMS0wMVQwMDowMDowMCIsICJ4Il1d"  # base64 of a cursor with a bad id
    assert client.get(f"/api/v1/requests?after={forged}", headers=auth).status_code == 422
    assert datetime.now(UTC) > NOW
