"""The package: every CSV has a JSON twin with the same rows, a JSON Schema, and a data dictionary."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import jsonschema
from pypdf import PdfReader

from dsr.exports.csv_files import unguarded
from dsr.exports.json_files import records
from tests.helpers import dpo_auth, submit, work_off


def _as_text(value: object) -> object:
    """A typed value of a JSON twin as its CSV cell reads (numbers, booleans and objects are typed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value if value is None or isinstance(value, str) else str(value)


def test_every_table_comes_as_csv_and_json_with_schema_and_dictionary(client, auth, run_jobs):
    created = submit(client)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    run_jobs()
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    with zipfile.ZipFile(io.BytesIO(client.get(url.replace("http://localhost", "")).data)) as package:
        names = set(package.namelist())
        dictionary = json.loads(package.read("documentation/data-dictionary.json"))
        csvs = sorted(n for n in names if n.endswith(".csv") and not n.startswith("documentation/"))
        assert csvs and set(dictionary["files"]) == set(csvs)
        for name in csvs:
            text = package.read(name).decode("utf-8")
            assert text.startswith("\ufeff")  # BOM: spreadsheets read the umlauts right
            rows = [{k: (unguarded(v) if v != "" else None) for k, v in row.items()}
                    for row in csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))]
            twin = json.loads(package.read(name.removesuffix(".csv") + ".json"))
            assert twin["columns"] == list(rows[0] if rows else twin["columns"]), name
            assert [{k: _as_text(v) for k, v in r.items()} for r in records(twin)] == rows, name
            schema = json.loads(package.read("documentation/schemas/" + name.removesuffix(".csv") + ".schema.json"))
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.validate(twin, schema)
        calls = dictionary["files"]["portal_db/call_records.csv"]
        assert calls["category"] == "comm_traffic" and calls["title"]["de"].startswith("Verkehrsdaten")
        assert calls["columns"]["to_number"]["masked"]["how"] == "last3"
        assert "password_hash" not in dictionary["files"]["portal_db/accounts.csv"]["columns"]
        # Names in words, from the data map's labels (issue 12.4), in the dictionary and the companion of
        # the CSV headers a spreadsheet user reads.
        assert calls["label"] == {"de": "Anrufe", "en": "Calls"}
        assert calls["columns"]["to_number"]["label"] == {"de": "An Rufnummer", "en": "To number"}
        companion = list(csv.DictReader(io.StringIO(package.read("documentation/columns.csv").decode("utf-8-sig"))))
        assert {(r["file"], r["column"]) for r in companion} == {
            (f, c) for f, entry in dictionary["files"].items() for c in entry["columns"]}
        mfa = next(r for r in companion if r["column"] == "mfa_enabled")
        assert mfa["label_en"] != "mfa_enabled" and mfa["label_de"] != "mfa_enabled"
        report = package.read("report.pdf")  # at the top of the package, where a person looks first
        assert report.startswith(b"%PDF")
        manifest = json.loads(package.read("manifest.json"))
        assert manifest["report"]["pages"] > 2
        listed = {f["path"] for f in manifest["files"]}
        assert listed == names - {"manifest.json"}


def test_the_report_shows_as_many_rows_as_configured_in_the_configured_time_zone(make_app):
    """DSR_REPORT_PREVIEW_ROWS and DSR_TIMEZONE reach the report the worker renders (beside the packing)."""
    app = make_app(report_preview_rows=2, timezone="UTC")
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client, locale="en")
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app)
    url = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()[0]["download_url"]
    with zipfile.ZipFile(io.BytesIO(client.get(url.replace("http://localhost", "")).data)) as package:
        text = " ".join(" ".join((p.extract_text() or "").split())
                        for p in PdfReader(io.BytesIO(package.read("report.pdf"))).pages)
        calls = list(csv.DictReader(io.StringIO(package.read("portal_db/call_records.csv").decode("utf-8-sig"))))
    assert "shows the first 2 records of each table" in text
    assert len(calls) > 2 and f"{len(calls) - 2:,} more rows in portal_db/call_records.csv" in text
    assert "(UTC)" in text and "(CET)" not in text and "(CEST)" not in text
