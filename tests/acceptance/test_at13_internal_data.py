"""AT-13 (AC-03, CJEU C-579/21): internal data about the subject is in the access answer: agent notes,
fraud and misuse flags, and the log of who looked at the subject's data, when and why. Staff appear
by function and team; their names only where the data map configures them as essential."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import select

from dsr.db import make_engine
from dsr.demo import portal
from dsr.exports.csv_files import cell
from tests.acceptance.test_access_export import _answer, _report_text
from tests.helpers import read_zip

INTERNAL = (portal.agent_notes, portal.fraud_flags, portal.access_log)
STAFF_REFERENCES = (("agent_notes", "author_id"), ("fraud_flags", "set_by"), ("access_log", "employee_id"))
HIDDEN_STAFF_FIELDS = ("name", "staff_number", "email")


def _stored(backend: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Max's internal records and the staff they name, straight from the store, by table and id."""
    engine = make_engine(backend.store_url)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for t in INTERNAL:
            rows = conn.execute(select(t).where(t.c.account_id == 1)).mappings().all()
            out[t.name] = {str(r["id"]): dict(r) for r in rows}
        staff = {r[column] for table, column in STAFF_REFERENCES for r in out[table].values()} - {None}
        t = portal.employees
        out["employees"] = {str(r["id"]): dict(r) for r in conn.execute(select(t).where(t.c.id.in_(staff))).mappings()}
    engine.dispose()
    return out


def _all_staff_names(backend: Any) -> list[str]:
    engine = make_engine(backend.store_url)
    with engine.connect() as conn:
        names = [str(n) for n in conn.execute(select(portal.employees.c.name)).scalars()]
    engine.dispose()
    return names


def _without(names: list[str], text: str) -> str:
    """The text with each name cut out as the data map's mask: names says: whole words, any case,
    also with a genitive s."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}s?(?!\w)", "[…]", text, flags=re.IGNORECASE)
    return text


def _as_csv(record: dict[str, Any], columns: list[str]) -> dict[str, str]:
    """What the CSV row of a stored record holds, through the same cell rules as the export (a time
    kept without a zone, as SQLite keeps them, is in the store's zone: UTC in the default map)."""
    return {c: str(cell(_utc(record[c]))) for c in columns}


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def _everything(package: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return "\n".join(archive.read(n).decode("utf-8-sig", errors="replace") for n in archive.namelist()
                         if n.endswith((".csv", ".json")))


def _with_names_essential(settings: Any, tmp_path: Any) -> Any:
    """A map variant where the DPO found staff names essential (e.g. the subject disputes one access)."""
    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    employees = raw["stores"]["portal_db"]["tables"]["employees"]
    employees["fields"]["name"] = {
        "disclose": "export",
        "reason": {"de": "für die Prüfung der Zugriffe erforderlich", "en": "essential to check the accesses"},
        "description": {"de": "Name: angegeben, weil für die Prüfung der Zugriffe erforderlich (EuGH C-579/21)",
                        "en": "name: given because essential to check the accesses (CJEU C-579/21)"},
    }
    path = tmp_path / "names-essential.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_AT_13_agent_notes_fraud_flags_and_access_log_are_in_the_package(app, backend):
    stored = _stored(backend)
    assert all(stored[t.name] for t in INTERNAL) and stored["employees"]  # the demo subject has all of it
    assert any(r["set_by"] is None for r in stored["fraud_flags"].values())  # one set by the rule engine

    detail, package = _answer(app)
    tables = read_zip(package)
    everyone = _all_staff_names(backend)
    for t in INTERNAL:
        rows = tables[f"portal_db/{t.name}.csv"]
        columns = list(rows[0])
        expected = {i: _as_csv(r, columns) for i, r in stored[t.name].items()}
        if t.name == "agent_notes":  # AC-25: the notes as written, but for the staff names in them
            expected = {i: {**r, "note": _without(everyone, r["note"])} for i, r in expected.items()}
        assert {str(r["id"]): r for r in rows} == expected, t.name
    notes = " ".join(r["note"] for r in tables["portal_db/agent_notes.csv"])
    assert "nach Rücksprache mit […] (Forderungsmanagement)" in notes and "laut […] Gesprächsnotiz" in notes
    # The fraud rule that fired is a trade secret (Art. 15(4)): why and with what effect are given.
    flags = tables["portal_db/fraud_flags.csv"]
    assert "rule" not in flags[0] and {"flag", "reason", "set_at", "set_by", "action"} <= set(flags[0])
    assert not any(r["rule"] in _everything(package) for r in stored["fraud_flags"].values())
    access = tables["portal_db/access_log.csv"]
    assert {"accessed_at", "employee_id", "resource", "purpose", "ticket_id"} <= set(access[0])

    # Staff: the ones named by those records, by function and team; no name, personnel number or e-mail.
    staff = tables["portal_db/employees.csv"]
    assert list(staff[0]) == ["id", "role", "team"]
    assert {r["id"]: r for r in staff} == {i: _as_csv(r, ["id", "role", "team"])
                                           for i, r in stored["employees"].items()}
    text, report = _everything(package), _report_text(package)
    for person in stored["employees"].values():
        for field in HIDDEN_STAFF_FIELDS:
            assert person[field] not in text and person[field] not in report, (field, person[field])

    # Each redaction counted (records, never values) and explained in the report.
    portal_task = next(t for t in detail["tasks"] if t["store"] == "portal_db")
    redactions = portal_task["counts"]["redactions"]
    assert redactions["fraud_flags"]["rule"]["records"] == len(stored["fraud_flags"])
    for field in HIDDEN_STAFF_FIELDS:
        assert redactions["employees"][field] == {"disclose": "omit", "mask": None,
                                                  "records": len(stored["employees"]),
                                                  "outcomes": {"default": len(stored["employees"])}}
    assert redactions["agent_notes"]["note"] == {"disclose": "mask", "mask": "names",
                                                 "records": len(stored["agent_notes"]),
                                                 "outcomes": {"default": len(stored["agent_notes"])}}
    assert "trade secret" in report and "C-579/21" in report and "names of our staff are cut out" in report
    assert 'names of our staff in the text replaced by "[…]"' in report
    # Each category with its Art. 15 information, and the codes explained in the glossary.
    datamap = app.extensions["dsr"].runtime.datamap
    for category in ("agent_notes", "fraud_flags", "access_log", "staff_involved"):
        c = datamap.categories[category]
        assert c.title["en"] in report, category
        assert datamap.retention[c.retention].description["en"] in report, category
        for purpose in c.purposes:
            assert datamap.purposes[purpose].legal_basis in report, (category, purpose)
    for code, meaning in (("traffic_spike", "unusually many calls"), ("manual_review", "review by a person"),
                          ("fraud_review", "reviewing a fraud or misuse flag")):
        assert code in report and meaning in report, code


def test_AT_13_staff_names_appear_only_where_the_map_configures_them_as_essential(make_app, backend, settings,
                                                                                  tmp_path):
    stored = _stored(backend)
    app = make_app(datamap_path=_with_names_essential(settings, tmp_path))
    detail, package = _answer(app)
    staff = read_zip(package)["portal_db/employees.csv"]
    assert list(staff[0]) == ["id", "name", "role", "team"]
    assert {r["id"]: r for r in staff} == {i: _as_csv(r, ["id", "name", "role", "team"])
                                           for i, r in stored["employees"].items()}
    text = _everything(package)
    for person in stored["employees"].values():
        assert person["staff_number"] not in text and person["email"] not in text  # still not essential
    report = _report_text(package)
    assert "essential to check the accesses" in report
    redactions = next(t for t in detail["tasks"] if t["store"] == "portal_db")["counts"]["redactions"]
    assert "name" not in redactions["employees"] and "email" in redactions["employees"]
