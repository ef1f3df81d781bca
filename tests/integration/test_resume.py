"""A store job that fails part-way is retried from its checkpoint: finished tables are not read again."""

from __future__ import annotations

import pytest

from dsr.stores.sql import SqlConnector
from tests.helpers import dpo_auth, read_zip, submit, work_off


@pytest.fixture
def retrying_app(make_app):
    return make_app(retry_intervals=(0,))


def test_a_retried_sql_collection_resumes_after_the_tables_already_exported(retrying_app, monkeypatch):
    app, client, auth = retrying_app, retrying_app.test_client(), dpo_auth(retrying_app)

    read: list[str] = []
    real_stream, real_copy = SqlConnector._stream, SqlConnector._copy

    def flaky(real):  # type: ignore[no-untyped-def]
        def read_table(self, conn, sink, name, *args):  # type: ignore[no-untyped-def]
            read.append(name)
            if name == "call_records" and read.count(name) == 1:
                raise ConnectionError("server closed the connection unexpectedly")  # mid-collection
            return real(self, conn, sink, name, *args)
        return read_table

    monkeypatch.setattr(SqlConnector, "_stream", flaky(real_stream))
    monkeypatch.setattr(SqlConnector, "_copy", flaky(real_copy))
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app, logging_level="CRITICAL")

    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    assert detail["status"] == "completed", detail
    portal = next(t for t in detail["tasks"] if t["store"] == "portal_db")
    assert portal["attempts"] == 2
    tables = list(app.extensions["dsr"].runtime.datamap.stores["portal_db"].tables)
    before = tables[: tables.index("call_records")]
    resumed = portal["counts"]["resumed"]
    # The retry read only the tables the first attempt had not finished: all before the failing one
    # (on PostgreSQL, COPY runs two tables at once, so one after it may have finished too).
    assert set(before) <= set(resumed) and "call_records" not in resumed
    assert all(read.count(t) == 1 for t in resumed) and read.count("call_records") == 2
    assert set(read) == set(tables)
    store = app.extensions["dsr"].runtime.datamap.stores["portal_db"].resolved()
    if not store.connection["url"].startswith("postgresql"):
        assert read == [*before, "call_records", *tables[tables.index("call_records"):]]  # one by one
    assert set(portal["counts"]["found"]) == set(tables)
    assert "payment_methods" in portal["counts"]["redactions"]  # kept from the first attempt
    package = read_zip(client.get(client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth)
                                  .get_json()[0]["download_url"].replace("http://localhost", "")).data)
    for table in tables:
        assert len(package[f"portal_db/{table}.csv"]) == portal["counts"]["found"][table] > 0
