"""The data map: the shipped default is valid; every kind of broken map fails naming file, line and field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from dsr.cli import main
from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMapError, load
from dsr.datamap.record import COLUMNS, render
from dsr.demo import processor_sim
from dsr.stores import validate_store

DEFAULT: dict[str, Any] = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))


def _load(path: Path) -> Any:
    return load(path, instance_dir=path.parent, environ={}, validate_store=validate_store)


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_the_default_map_is_valid_and_complete():
    m = _load(DEFAULT_DATAMAP)
    assert m.version and m.controller.name == "Telekom Deutschland GmbH"
    # every category is reachable from a purpose with a legal basis, a retention rule and an authority
    for category in m.categories.values():
        assert all(m.purposes[p].legal_basis for p in category.purposes)
        assert m.retention[category.retention].description["de"]
    table = m.stores["portal_db"].tables["accounts"]
    assert table.rule("password_hash").disclose == "omit" and table.rule("password_hash").reason
    assert table.rule("vat_id").category == "acct_company"
    assert table.rule("first_name").category == "acct_identity"  # unlisted fields take the table's category


def _broken(mutate):  # type: ignore[no-untyped-def]
    data = copy.deepcopy(DEFAULT)
    mutate(data)
    return data


def _tables(d: dict[str, Any]) -> dict[str, Any]:
    return d["stores"]["portal_db"]["tables"]


BROKEN = [
    pytest.param(lambda d: _tables(d)["accounts"].update(category="google_maps"),
                 "stores.portal_db.tables.accounts.category", "category 'google_maps' is marked stored: false",
                 ("category", "accounts"), id="table-in-a-category-that-stores-nothing"),
    pytest.param(lambda d: _tables(d)["accounts"].update(category="nope"),
                 "stores.portal_db.tables.accounts.category", "unknown category 'nope'", ("category", "accounts"),
                 id="unknown-category"),
    pytest.param(lambda d: _tables(d)["consents"]["references"].update(account_id="acounts.id"),
                 "stores.portal_db.tables.consents.references.account_id", "unknown table 'acounts'",
                 ("account_id", "consents"), id="reference-to-missing-table"),
    pytest.param(lambda d: _tables(d)["employees"]["references"]["id"].append("agent_note.author_id"),
                 "stores.portal_db.tables.employees.references.id", "unknown table 'agent_note'",
                 ("id", "employees"), id="one-of-several-references-to-a-missing-table"),
    pytest.param(lambda d: _tables(d)["employees"]["references"]["id"].append("access_log"),
                 "stores.portal_db.tables.employees.references", "'access_log' must be written table.column",
                 ("references", "employees"), id="one-of-several-references-not-table-column"),
    pytest.param(lambda d: (_tables(d)["accounts"].setdefault("references", {}).update(id="invoices.account_id")),
                 "stores.portal_db.tables.accounts.references", "references form a cycle", ("accounts", None),
                 id="cycle"),
    pytest.param(lambda d: _tables(d)["api_usage"].pop("category"),
                 "stores.portal_db.tables.api_usage.category", "has no category", ("api_usage", None),
                 id="table-without-category"),
    pytest.param(lambda d: d["purposes"]["billing"].pop("legal_basis"),
                 "purposes.billing.legal_basis", "Missing data for required field", ("billing", "purposes"),
                 id="purpose-without-legal-basis"),
    pytest.param(lambda d: d["categories"]["invoices"].pop("retention"),
                 "categories.invoices.retention", "Missing data for required field", ("invoices", "categories"),
                 id="category-without-retention"),
    pytest.param(lambda d: d["categories"]["invoices"].update(purposes=[]),
                 "categories.invoices.purposes", "at least one purpose", ("purposes", "invoices"),
                 id="category-without-purpose"),
    pytest.param(lambda d: d["categories"]["invoices"].update(retention="forever"),
                 "categories.invoices.retention", "unknown retention rule 'forever'", ("retention", "invoices"),
                 id="unknown-retention-rule"),
    pytest.param(lambda d: _tables(d)["accounts"]["fields"]["password_hash"].pop("reason"),
                 "stores.portal_db.tables.accounts.fields.password_hash.reason", "needs a reason",
                 ("password_hash", None), id="omitted-field-without-reason"),
    pytest.param(lambda d: _tables(d)["accounts"]["fields"].update(email={"category": "emails"}),
                 "stores.portal_db.tables.accounts.fields.email.category", "unknown category 'emails'",
                 ("fields", "password_hash"), id="field-with-unknown-category"),
    pytest.param(lambda d: d["stores"]["portal_db"].update(connector="mongodb"),
                 "stores.portal_db.connector", "no connector for store type 'mongodb'", ("connector", "portal_db"),
                 id="unknown-connector"),
    pytest.param(lambda d: d["stores"]["portal_db"]["identities"]["email"].pop("column"),
                 "stores.portal_db.identities.email.column", "Missing data for required field",
                 ("email", "identities"), id="identity-without-column"),
    pytest.param(lambda d: d["stores"]["portal_db"]["connection"].update(url="postgresql://dsr:hunter2@db/portal"),
                 "stores.portal_db.connection.url", "holds a password", ("url", "connection"),
                 id="password-in-the-file"),
    pytest.param(lambda d: d["categories"]["invoices"]["title"].pop("de"),
                 "categories.invoices.title", "needs a text in de", ("title", "invoices"), id="missing-german-text"),
    pytest.param(lambda d: d["recipients"]["vonage"].update(notify={"via": "none"}),
                 "recipients.vonage.notify.reason", "needs a reason (Art. 19)", ("notify", "vonage"),
                 id="notify-no-one-without-reason"),
    pytest.param(lambda d: d.pop("authorities"), "authorities", "Missing data for required field", None,
                 id="no-supervisory-authorities"),
    pytest.param(lambda d: _tables(d)["agent_notes"]["fields"]["note"].pop("names_from"),
                 "stores.portal_db.tables.agent_notes.fields.note.names_from", "mask: names needs names_from",
                 ("note", "fields"), id="names-mask-without-its-source"),
    pytest.param(lambda d: _tables(d)["agent_notes"]["fields"]["note"].update(names_from="staff.name"),
                 "stores.portal_db.tables.agent_notes.fields.note.names_from", "unknown table 'staff'",
                 ("names_from", "note"), id="names-from-a-missing-table"),
    pytest.param(lambda d: _tables(d)["agent_notes"]["fields"]["note"].update(names_from="employees"),
                 "stores.portal_db.tables.agent_notes.fields.note.names_from", "must be written table.column",
                 ("names_from", "note"), id="names-from-not-table-column"),
    pytest.param(lambda d: d["stores"]["web_logs"]["tables"]["requests"]["fields"].update(
                     user_agent={"disclose": "mask", "mask": "names", "names_from": "requests.user",
                                 "reason": {"de": "x", "en": "x"}}),
                 "stores.web_logs.tables.requests.fields.user_agent.names_from", "cannot look up names",
                 ("user_agent", "fields"), id="names-mask-in-a-log-store"),
    pytest.param(lambda d: _tables(d)["invited_users"].update(erasure={"method": "delete",
                                                                       "replacements": {"email": "x"}}),
                 "stores.portal_db.tables.invited_users.erasure.replacements", "replacements are for method null",
                 ("replacements", "erasure"), id="replacements-without-null"),
    pytest.param(lambda d: _tables(d)["invited_users"].update(erasure={"method": "null", "fields": ["first_name"],
                                                                       "replacements": {"email": "x"}}),
                 "stores.portal_db.tables.invited_users.erasure.replacements", "not among the fields changed: email",
                 ("replacements", "erasure"), id="replacement-of-a-column-not-changed"),
    pytest.param(lambda d: _tables(d)["invited_users"].update(erasure={"method": "delete", "dated_by": "invited_at"}),
                 "stores.portal_db.tables.invited_users.erasure.dated_by", "dated_by is for method retain",
                 ("dated_by", "erasure"), id="dated-by-without-retain"),
    pytest.param(lambda d: _tables(d)["invoices"]["erasure"].update(dated_by="issued"),
                 "stores.portal_db.tables.invoices.erasure.dated_by", "table invoices lists no field 'issued'",
                 ("dated_by", "erasure"), id="dated-by-a-column-not-listed"),
    pytest.param(lambda d: _tables(d)["accounts"]["erasure"].update(dated_by="created_at"),
                 "stores.portal_db.tables.accounts.erasure.dated_by",
                 "retention rule 'contract_plus_30d' counts from contract_end, which no date in a record tells",
                 ("dated_by", "erasure"), id="dated-by-under-a-contract-rule"),
    pytest.param(lambda d: d["stores"]["web_logs"]["tables"]["requests"]["erasure"].update(dated_by="time"),
                 "stores.web_logs.tables.requests.erasure.dated_by", "a jsonl store cannot date the records it keeps",
                 ("dated_by", "erasure"), id="dated-by-in-a-log-store"),
]


def test_erasure_names_replacements_for_not_null_columns(tmp_path):
    data = copy.deepcopy(DEFAULT)
    _tables(data)["invited_users"]["erasure"] = {"method": "null", "fields": ["email", "first_name"],
                                                 "replacements": {"email": "erased@invalid"}}
    erasure = _load(_write(tmp_path, data)).stores["portal_db"].tables["invited_users"].erasure
    assert (erasure.method, erasure.fields, erasure.replacements) == (
        "null", ("email", "first_name"), {"email": "erased@invalid"})
    assert _load(DEFAULT_DATAMAP).stores["portal_db"].tables["accounts"].erasure.replacements == {}


@pytest.mark.parametrize(("mutate", "path", "message", "line_key"), BROKEN)
def test_a_broken_map_names_file_line_field_and_problem(tmp_path, mutate, path, message, line_key):
    file = _write(tmp_path, _broken(mutate))
    with pytest.raises(DataMapError) as caught:
        _load(file)
    matching = [p for p in caught.value.problems if f": {path}" in p and message in p]
    assert matching, caught.value.problems
    if line_key:
        # The line named holds the offending key itself, or the nearest part of the map that exists.
        match = re.match(rf"{re.escape(str(file))}:(\d+): ", matching[0])
        assert match, matching[0]
        text = file.read_text(encoding="utf-8").splitlines()[int(match[1]) - 1]
        key = re.match(r"\s*-?\s*([^:]+):", text)
        assert key and key[1] in path.split("."), (text, path)


def test_invalid_yaml_and_a_missing_file_are_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stores: [unclosed\n")
    with pytest.raises(DataMapError, match="not valid YAML"):
        _load(bad)
    with pytest.raises(DataMapError, match="cannot read the data map"):
        _load(tmp_path / "missing.yaml")


def test_a_connection_variable_is_read_where_the_store_is_used_not_when_the_map_is_loaded(tmp_path, monkeypatch):
    """The web tier loads the map too, but needs no database password: an unset variable is named
    when the store's connector is built (a worker), with the store."""
    from dsr.datamap import UnsetVariable
    from dsr.stores import ConnectorContext
    from dsr.stores.sql import SqlConnector

    monkeypatch.delenv("DSR_UNSET_PW", raising=False)
    data = copy.deepcopy(DEFAULT)
    data["stores"]["portal_db"]["connection"]["url"] = "postgresql://u:${DSR_UNSET_PW}@db.example/portal"
    store = _load(_write(tmp_path, data)).stores["portal_db"]
    assert store.variables == {"url": ("DSR_UNSET_PW",)}
    with pytest.raises(UnsetVariable, match=r"^store portal_db: the environment variable DSR_UNSET_PW "
                                            r"\(in connection.url\) is not set in this process$"):
        SqlConnector(store, ConnectorContext(tmp_path))
    resolved = store.resolved({"DSR_UNSET_PW": "pw"})
    assert SqlConnector(resolved, ConnectorContext(tmp_path)).store.connection["url"] == "postgresql://u:pw@db.example/portal"


def test_a_dollar_brace_that_is_no_variable_is_refused(tmp_path):
    data = copy.deepcopy(DEFAULT)
    data["stores"]["portal_db"]["connection"]["url"] = "postgresql://u:${db_password}@db.example/portal"
    with pytest.raises(DataMapError, match=r"stores.portal_db.connection.url: holds a \$\{ that is not a variable"):
        _load(_write(tmp_path, data))


def test_cli_check_passes_the_default_and_fails_a_broken_map(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_INSTANCE_DIR", str(tmp_path))
    ok = CliRunner().invoke(main, ["datamap", "check", str(DEFAULT_DATAMAP)])
    assert ok.exit_code == 0 and "valid" in ok.output
    file = _write(tmp_path, _broken(lambda d: _tables(d)["accounts"].update(category="nope")))
    bad = CliRunner().invoke(main, ["datamap", "check", str(file)])
    assert bad.exit_code == 1 and "unknown category 'nope'" in bad.output


def test_cli_check_connect_finds_missing_tables_and_columns(tmp_path, monkeypatch):
    from dsr.db import make_engine
    from dsr.demo import logs, portal

    store = tmp_path / "portal.sqlite"
    portal.build(make_engine(f"sqlite:///{store}", create_folder=True), portal.DemoSize(2, 3))
    logs.build(tmp_path / "logs", lines=100)
    from dsr.demo import blobs

    blobs.build(make_engine(f"sqlite:///{store}"), tmp_path / "media")
    from dsr.demo import analytics

    analytics.build(tmp_path / "analytics", analytics.consent_windows(make_engine(f"sqlite:///{store}")))
    monkeypatch.setenv("DSR_INSTANCE_DIR", str(tmp_path))
    monkeypatch.setenv("DSR_PORTAL_DB_URL", f"sqlite:///{store}")
    monkeypatch.setenv("DSR_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("DSR_VONAGE_SECRET", "s" * 32)
    simulator = processor_sim.serve(port=0, secret="s" * 32)  # the processor's side, on loopback
    monkeypatch.setenv("DSR_VONAGE_URL", simulator.url)
    try:
        ok = CliRunner().invoke(main, ["datamap", "check", "--connect", str(DEFAULT_DATAMAP)])
    finally:
        simulator.shutdown()
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("reachable, everything the map names exists") == 6
    data = copy.deepcopy(DEFAULT)
    _tables(data)["consents"]["references"] = {"acount_id": "accounts.id"}
    _tables(data)["ghosts"] = {"key": "id", "category": "acct_identity", "references": {"account_id": "accounts.id"}}
    file = _write(tmp_path, data)
    bad = CliRunner().invoke(main, ["datamap", "check", "--connect", str(file)])
    assert bad.exit_code == 1
    assert "stores.portal_db.tables.consents.references.acount_id: no column 'acount_id'" in bad.output
    assert "stores.portal_db.tables.ghosts: no such table in the store" in bad.output
    missing = CliRunner().invoke(main, ["datamap", "check", "--connect", str(DEFAULT_DATAMAP)],
                                 env={"DSR_PORTAL_DB_URL": f"sqlite:///{tmp_path}/gone.sqlite"})
    assert missing.exit_code == 1 and "cannot connect" in missing.output
    assert not (tmp_path / "gone.sqlite").exists()  # checking a store never creates it


@pytest.mark.parametrize("fmt", ["table", "csv", "md"])
def test_show_prints_the_record_of_processing(fmt):
    m = _load(DEFAULT_DATAMAP)
    text = render(m, fmt, "de")
    for category in m.categories.values():
        assert category.title["de"] in text
    if fmt == "csv":
        assert text.splitlines()[0] == ",".join(COLUMNS)
    if fmt == "md":
        assert text.count("\n") == len(m.categories) + 2
    assert "portal_db.call_records" in text and "§ 14b UStG" in text


def test_cli_show(monkeypatch, tmp_path):
    monkeypatch.setenv("DSR_INSTANCE_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["datamap", "show", "--format", "csv", "--locale", "en"])
    assert result.exit_code == 0 and "Invoices and bookings" in result.output


def test_cli_check_names_the_variables_this_process_lacks_and_who_needs_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DSR_INSTANCE_DIR", str(tmp_path))
    monkeypatch.delenv("DSR_UNSET_PW", raising=False)
    monkeypatch.delenv("DSR_VONAGE_SECRET", raising=False)
    data = copy.deepcopy(DEFAULT)
    data["stores"]["portal_db"]["connection"]["url"] = "postgresql://u:${DSR_UNSET_PW}@db.example/portal"
    result = CliRunner().invoke(main, ["datamap", "check", str(_write(tmp_path, data))])
    assert result.exit_code == 0 and "valid" in result.output
    assert "DSR_UNSET_PW is not set here (needed by: worker)" in result.output
    assert "DSR_VONAGE_SECRET is not set here (needed by: web, worker)" in result.output
