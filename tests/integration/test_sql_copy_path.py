"""PostgreSQL's COPY path and the row-by-row path write the same CSV for the same rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text, update

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMapError, load
from dsr.db import make_engine
from dsr.demo import blobs, portal
from dsr.exports.csv_files import CsvDirectorySink
from dsr.exports.disclosure import DisclosingSink
from dsr.exports.json_files import add_json
from dsr.stores import ConnectorContext, Subject, validate_store
from dsr.stores.sql import SqlConnector


class _RowsOnly:
    """A sink without the raw-CSV entry point, so the connector must take the row-by-row path."""

    def __init__(self, inner: CsvDirectorySink) -> None:
        self.inner = inner

    def open_table(self, name, columns, kinds=None):  # type: ignore[no-untyped-def]
        return self.inner.open_table(name, columns, kinds)

    def add_file(self, table, name, content):  # type: ignore[no-untyped-def]
        self.inner.add_file(table, name, content)


@pytest.fixture
def store_db(backend, tmp_path):
    if not backend.real:
        pytest.skip("the COPY path is PostgreSQL's; the embedded run covers the row-by-row path")
    engine = make_engine(backend.store_url)
    portal.build(engine, portal.DemoSize(subjects=3, rows=60))
    with engine.begin() as conn:  # awkward values: a formula, a leading minus, quotes, a newline, umlauts
        conn.execute(update(portal.support_tickets).where(portal.support_tickets.c.account_id == 1).values(
            subject='=HYPERLINK("http://x")', body='-1 "quoted", line\nbreak ÄÖÜß'))
        conn.execute(update(portal.invoices).where(portal.invoices.c.account_id == 1).values(
            billed_address="Musterweg 1\r50667 Köln", vat_id=""))  # a bare CR, an empty string
        conn.execute(update(portal.support_tickets).where(portal.support_tickets.c.account_id == 1).values(
            opened_at=datetime(2026, 3, 1, 9, 30, 15, 500000, tzinfo=UTC),  # fractions of a second
            closed_at=datetime(2026, 3, 2, 23, 59, 59, 123, tzinfo=timezone(timedelta(hours=2)))))
        # Staff names in notes (mask: names): regular-expression characters in a name, any case, a
        # genitive s, a name inside a longer word (kept), a note that starts with a formula character.
        conn.execute(update(portal.employees).where(portal.employees.c.id == portal.QUALITY).values(
            name="Dr. Petra Lange-Weiß (QS)"))
        first, second = conn.execute(
            text("SELECT id FROM agent_notes WHERE account_id = 1 ORDER BY id LIMIT 2")).scalars()
        conn.execute(update(portal.agent_notes).where(portal.agent_notes.c.id == first).values(
            note="=Rückruf durch dr. petra lange-weiß (qs) und CLAUDIA BRANDT; Brandtschutz geprüft"))
        conn.execute(update(portal.agent_notes).where(portal.agent_notes.c.id == second).values(
            note="Claudia Brandts Notiz: Claudia Brandtner (extern) informiert. Dr. Petra Lange-Weiß"))
    yield backend.store_url
    portal.build(engine, portal.DemoSize(subjects=12, rows=30))  # what the other tests expect
    blobs.build(engine, backend.media)
    engine.dispose()


def test_copy_and_row_by_row_write_identical_files(store_db, tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_PORTAL_DB_URL", store_db)
    m = load(DEFAULT_DATAMAP, instance_dir=tmp_path, validate_store=validate_store)
    store = m.stores["portal_db"]
    subject = Subject.from_email("max.mustermann@example.com")
    outputs: dict[str, Path] = {}
    summaries = {}
    for mode in ("copy", "rows"):
        connector = SqlConnector(store, ConnectorContext(tmp_path))
        folder = tmp_path / mode
        disclosing = DisclosingSink(CsvDirectorySink(folder), store)
        sink = disclosing if mode == "copy" else DisclosingSink(_RowsOnly(CsvDirectorySink(folder)), store)
        result = connector.collect(subject, sink)
        connector.close()
        add_json(folder)  # as the package step writes the twins
        assert result.found["call_records"] == 20
        outputs[mode], summaries[mode] = folder, sink.summary()
    files = sorted(outputs["copy"].glob("*.csv")) + sorted(outputs["copy"].glob("*.json"))
    assert len(files) == 2 * len(list(outputs["copy"].glob("*.csv")))  # each CSV with its JSON twin
    for file in files:
        assert file.read_bytes() == (outputs["rows"] / file.name).read_bytes(), file.name
    assert summaries["copy"] == summaries["rows"]
    invoices = (outputs["copy"] / "invoices.csv").read_bytes()
    assert b'"Musterweg 1\r50667 K' in invoices and b'""' not in invoices  # CR quoted, '' written as nothing
    tickets = (outputs["copy"] / "support_tickets.csv").read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in tickets and "'-1 " in tickets
    assert "2026-03-01T09:30:15.5+00:00" in tickets and "2026-03-02T21:59:59.000123+00:00" in tickets
    calls = (outputs["copy"] / "call_records.csv").read_text(encoding="utf-8-sig").splitlines()
    inbound = [line.split(",") for line in calls[1:] if ",inbound," in line]
    assert inbound and all(f[3].endswith("xxx") or f[3] == "withheld" for f in inbound)  # the caller's number
    assert "password_hash" not in (outputs["copy"] / "accounts.csv").read_text(encoding="utf-8-sig")
    notes = (outputs["copy"] / "agent_notes.csv").read_text(encoding="utf-8-sig")
    assert "'=Rückruf durch […] und […]; Brandtschutz geprüft" in notes
    # Only names as the staff table writes them: without "(QS)" it is not that name (said in docs/datamap.md).
    assert "[…] Notiz: Claudia Brandtner (extern) informiert. Dr. Petra Lange-Weiß\n" in notes.replace("\r", "")
    twin = json.loads((outputs["copy"] / "support_tickets.json").read_text(encoding="utf-8"))
    ticket = dict(zip(twin["columns"], twin["rows"][0], strict=True))
    assert ticket["subject"] == '=HYPERLINK("http://x")'  # as stored: JSON is no spreadsheet
    assert ticket["body"] == '-1 "quoted", line\nbreak ÄÖÜß'
    bill = json.loads((outputs["copy"] / "invoices.json").read_text(encoding="utf-8"))
    assert dict(zip(bill["columns"], bill["rows"][0], strict=True))["billed_address"] == "Musterweg 1\r50667 Köln"


def _portal_with_zone(tmp_path: Path, zone: str):  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))
    raw["stores"]["portal_db"]["connection"]["timezone"] = zone
    path = tmp_path / f"map-{zone.replace('/', '-')}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load(path, instance_dir=tmp_path, validate_store=validate_store).stores["portal_db"]


def _tickets(store, folder: Path, rows_only: bool) -> list[str]:  # type: ignore[no-untyped-def]
    connector = SqlConnector(store, ConnectorContext(folder))
    sink = DisclosingSink(_RowsOnly(CsvDirectorySink(folder)) if rows_only else CsvDirectorySink(folder), store)
    connector.collect(Subject.from_email("max.mustermann@example.com"), sink)
    connector.close()
    return (folder / "support_tickets.csv").read_text(encoding="utf-8-sig").splitlines()


@pytest.fixture
def naive_times(backend, tmp_path):
    """Max's ticket opened 2026-03-01 09:30:15.5 and closed 2026-07-02 23:59:59, kept without a zone:
    SQLite keeps every time so; on PostgreSQL the columns become "timestamp without time zone"."""
    engine = make_engine(backend.store_url)
    portal.build(engine, portal.DemoSize(subjects=3, rows=10))
    with engine.begin() as conn:
        if backend.real:
            for column in ("opened_at", "closed_at"):
                conn.execute(text(f"ALTER TABLE support_tickets ALTER COLUMN {column} "
                                  f"TYPE timestamp without time zone USING {column} AT TIME ZONE 'UTC'"))
        naive = {"opened_at": datetime(2026, 3, 1, 9, 30, 15, 500000),  # noqa: DTZ001 (the point of the test)
                 "closed_at": datetime(2026, 7, 2, 23, 59, 59)}  # noqa: DTZ001
        conn.execute(update(portal.support_tickets).where(portal.support_tickets.c.account_id == 1).values(**naive))
    yield backend
    portal.build(engine, portal.DemoSize(subjects=12, rows=30))  # what the other tests expect
    blobs.build(engine, backend.media)
    engine.dispose()


@pytest.mark.parametrize(("zone", "opened", "closed"), [
    ("UTC", "2026-03-01T09:30:15.5+00:00", "2026-07-02T23:59:59+00:00"),
    ("Europe/Berlin", "2026-03-01T08:30:15.5+00:00", "2026-07-02T21:59:59+00:00"),  # CET, then CEST
])
def test_times_kept_without_a_zone_are_written_in_utc_from_the_stores_zone(naive_times, tmp_path, monkeypatch,
                                                                            zone, opened, closed):
    monkeypatch.setenv("DSR_PORTAL_DB_URL", naive_times.store_url)
    store = _portal_with_zone(tmp_path, zone)
    paths = {"rows": True, "copy": False} if naive_times.real else {"rows": True}
    written = {mode: _tickets(store, tmp_path / mode, rows_only) for mode, rows_only in paths.items()}
    ticket = next(line for line in written["rows"][1:] if line.startswith("1,1,"))
    assert f",{opened}," in ticket and ticket.endswith(f",{closed}")
    if naive_times.real:
        assert written["copy"] == written["rows"]  # the COPY path converts in SQL, to the same bytes


def test_an_unknown_store_time_zone_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_PORTAL_DB_URL", "sqlite:///unused.sqlite")
    with pytest.raises(DataMapError, match=r"timezone.*'Mars/Olympus' is not a time zone name"):
        _portal_with_zone(tmp_path, "Mars/Olympus")
