"""Art. 17 erasure in SQL stores (issue 13): set-based, children before parents, one transaction per store.

Every test builds its own demo portal (SQLite: a file in tmp; PostgreSQL: a database of its own, dropped
afterwards), so the session's shared store stays as the other tests expect it. Its contents are the same
on both backends (``portal.build`` is deterministic). What belongs to Max is decided here by plain SQL
on ``account_id``, independently of the connector's membership queries.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, event, func, or_, select, text
from sqlalchemy.engine import make_url

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import load
from dsr.datamap.model import Store, Table
from dsr.db import make_engine
from dsr.demo import blobs, portal
from dsr.stores import validate_store
from dsr.stores.base import ConnectorContext, ErasureCount, Subject, TableErasure, TooMany
from dsr.stores.sql import ErasurePlanError, SqlConnector

MAX = Subject.from_email(portal.DEMO_SUBJECT)
MAX_ID = 1
INVITED_EMAIL = "erased@invalid"  # the replacement for invited_users.email, which is NOT NULL


@pytest.fixture
def store_url(backend: Any, tmp_path: Path) -> Iterator[str]:
    """A demo portal of 12 subjects of this test's own (the backend's kind of database)."""
    if not backend.real:
        url = f"sqlite:///{tmp_path / 'portal.sqlite'}"
        engine = make_engine(url, create_folder=True)
        portal.build(engine, portal.DemoSize(subjects=12, rows=30))
        engine.dispose()
        yield url
        return
    admin = create_engine(backend.store_url, isolation_level="AUTOCOMMIT")
    name = f"dsr_erase_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(backend.store_url).set(database=name).render_as_string(False)
    try:
        engine = make_engine(url)
        portal.build(engine, portal.DemoSize(subjects=12, rows=30))
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def connector(store_url: str, tmp_path: Path) -> Iterator[SqlConnector]:
    m = load(DEFAULT_DATAMAP, instance_dir=tmp_path, environ={"DSR_PORTAL_DB_URL": store_url},
             validate_store=validate_store)
    c = SqlConnector(m.stores["portal_db"], ConnectorContext(tmp_path))
    yield c
    c.close()


@pytest.fixture
def db(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


def default_plan(connector: SqlConnector) -> dict[str, TableErasure]:
    """The plan the data map's table ``erasure:`` entries give."""
    return {name: TableErasure(t.erasure.method, t.erasure.fields, t.erasure.replacements)  # type: ignore[arg-type]
            for name, t in connector.store.tables.items() if t.erasure is not None}


def workable_plan(connector: SqlConnector) -> dict[str, TableErasure]:
    """The default plan with two null cases: the kept access log lets go of the deleted tickets by the
    plan (the database would also do it: ON DELETE SET NULL, see the first test), and invited users are
    emptied rather than deleted, their NOT NULL e-mail replaced."""
    plan = default_plan(connector)
    plan["access_log"] = TableErasure("null", ("ticket_id",))
    plan["invited_users"] = TableErasure("null", ("email", "first_name", "last_name"), {"email": INVITED_EMAIL})
    return plan


def snapshot(engine: Engine) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every row of every table (no primary key assumed: rows as a multiset)."""
    tables = MetaData()
    tables.reflect(engine)  # before the connection: SQLite lets one open at a time
    with engine.connect() as conn:
        return {name: Counter(tuple(row) for row in conn.execute(select(t))) for name, t in tables.tables.items()}


def maxs(engine: Engine, table: str) -> int:
    """Max's rows in ``table`` by plain SQL: his account, his rows, his invoices' lines, his staff."""
    t, p = portal.metadata.tables[table], portal
    if table == "accounts":
        where = t.c.id == MAX_ID
    elif table == "invoice_lines":
        where = t.c.invoice_id.in_(select(p.invoices.c.id).where(p.invoices.c.account_id == MAX_ID))
    elif table == "employees":
        where = or_(t.c.id.in_(select(p.agent_notes.c.author_id).where(p.agent_notes.c.account_id == MAX_ID)),
                    t.c.id.in_(select(p.fraud_flags.c.set_by).where(p.fraud_flags.c.account_id == MAX_ID)),
                    t.c.id.in_(select(p.access_log.c.employee_id).where(p.access_log.c.account_id == MAX_ID)))
    else:
        where = t.c.account_id == MAX_ID
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t).where(where)).scalar_one())


def per_account(engine: Engine) -> dict[str, dict[Any, int]]:
    """Rows per account in every table that has an account_id."""
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        return {name: {account: int(count) for account, count in conn.execute(
                    select(t.c.account_id, func.count()).group_by(t.c.account_id))}
                for name, t in tables.tables.items() if "account_id" in t.c}


class Statements:
    """The statements the connector sends, by their first word."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement.lstrip().split(None, 1)[0].upper())

    def count(self, word: str) -> int:
        return self.seen.count(word)


def test_the_default_plan_keeps_the_access_log_and_the_database_drops_its_links_to_erased_tickets(connector, db):
    """The default map keeps the access log but deletes support tickets; access_log.ticket_id is a
    foreign key to them declared ON DELETE SET NULL, so the log stays, without the link."""
    with db.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1")).scalar_one()
        linked = conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1 "
                                   "AND ticket_id IS NOT NULL")).scalar_one()
        others = conn.execute(text("SELECT count(*) FROM access_log WHERE account_id <> 1")).scalar_one()
    assert linked > 0
    result = connector.erase(MAX, default_plan(connector))
    assert result.tables["access_log"] == ErasureCount(found=logged, retained=logged)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1")).scalar_one() == logged
        assert conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1 "
                                 "AND ticket_id IS NOT NULL")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM access_log WHERE account_id <> 1")).scalar_one() == others
        assert conn.execute(text("SELECT count(*) FROM support_tickets WHERE account_id = 1")).scalar_one() == 0


def test_erasing_max_removes_exactly_his_rows_and_leaves_everyone_else(connector, db):
    plan = workable_plan(connector)
    before, accounts_before = snapshot(db), per_account(db)
    mine = {name: maxs(db, name) for name in plan}
    assert all(mine[name] for name in plan)  # Max has rows in every table
    with db.connect() as conn:  # a null case changes only the records that still hold a value
        changes = {"access_log": conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1 "
                                                   "AND ticket_id IS NOT NULL")).scalar_one(),
                   "invited_users": mine["invited_users"]}
    assert 0 < changes["access_log"] < mine["access_log"]

    preview = connector.preview(MAX, plan)
    assert snapshot(db) == before  # a preview changes nothing

    statements = Statements(connector.engine)
    result = connector.erase(MAX, plan)
    assert result == preview  # the preview counted exactly what the erasure did
    for name, step in plan.items():
        expected = {"delete": ErasureCount(found=mine[name], deleted=mine[name]),
                    "null": ErasureCount(found=mine[name], changed=changes.get(name, -1)),
                    "retain": ErasureCount(found=mine[name], retained=mine[name])}[step.method]
        assert result.tables[name] == expected, name
    assert set(result.tables) == set(plan)
    # Set-based: one statement per table, however many rows (Max has dozens in several tables).
    deleting = [n for n, s in plan.items() if s.method == "delete"]
    assert sum(mine[n] for n in deleting) > 3 * len(deleting)
    assert statements.count("DELETE") == len(deleting)
    assert statements.count("UPDATE") == sum(s.method == "null" for s in plan.values())

    after = snapshot(db)
    for name, step in plan.items():
        left = maxs(db, name)
        assert left == (0 if step.method == "delete" else mine[name]), name
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM invited_users WHERE account_id = 1 AND (email <> :e "
                                 "OR first_name IS NOT NULL OR last_name IS NOT NULL)"), {"e": INVITED_EMAIL}
                            ).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM access_log WHERE account_id = 1 AND ticket_id IS NOT NULL")
                            ).scalar() == 0
    # Retained tables are untouched, row for row; nulled tables lost only Max's values.
    for name, step in plan.items():
        if step.method == "retain":
            assert after[name] == before[name], name
    # Other subjects: the same rows per account in every table, and overall the same rows.
    accounts_after = per_account(db)
    for name, counts in accounts_before.items():
        assert {k: v for k, v in accounts_after[name].items() if k != MAX_ID} == \
            {k: v for k, v in counts.items() if k != MAX_ID}, name
    for name in before:
        assert sum(before[name].values()) - sum(after[name].values()) == \
            (mine[name] if plan.get(name, TableErasure("retain")).method == "delete" else 0), name

    # Idempotent: a second run finds nothing left to delete or change and says so.
    again = connector.erase(MAX, plan)
    assert again.touched == 0
    for name, step in plan.items():
        count = again.tables[name]
        assert (count.deleted, count.changed) == (0, 0), name
        if step.method == "delete":
            assert count.found == 0, name
    assert snapshot(db) == after


def test_tables_outside_the_plan_are_untouched(connector, db):
    before = snapshot(db)
    result = connector.erase(MAX, {"api_usage": TableErasure("delete")})
    assert list(result.tables) == ["api_usage"] and result.tables["api_usage"].deleted > 0
    after = snapshot(db)
    assert {n: c for n, c in after.items() if n != "api_usage"} == {n: c for n, c in before.items() if n != "api_usage"}


def test_a_bound_below_the_count_stops_before_anything_changes(connector, db):
    plan = workable_plan(connector)
    touched = connector.preview(MAX, plan).touched
    before = snapshot(db)
    with pytest.raises(TooMany) as caught:
        connector.erase(MAX, plan, bound=touched - 1)
    assert (caught.value.touched, caught.value.bound, caught.value.store) == (touched, touched - 1, "portal_db")
    assert snapshot(db) == before
    assert connector.erase(MAX, plan, bound=touched).touched == touched


def test_a_failure_in_the_last_table_rolls_back_the_whole_store(connector, db):
    plan = workable_plan(connector)
    order = [name for name in connector.erasure_order() if name in plan and plan[name].method != "retain"]
    last = order[-1]
    before = snapshot(db)

    def fail(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("DELETE", "UPDATE")) and f"{last}" in statement.split("WHERE")[0]:
            raise RuntimeError(f"injected failure at {last}")

    statements = Statements(connector.engine)
    event.listen(connector.engine, "before_cursor_execute", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        connector.erase(MAX, plan)
    event.remove(connector.engine, "before_cursor_execute", fail)
    assert statements.count("DELETE") + statements.count("UPDATE") == len(order)  # it failed at the last
    assert snapshot(db) == before  # the tables before the last one were changed, and rolled back


def test_a_plan_the_store_cannot_carry_out_is_refused_before_any_statement(connector, db):
    plan = workable_plan(connector)
    last = [name for name in connector.erasure_order() if name in plan][-1]
    before = snapshot(db)
    statements = Statements(connector.engine)
    with pytest.raises(ErasurePlanError, match=rf"table {last} has no column 'no_such_column'"):
        connector.erase(MAX, {**plan, last: TableErasure("null", ("no_such_column",))})
    with pytest.raises(ErasurePlanError, match=r"table invited_users: column email is NOT NULL; name a replacement"):
        connector.erase(MAX, {**plan, "invited_users": TableErasure("null", ("email", "first_name"))})
    with pytest.raises(ErasurePlanError, match="no table 'nope' in the data map"):
        connector.erase(MAX, {**plan, "nope": TableErasure("delete")})
    assert not statements.count("DELETE") and not statements.count("UPDATE")
    assert snapshot(db) == before


def test_children_come_before_parents(connector):
    order = connector.erasure_order()
    assert sorted(order) == sorted(connector.store.tables)
    for child, parent in [("call_records", "accounts"), ("invoice_lines", "invoices"), ("invoices", "accounts"),
                          ("employees", "agent_notes"), ("employees", "access_log"),
                          # a foreign key the map does not use for membership: notes on a ticket
                          ("agent_notes", "support_tickets"), ("access_log", "support_tickets")]:
        assert order.index(child) < order.index(parent), (child, parent)


def test_kept_children_are_found_and_counted_when_the_parent_is_deleted_too(connector, db):
    """Deleting the account (a plan the map does not make, but possible) needs every child gone first:
    children are erased first, so their membership (a sub-select on accounts) still holds."""
    plan = {name: TableErasure("delete") for name in connector.store.tables if name != "employees"}
    mine = {name: maxs(db, name) for name in plan}
    result = connector.erase(MAX, plan)
    assert {n: c.deleted for n, c in result.tables.items()} == mine
    assert all(maxs(db, name) == 0 for name in plan)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM accounts")).scalar() == 11


def test_a_table_of_another_store_that_refers_to_deleted_rows_stops_the_erasure(connector, db, tmp_path):
    """The media store's index refers to tickets by a foreign key: the SQL erasure waits for that store."""
    blobs.build(db, tmp_path / "media")
    before = snapshot(db)
    with pytest.raises(ErasurePlanError, match=r"nothing (was )?changed") as refused:
        connector.erase(MAX, workable_plan(connector))
    # Our check (SQLite) or PostgreSQL's own key (it enforces every declared key) names both tables.
    assert "ticket_attachments" in str(refused.value) and "support_tickets" in str(refused.value)
    assert snapshot(db) == before


def test_a_store_without_primary_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    engine = make_engine(url, create_folder=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (email TEXT NOT NULL, name TEXT)"))
        conn.execute(text("CREATE TABLE visits (person TEXT NOT NULL, page TEXT, agent TEXT)"))
        conn.execute(text("INSERT INTO people VALUES ('a@example.com', 'A'), ('b@example.com', 'B')"))
        conn.execute(text("INSERT INTO visits VALUES ('a@example.com', '/x', 'ua'), ('a@example.com', '/x', 'ua'), "
                          "('b@example.com', '/y', 'ub')"))
    tables = {"people": Table("people", "c", {}, {"key": "email"}),
              "visits": Table("visits", "c", {}, {"key": "person", "references": {"person": "people.email"}})}
    store = Store("plain", "sql", {"en": "x"}, {"url": url}, {"email": {"table": "people", "column": "email"}}, tables)
    connector = SqlConnector(store, ConnectorContext(tmp_path))
    plan = {"visits": TableErasure("null", ("agent",)), "people": TableErasure("delete")}
    result = connector.erase(Subject.from_email("A@example.com"), plan)
    assert result.tables == {"visits": ErasureCount(found=2, changed=2), "people": ErasureCount(found=1, deleted=1)}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM people")).all() == [("b@example.com", "B")]
        assert sorted(conn.execute(text("SELECT * FROM visits")).all()) == [
            ("a@example.com", "/x", None), ("a@example.com", "/x", None), ("b@example.com", "/y", "ub")]
    connector.close()
    engine.dispose()


def test_a_kept_table_whose_foreign_key_cascades_is_refused_before_anything_changes(tmp_path):
    """ON DELETE CASCADE would delete records the erasure keeps (e.g. invoices under a statutory duty)
    behind the plan's back: refused, naming both tables; ON DELETE SET NULL only drops the link."""
    url = f"sqlite:///{tmp_path / 'cascade.sqlite'}"
    engine = make_engine(url, create_folder=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL)"))
        conn.execute(text("CREATE TABLE bills (id INTEGER PRIMARY KEY, "
                          "person INTEGER REFERENCES people(id) ON DELETE CASCADE)"))
        conn.execute(text("INSERT INTO people VALUES (1, 'a@example.com'), (2, 'b@example.com')"))
        conn.execute(text("INSERT INTO bills VALUES (10, 1), (20, 2)"))
    tables = {"people": Table("people", "c", {}, {"key": "id"}),
              "bills": Table("bills", "c", {}, {"key": "id", "references": {"person": "people.id"}})}
    store = Store("plain", "sql", {"en": "x"}, {"url": url}, {"email": {"table": "people", "column": "email"}}, tables)
    connector = SqlConnector(store, ConnectorContext(tmp_path))
    plan = {"bills": TableErasure("retain"), "people": TableErasure("delete")}
    with pytest.raises(ErasurePlanError, match=r"would delete 1 record\(s\) of bills .*CASCADE"):
        connector.erase(Subject.from_email("a@example.com"), plan)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM bills")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM people")).scalar_one() == 2
    connector.close()
    engine.dispose()
