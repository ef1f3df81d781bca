"""AT-15: in call records a withheld caller number never appears, other parties' numbers are shortened
by three digits, counselling lines are hidden, the subject's own numbers are shown, and the subject's
choice of full numbers is honoured for their outgoing calls; each rule is explained in the report."""

from __future__ import annotations

import io
import uuid
import zipfile

from sqlalchemy import select

from dsr.db import make_engine
from dsr.demo import portal
from dsr.exports.csv_files import unguarded
from tests.acceptance.test_access_export import _answer, _report_text
from tests.helpers import MAX, submit, work_off


def _calls(backend) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    """Max's call records straight from the store, by id."""
    engine = make_engine(backend.store_url)
    with engine.connect() as conn:
        t = portal.call_records
        rows = conn.execute(select(t).where(t.c.account_id == 1)).mappings().all()
    engine.dispose()
    return {str(r["id"]): dict(r) for r in rows}


def _exported(package: bytes) -> dict[str, dict[str, str]]:
    import csv

    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        text = archive.read("portal_db/call_records.csv").decode("utf-8-sig")
        everything = b"".join(archive.read(n) for n in archive.namelist() if not n.endswith(".pdf"))
    assert portal.COUNSELLING_LINE.encode() not in everything  # nowhere in any file of the package
    # compared as stored: without the CSV's formula guard (a leading ' before +49...)
    return {r["id"]: {k: unguarded(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))}


def test_AT_15_call_records_disclose_each_number_by_its_rule(app, backend):
    stored = _calls(backend)
    kinds = {"withheld": [i for i, r in stored.items() if r["caller_withheld"]],
             "counselling": [i for i, r in stored.items() if r["to_number"] == portal.COUNSELLING_LINE],
             "outbound": [i for i, r in stored.items() if r["direction"] == "outbound"],
             "inbound": [i for i, r in stored.items() if r["direction"] == "inbound"]}
    assert all(kinds.values()), kinds  # the demo data has every kind of record

    detail, package = _answer(app, email=MAX)
    rows = _exported(package)
    assert set(rows) == set(stored)
    for i, record in stored.items():
        row = rows[i]
        if record["direction"] == "inbound":
            assert row["to_number"] == record["to_number"]  # their own number, in full
            if record["caller_withheld"]:
                assert row["from_number"] == "withheld"
            else:
                assert row["from_number"] == str(record["from_number"])[:-3] + "xxx"
        else:
            assert row["from_number"] == record["from_number"]  # their own number
            if record["to_number"] == portal.COUNSELLING_LINE:
                assert row["to_number"] == "withheld"
            else:
                assert row["to_number"] == str(record["to_number"])[:-3] + "xxx"
    text = _report_text(package)
    assert "withheld their number" in text and "counselling lines are not shown" in text

    # The subject asks for the full numbers they called: honoured, but never a counselling line.
    full, auth = app.test_client(), detail["auth"]
    created = submit(full, details={"full_numbers": True}, locale="en")
    full.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    url = full.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    full_package = full.get(url.replace("http://localhost", "")).data
    rows = _exported(full_package)
    for i in kinds["outbound"]:
        expected = "withheld" if i in kinds["counselling"] else stored[i]["to_number"]
        assert rows[i]["to_number"] == expected
    for i in kinds["withheld"]:
        assert rows[i]["from_number"] == "withheld"  # a choice of the subject never reveals a withheld caller
    # The full numbers are explained now, as they applied.
    full_text = _report_text(full_package)
    assert "you asked for the full numbers you called" in full_text
    calls = _redactions(app, created["id"])["to_number"]["outcomes"]
    assert calls.get("2") == len([i for i in kinds["outbound"] if i not in kinds["counselling"]])


def _redactions(app, request_id: str) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    from dsr.models import Task

    with app.extensions["dsr"].runtime.sessions() as session:
        task = session.execute(select(Task).where(Task.request_id == uuid.UUID(str(request_id)),
                                                  Task.store == "portal_db")).scalar_one()
        return dict(task.counts["redactions"]["call_records"])


def test_the_report_names_only_the_reasons_that_applied_with_their_counts(app, backend):
    """Issue 12.1: the reasons of a rule's cases were joined, so the report said "you asked for the full
    numbers you called" to a subject who had not. Each outcome is counted per record on both export
    paths (rows in Python on SQLite, COPY on PostgreSQL) and only those that applied are stated."""
    stored = _calls(backend)
    detail, package = _answer(app, email=MAX)
    text = _report_text(package)
    assert "you asked for the full numbers you called" not in text

    counts = _redactions(app, detail["id"])
    counselling = [r for r in stored.values() if r["to_number"] == portal.COUNSELLING_LINE]
    inbound = [r for r in stored.values() if r["direction"] == "inbound"]
    to_number = counts["to_number"]["outcomes"]
    assert to_number == {k: v for k, v in {"0": len(counselling), "1": len(inbound),
                                           "default": len(stored) - len(counselling) - len(inbound)}.items() if v}
    assert counts["to_number"]["records"] == len(stored) - len(inbound)  # shown in full is not a redaction
    withheld = [r for r in stored.values() if r["caller_withheld"]]
    outbound = [r for r in stored.values() if r["direction"] == "outbound" and not r["caller_withheld"]]
    assert counts["from_number"]["outcomes"] == {k: v for k, v in {
        "0": len(withheld), "1": len(outbound), "default": len(stored) - len(withheld) - len(outbound)}.items() if v}
    assert "on calls to you this is your own number" in text and "calls to counselling lines are not shown" in text
