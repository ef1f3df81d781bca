"""The retention register (ER-05): an erasure records what it keeps, per table and deletion date, and the
daily run erases those records on their date (AT-30, AT-33, AT-38).

Each test erases Max in stores of its own (``own_stores``, on the backend's kind of database). What is
Max's and when each record may go is worked out here from the store with plain SQL and the calendar
(``dateutil``), independently of the register's own date arithmetic and GROUP BY.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from dateutil.relativedelta import relativedelta
from sqlalchemy import Engine, MetaData, Table, func, select, update

from dsr.cli import main
from dsr.db import make_engine
from dsr.domain.retention_register import RunReport, run_due
from dsr.models import AuditEvent, RetentionEntry
from dsr.stores.base import TableErasure
from tests.helpers import MAX, dpo_auth, submit, tell_by_hand, work_off

MAX_ID = 1
DATED = {"invoices": "issued_on", "call_records": "started_at", "message_records": "sent_at",
         "access_log": "accessed_at", "fraud_flags": "cleared_at", "consents": "withdrawn_at"}
FAR_FUTURE = date(2100, 1, 1)


def _tables(engine: Engine) -> dict[str, Table]:
    meta = MetaData()
    meta.reflect(engine)
    return dict(meta.tables)


def _counts(engine: Engine) -> dict[str, Counter[Any]]:
    """Rows per account of every portal table that has an account (invoice lines through their invoice)."""
    t = _tables(engine)
    counts: dict[str, Counter[Any]] = {}
    with engine.connect() as conn:
        for name, table in t.items():
            if "account_id" in table.c:
                counts[name] = Counter(dict(conn.execute(
                    select(table.c.account_id, func.count()).group_by(table.c.account_id)).all()))
        counts["accounts"] = Counter(dict.fromkeys(conn.execute(select(t["accounts"].c.id)).scalars(), 1))
        lines, invoices = t["invoice_lines"], t["invoices"]
        counts["invoice_lines"] = Counter(dict(conn.execute(
            select(invoices.c.account_id, func.count()).select_from(lines.join(invoices))
            .group_by(invoices.c.account_id)).all()))
    return counts


def _days(engine: Engine, table: str, column: str) -> list[date | None]:
    """The UTC day of each of Max's records' ``column`` (SQLite hands back naive UTC, PostgreSQL aware)."""
    t = _tables(engine)[table]
    with engine.connect() as conn:
        values = conn.execute(select(t.c[column]).where(t.c.account_id == MAX_ID)).scalars().all()
    days: list[date | None] = []
    for value in values:
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).date()
        days.append(value)
    return days


def _register(app: Any, request_id: str | None = None) -> list[RetentionEntry]:
    with app.extensions["dsr"].runtime.sessions() as session:
        stmt = select(RetentionEntry)
        if request_id is not None:
            stmt = stmt.where(RetentionEntry.request_id == uuid.UUID(request_id))
        return list(session.execute(stmt).scalars())


def _by_date(entries: list[RetentionEntry], table: str) -> dict[date | None, int]:
    found: Counter[date | None] = Counter()
    for e in entries:
        if e.table_name == table:
            found[e.erasable_on] += e.records
    return dict(found)


def _erase_max(app: Any) -> tuple[str, dict[str, Any], dict[str, str]]:
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client, type="erasure")
    assert client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth).status_code == 200
    work_off(app)
    tell_by_hand(app, client, auth, created["id"])  # the recipients (Art. 19), as the office would
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail["status"]
    return created["id"], detail, auth


def _run(app: Any, today: date, **options: Any) -> RunReport:
    rt = app.extensions["dsr"].runtime
    return run_due(rt.sessions, rt.datamap, rt.connector, today, **options)


def test_at30_the_erasure_registers_each_kept_table_with_its_provision_and_deletion_date(own_stores, make_app):
    """AT-30 / ER-05: invoices kept 8 years from the end of their year (1 Jan of year + 9), calls and
    messages 6 months after the day (AT-38), with the provision; nothing of what was deleted."""
    app = make_app(erasure_auto_approve=True)
    store = make_engine(own_stores.store_url)
    request_id, detail, _auth = _erase_max(app)
    entries = _register(app, request_id)
    tables = detail["preview"]["stores"]["portal_db"]["tables"]

    invoice_years = Counter(d.year for d in _days(store, "invoices", "issued_on") if d is not None)
    assert invoice_years  # Max has invoices
    assert _by_date(entries, "invoices") == {date(year + 9, 1, 1): n for year, n in invoice_years.items()}
    for entry in (e for e in entries if e.table_name == "invoices"):
        assert entry.rule == "vouchers" and entry.category == "invoices" and "§ 147" in (entry.provision or "")
        assert entry.status == "kept" and entry.kept_since >= date(2026, 1, 1)

    for table, column in (("call_records", "started_at"), ("message_records", "sent_at")):
        # Kept through the day six months after the call (§ 188(2) BGB), erasable the day after.
        expected = Counter(d + relativedelta(months=6) + timedelta(days=1) for d in _days(store, table, column) if d)
        assert sum(expected.values()) == tables[table]["retained"] > 0
        assert _by_date(entries, table) == dict(expected), table
        assert all(e.rule == "traffic_billing" and "TDDDG" in (e.provision or "") for e in entries
                   if e.table_name == table)

    # Access logs: until the end of the year after the access.
    accessed = Counter(date(d.year + 2, 1, 1) for d in _days(store, "access_log", "accessed_at") if d)
    assert _by_date(entries, "access_log") == dict(accessed)
    # Records without their date (an active flag, a consent not withdrawn) and tables without one (kept for
    # the contract; invoice lines, which follow their invoice) are registered without a date.
    open_flags = sum(1 for d in _days(store, "fraud_flags", "cleared_at") if d is None)
    assert _by_date(entries, "fraud_flags").get(None) == open_flags > 0
    assert _by_date(entries, "invoice_lines") == {None: tables["invoice_lines"]["retained"]}
    assert _by_date(entries, "accounts") == {None: 1}
    assert {e.rule for e in entries if e.table_name in ("accounts", "api_usage", "payment_methods")} \
        == {"contract_plus_30d"}

    # Nothing deleted is registered; each kept table's records are all there; staff are not the subject's.
    registered = {e.table_name for e in entries if e.store == "portal_db"}
    deleted = {name for name, step in tables.items() if step["method"] == "delete"}
    assert deleted and not registered & deleted
    assert "employees" not in registered
    for name in registered:
        assert sum(e.records for e in entries if e.table_name == name) == tables[name]["retained"], name
    assert not any(e.store in ("media", "analytics") for e in entries)

    # The API shows the entries; the OpenAPI contract describes them.
    shown = detail["retained"]
    assert len(shown) == len(entries)
    assert {"store", "table", "category", "rule", "provision", "records", "erasable_on", "status"} <= set(shown[0])
    invoices = [r for r in shown if r["table"] == "invoices"]
    assert invoices and all(r["erasable_on"].endswith("-01-01") and "147" in r["provision"] for r in invoices)
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    retained = spec["components"]["schemas"]["Request"]["properties"]["retained"]
    assert retained["type"] == "array" and "erasable_on" in spec["components"]["schemas"]["Retained"]["properties"]
    store.dispose()


def test_at33_retained_records_are_deleted_on_their_date(own_stores, make_app):
    """AT-33 / AT-38: nothing before the first date; on a date, exactly Max's records due by then; far in the
    future every dated record of Max (invoice lines with their invoices), never another account's; twice is
    once."""
    app = make_app(erasure_auto_approve=True)
    store = make_engine(own_stores.store_url)
    request_id, _detail, _auth = _erase_max(app)
    before = _counts(store)
    entries = _register(app, request_id)
    first = min(e.erasable_on for e in entries if e.erasable_on is not None)

    # The day before the first date: nothing is due, nothing changes.
    report = _run(app, first - timedelta(days=1))
    assert (report.erased, report.failed) == ([], [])
    assert _counts(store) == before
    assert {e.status for e in _register(app)} == {"kept"}

    # On the first date: only the records due by then (the earliest calls and messages), nothing else.
    due_calls = sum(n for day, n in _by_date(entries, "call_records").items() if day and day <= first)
    due_messages = sum(n for day, n in _by_date(entries, "message_records").items() if day and day <= first)
    assert due_calls + due_messages > 0
    report = _run(app, first)
    assert not report.failed, report.failed
    after = _counts(store)
    assert after["call_records"][MAX_ID] == before["call_records"][MAX_ID] - due_calls
    assert after["message_records"][MAX_ID] == before["message_records"][MAX_ID] - due_messages
    assert after["invoices"] == before["invoices"]
    for name in before:
        assert {k: v for k, v in after[name].items() if k != MAX_ID} \
            == {k: v for k, v in before[name].items() if k != MAX_ID}, name
    statuses = {(e.table_name, e.erasable_on): e.status for e in _register(app)}
    assert all(status == ("erased" if day is not None and day <= first else "kept")
               for (_table, day), status in statuses.items())

    # Far in the future, through the command: every dated record of Max goes, the undated stay.
    undated = {"fraud_flags": sum(1 for d in _days(store, "fraud_flags", "cleared_at") if d is None),
               "consents": sum(1 for d in _days(store, "consents", "withdrawn_at") if d is None)}
    result = _cli(own_stores, app, "--today", FAR_FUTURE.isoformat())
    assert result.exit_code == 0, result.output
    assert "invoices: erased" in result.output
    final = _counts(store)
    for name in ("invoices", "invoice_lines", "call_records", "message_records", "access_log"):
        assert before[name][MAX_ID] and final[name][MAX_ID] == 0, name
    for name, left in undated.items():
        assert final[name][MAX_ID] == left, name
    for name in ("accounts", "api_usage", "payment_methods"):  # kept for the contract: a person decides
        assert final[name][MAX_ID] == before[name][MAX_ID], name
    for name in before:  # every other account exactly as it was
        assert {k: v for k, v in final[name].items() if k != MAX_ID} \
            == {k: v for k, v in before[name].items() if k != MAX_ID}, name
    register = [e for e in _register(app) if e.store == "portal_db"]
    assert {e.table_name for e in register if e.status == "kept"} \
        == {"accounts", "api_usage", "payment_methods", *(name for name, left in undated.items() if left)}
    assert all(e.erasable_on is None for e in register if e.status == "kept")
    assert all(e.erased_at is not None for e in register if e.status == "erased")

    # A second run finds nothing to do and changes nothing.
    again = _run(app, FAR_FUTURE)
    assert (again.erased, again.failed) == ([], [])
    assert _counts(store) == final

    # The audit trail: counts and references, no value of Max's data (AT-51).
    with app.extensions["dsr"].runtime.sessions() as session:
        events = session.execute(select(AuditEvent).where(AuditEvent.action == "retention.erased")).scalars().all()
        trail = repr([e.data for e in session.execute(select(AuditEvent)).scalars()])
    erased = Counter()
    for event in events:
        for table, counted in event.data["tables"].items():
            erased[table] += counted["deleted"]
    assert erased["invoices"] == before["invoices"][MAX_ID]
    assert erased["invoice_lines"] == before["invoice_lines"][MAX_ID]
    for value in ("Mustermann", MAX):
        assert value not in trail
    store.dispose()


def test_at38_traffic_data_is_kept_until_six_months_after_the_day_and_erased_the_day_after(own_stores, make_app):
    """AT-38: a call is not erased on the last day of its six months, and is erased on the next."""
    app = make_app(erasure_auto_approve=True)
    store = make_engine(own_stores.store_url)
    _erase_max(app)
    days = sorted(d for d in _days(store, "call_records", "started_at") if d)
    last_kept = days[-1] + relativedelta(months=6)
    report = _run(app, last_kept)
    assert not report.failed
    assert [d for d in _days(store, "call_records", "started_at") if d] == [d for d in days if d == days[-1]]
    _run(app, last_kept + timedelta(days=1))
    assert _days(store, "call_records", "started_at") == []
    store.dispose()


def test_a_dry_run_counts_and_a_failing_store_stays_kept_while_the_run_goes_on(own_stores, make_app, monkeypatch):
    app = make_app(erasure_auto_approve=True)
    store = make_engine(own_stores.store_url)
    _erase_max(app)
    other_id, other = _another_subject(store)
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client, type="erasure", email=other)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    tell_by_hand(app, client, auth, created["id"])
    assert client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()["status"] == "completed"
    before = _counts(store)

    dry = _run(app, FAR_FUTURE, dry_run=True)
    counted = {(e["reference"], e["table"]): e["deleted"] for e in dry.erased}
    assert counted[(created["reference"], "invoices")] == before["invoices"][other_id] > 0
    assert sum(n for (_ref, table), n in counted.items() if table == "invoice_lines") > 0
    assert _counts(store) == before and {e.status for e in _register(app)} == {"kept"}

    # Max's erasure comes first (the older reference): its store fails this time; the other's goes through.
    connector = app.extensions["dsr"].runtime.connector("portal_db")
    real_erase, calls = connector.erase, []

    def flaky(subject: Any, plan: dict[str, TableErasure], **kwargs: Any) -> Any:
        calls.append(subject)
        if len(calls) == 1:
            raise RuntimeError("the store is away")
        return real_erase(subject, plan, **kwargs)

    monkeypatch.setattr(connector, "erase", flaky)
    report = _run(app, FAR_FUTURE)
    assert [f["store"] for f in report.failed] == ["portal_db"] and "away" in report.failed[0]["error"]
    assert report.failed[0]["reference"] != created["reference"]
    after = _counts(store)
    assert after["invoices"][MAX_ID] == before["invoices"][MAX_ID] > 0  # Max's: kept, for the next run
    assert after["invoices"][other_id] == 0 and after["call_records"][other_id] == 0
    kept = {e.status for e in _register(app) if e.erasable_on is not None and e.request_id != uuid.UUID(created["id"])}
    assert kept == {"kept"}
    retried = _run(app, FAR_FUTURE)  # the next run takes Max's
    assert not retried.failed and [e["reference"] for e in retried.erased if e["table"] == "invoices"] \
        == [report.failed[0]["reference"]]
    assert _counts(store)["invoices"][MAX_ID] == 0
    store.dispose()


def test_a_dated_sql_erasure_takes_the_records_before_the_day_and_only_what_belongs_to_them(own_stores, make_app):
    """The connector's part: one GROUP BY per table gives the days; ``before`` bounds the DELETE, and the
    invoice lines (whose references all lead to the invoices) go only with the invoices deleted."""
    from dsr.stores import Subject

    rt = make_app().extensions["dsr"].runtime
    sql = rt.connector("portal_db")
    store = make_engine(own_stores.store_url)
    subject = Subject.from_email(MAX)
    assert sql.parts_of("invoices") == ["invoice_lines"] and sql.parts_of("call_records") == []
    issued = Counter(_days(store, "invoices", "issued_on"))
    assert sql.retained(subject, "invoices", "issued_on") == sorted(issued.items())
    assert sql.retained(subject, "call_records", "started_at") \
        == sorted(Counter(_days(store, "call_records", "started_at")).items())
    assert sql.retained(subject, "fraud_flags", "cleared_at")[-1][0] is None  # the active flag: last, undated
    days = sorted(issued)
    assert len(days) >= 2
    t = _tables(store)
    with store.connect() as conn:
        lines_of = dict(conn.execute(select(t["invoices"].c.issued_on, func.count()).select_from(
            t["invoice_lines"].join(t["invoices"])).where(t["invoices"].c.account_id == MAX_ID)
            .group_by(t["invoices"].c.issued_on)).all())
    before = _counts(store)
    plan = {"invoices": TableErasure("delete", before=("issued_on", days[-1])), "invoice_lines": TableErasure("delete")}
    counted = sql.preview(subject, plan).tables
    early = sum(n for day, n in issued.items() if day < days[-1])
    early_lines = sum(n for day, n in lines_of.items() if day < days[-1])
    assert (counted["invoices"].deleted, counted["invoice_lines"].deleted) == (early, early_lines)
    assert _counts(store) == before
    erased = sql.erase(subject, plan).tables
    assert (erased["invoices"].deleted, erased["invoice_lines"].deleted) == (early, early_lines)
    after = _counts(store)
    assert after["invoices"][MAX_ID] == issued[days[-1]] and after["invoice_lines"][MAX_ID] == lines_of[days[-1]]
    for name in before:
        assert {k: v for k, v in after[name].items() if k != MAX_ID} \
            == {k: v for k, v in before[name].items() if k != MAX_ID}, name
    store.dispose()


def test_stores_that_cannot_bound_an_erasure_by_date_refuse_a_dated_plan(own_stores, make_app):
    """A log or file store erasing "before a day" would erase every record: it says it cannot instead."""
    from dsr.stores import NotSupported, Subject

    rt = make_app().extensions["dsr"].runtime
    subject = Subject.from_email(MAX)
    for store, table, column in (("web_logs", "requests", "time"), ("media", "recordings", "started_at")):
        plan = {table: TableErasure("delete", before=(column, FAR_FUTURE))}
        with pytest.raises(NotSupported, match="cannot erase only the records dated before a day"):
            rt.connector(store).erase(subject, plan)
        with pytest.raises(NotSupported):
            rt.connector(store).retained(subject, table, column)


def _another_subject(engine: Engine) -> tuple[int, str]:
    """An account other than Max's whose erasure the check passes: every member of staff who wrote a note
    about it also appears in its access log or flags. (Otherwise the staff table, found through the notes
    the erasure deletes, counts fewer kept records at the check than at the erasure: the check fails.)"""
    t = _tables(engine)
    with engine.connect() as conn:
        for account_id, email in conn.execute(select(t["accounts"].c.id, t["accounts"].c.email)
                                              .where(t["accounts"].c.id != MAX_ID).order_by(t["accounts"].c.id)):
            staff = [set(conn.execute(select(t[name].c[column]).where(t[name].c.account_id == account_id,
                                                                      t[name].c[column].is_not(None))).scalars())
                     for name, column in (("agent_notes", "author_id"), ("access_log", "employee_id"),
                                          ("fraud_flags", "set_by"))]
            if staff[0] <= staff[1] | staff[2]:
                return account_id, email
    raise AssertionError("the demo store has no such account")


def test_a_later_erasure_of_the_subject_takes_over_the_earlier_entries(own_stores, make_app):
    """Once the contract has ended, a second erasure deletes what was kept for it: the first request's
    entries of those tables become erased; the tables it keeps again are superseded by its own entries."""
    app = make_app(erasure_auto_approve=True)
    store = make_engine(own_stores.store_url)
    first, _detail, _auth = _erase_max(app)
    accounts = _tables(store)["accounts"]
    with store.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == MAX_ID).values(status="closed"))
    second, detail, _auth = _erase_max(app)
    assert detail["preview"]["contract_ended"] is True
    earlier = {e.table_name: e.status for e in _register(app, first)}
    assert earlier["api_usage"] == earlier["payment_methods"] == "erased"  # the contract ended: deleted now
    assert earlier["invoices"] == earlier["call_records"] == earlier["accounts"] == "superseded"
    later = _register(app, second)
    assert {e.table_name for e in later} >= {"invoices", "call_records", "accounts"}
    assert not {"api_usage", "payment_methods"} & {e.table_name for e in later}
    assert {e.status for e in later} == {"kept"}
    # The run erases by the later request's entries, once.
    report = _run(app, FAR_FUTURE)
    assert {e["reference"] for e in report.erased} == {detail["reference"]}
    assert _counts(store)["invoices"][MAX_ID] == 0
    store.dispose()


def _cli(own_stores: Any, app: Any, *args: str) -> Any:
    settings = app.extensions["dsr"].runtime.settings
    env = {"DSR_DATABASE_URL": settings.database_url, "DSR_SECRET_KEY": settings.secret_key,
           "DSR_DATAMAP": str(settings.datamap_path), "DSR_INSTANCE_DIR": str(settings.instance_dir),
           "DSR_STORAGE_DIR": str(settings.storage_dir), "DSR_PORTAL_DB_URL": own_stores.store_url,
           "DSR_MEDIA_DIR": str(own_stores.media), "DSR_ANALYTICS_DIR": str(own_stores.analytics),
           "DSR_ENV": "development", "DSR_REDIS_URL": ""}
    return CliRunner().invoke(main, ["--log-level", "WARNING", "retention", "run", *args], env=env)


@pytest.mark.parametrize("table", sorted(DATED))
def test_the_default_map_dates_each_dated_table_by_a_column_of_the_store(table, tmp_path):
    from dsr.config import DEFAULT_DATAMAP
    from dsr.datamap import load
    from dsr.stores import validate_store

    m = load(DEFAULT_DATAMAP, instance_dir=tmp_path, environ={}, validate_store=validate_store)
    erasure = m.stores["portal_db"].tables[table].erasure
    assert erasure is not None and erasure.dated_by == DATED[table]
    assert m.stores["portal_db"].tables["invoice_lines"].erasure.dated_by is None  # type: ignore[union-attr]
