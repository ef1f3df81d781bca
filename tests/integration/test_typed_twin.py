"""The JSON twins hold typed values (Art. 20: machine-readable), as the package's JSON Schema says,
whichever path wrote the CSV: PostgreSQL's COPY or the row-by-row path (SQLite)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import jsonschema

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import load
from dsr.exports.csv_files import CsvDirectorySink
from dsr.exports.disclosure import DisclosingSink
from dsr.exports.json_files import add_json, dictionary, records, schemas
from dsr.exports.package import PackageWriter
from dsr.stores import ConnectorContext, Subject, validate_store
from dsr.stores.sql import SqlConnector

UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def test_twins_hold_numbers_booleans_null_and_times_and_match_their_schemas(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_PORTAL_DB_URL", backend.store_url)
    m = load(DEFAULT_DATAMAP, instance_dir=tmp_path, validate_store=validate_store)
    store = m.stores["portal_db"]
    connector = SqlConnector(store, ConnectorContext(tmp_path))
    out = tmp_path / "portal_db"
    connector.collect(Subject.from_email("max.mustermann@example.com"), DisclosingSink(CsvDirectorySink(out), store))
    connector.close()
    add_json(out)
    doc = dictionary(m, {"portal_db": out})
    for name, schema in schemas(doc):
        twin = json.loads((out / Path(name).name.replace(".schema.json", ".json")).read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(twin, schema)

    calls = list(records(json.loads((out / "call_records.json").read_text(encoding="utf-8"))))
    assert calls and all(isinstance(c["id"], int) and isinstance(c["caller_withheld"], bool) for c in calls)
    assert all(isinstance(c["duration_s"], int | None) for c in calls)
    assert all(UTC_TIME.match(c["started_at"]) for c in calls)  # ISO 8601 with the offset
    assert all(isinstance(c["to_number"], str) for c in calls if c["to_number"] is not None)  # masked: text
    bills = list(records(json.loads((out / "invoices.json").read_text(encoding="utf-8"))))
    # Money stays exact text with its scale ("19.90", never 19.9 or 19.899999...).
    assert bills and all(re.fullmatch(r"-?\d+\.\d\d", b["net_amount"]) for b in bills)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", b["issued_on"]) for b in bills)
    lines = list(records(json.loads((out / "invoice_lines.json").read_text(encoding="utf-8"))))
    assert all(isinstance(x["quantity"], int) and re.fullmatch(r"\d+\.\d{4}", x["unit_price"]) for x in lines)
    log = list(records(json.loads((out / "access_log.json").read_text(encoding="utf-8"))))
    assert any(x["ticket_id"] is None for x in log) and any(isinstance(x["ticket_id"], int) for x in log)

    columns = doc["files"]["portal_db/call_records.csv"]["columns"]
    assert (columns["duration_s"]["type"], columns["caller_withheld"]["type"], columns["started_at"]["type"],
            columns["to_number"]["type"]) == ("integer", "boolean", "date-time", "string")
    cells = {c["title"]: c for c in dict(schemas(doc))["portal_db/call_records.schema.json"]["properties"]["rows"]
             ["items"]["prefixItems"]}
    assert cells["duration_s"]["type"] == ["integer", "null"] and cells["started_at"]["format"] == "date-time"
    assert cells["to_number"]["type"] == ["string", "null"]  # a masked field is text, whatever the store keeps

    # The kinds are noted beside the CSV for the twin, never packed.
    assert (out / ".call_records.kinds").exists()
    sealed = tmp_path / "p.zip"
    with sealed.open("wb") as f:
        package = PackageWriter(f)
        package.add_folder("portal_db", out)
        package.finish({})
    assert not [n for n in zipfile.ZipFile(sealed).namelist() if ".kinds" in n]
