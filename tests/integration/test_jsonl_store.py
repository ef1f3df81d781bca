"""jsonl stores in a data map: the stanzas proposed for the default map load and find the demo subject,
and the map's field rules apply to log lines on their way into the export."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMap, parse
from dsr.demo import logs
from dsr.exports.csv_files import CsvDirectorySink
from dsr.exports.disclosure import DisclosingSink
from dsr.stores import ConnectorContext, Subject, connector_class, validate_store

MAX = "max.mustermann@example.com"

# The stanzas for dsr/datamap/default.yaml (under ``stores:``), exactly as proposed.
STANZAS = """
  web_logs:
    connector: jsonl
    description:
      de: Protokolle des Webservers des Portals (JSON-Zeilen, rotiert, 7 Tage)
      en: the portal's web server logs (JSON lines, rotated, kept 7 days)
    connection:
      path: "${DSR_WEB_LOG_DIR:-{instance_dir}/logs/web}"
      pattern: "access.log*"
    identities:
      email: {field: user}
      customer_id: {field: account}
      ip_address: {field: remote_addr}
    tables:
      requests:
        category: web_server_logs
        description:
          de: Seitenaufrufe, bei denen Sie angemeldet waren oder die von Ihrer IP-Adresse kamen
          en: page requests made while you were logged in, or from your IP address
        columns: [time, remote_addr, method, path, status, bytes, user_agent, referer, user, account]
        fields:
          remote_addr:
            description:
              de: IP-Adresse, von der die Seite abgerufen wurde
              en: IP address the page was requested from
          user_agent:
            description:
              de: Browser und Betriebssystem laut Anfrage
              en: browser and operating system as sent with the request
          referer:
            description:
              de: Seite, von der aus der Aufruf kam
              en: page the request came from
  api_logs:
    connector: jsonl
    description:
      de: Protokolle des API-Gateways (JSON-Zeilen, rotiert)
      en: the API gateway's logs (JSON lines, rotated)
    connection:
      path: "${DSR_API_LOG_DIR:-{instance_dir}/logs/api}"
      pattern: "api.log*"
    identities:
      customer_id: {field: account}
      ip_address: {field: remote_addr}
    tables:
      calls:
        category: portal_api_usage
        description:
          de: Aufrufe der Kommunikations-APIs mit Ihrem Konto
          en: calls of the communication APIs with your account
        columns: [time, account, api_key_id, endpoint, method, status, latency_ms, remote_addr, client]
        fields:
          api_key_id:
            description:
              de: Ende der Kennung des verwendeten API-Schlüssels (nie der Schlüssel selbst)
              en: end of the id of the API key used (never the key itself)
          client:
            description:
              de: SDK und Version laut Anfrage
              en: SDK and version as sent with the request
"""


def default_map_with(stanzas: str, instance_dir: Path, environ: dict[str, str] | None = None) -> DataMap:
    text = DEFAULT_DATAMAP.read_text(encoding="utf-8").rstrip("\n") + "\n" + stanzas
    return parse(yaml.safe_load(text), source=DEFAULT_DATAMAP, instance_dir=instance_dir, environ=environ or {},
                 validate_store=validate_store)


def export(datamap: DataMap, name: str, subject: Subject, out: Path, instance_dir: Path) -> tuple[Any, Any]:
    store = datamap.stores[name]
    connector = connector_class(store.connector)(store, ConnectorContext(instance_dir))
    sink = DisclosingSink(CsvDirectorySink(out), store)
    return connector.collect(subject, sink), sink


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_the_proposed_stanzas_load_with_the_default_map_and_find_max(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    logs.build(instance / "logs", lines=400)
    datamap = default_map_with(STANZAS, instance)
    assert datamap.stores["web_logs"].resolved().connection["path"] == f"{instance}/logs/web"
    for name in ("web_logs", "api_logs"):
        assert connector_class("jsonl")(datamap.stores[name], ConnectorContext(instance)).check() == []

    subject = Subject({"email": MAX, "customer_id": "K00000001"})
    result, _sink = export(datamap, "web_logs", subject, tmp_path / "out", instance)
    rows = read_csv(tmp_path / "out" / "requests.csv")
    assert result.found == {"requests": len(rows)} and len(rows) == 12
    assert list(rows[0]) == ["log_file", "log_line", "time", "remote_addr", "method", "path", "status", "bytes",
                             "user_agent", "referer", "user", "account", "extra"]
    assert all(r["user"].lower() == MAX and r["account"] == "K00000001" for r in rows)
    assert not any("not JSON" in n for n in result.notes)  # the demo's broken lines do not name Max

    result, _sink = export(datamap, "api_logs", subject, tmp_path / "api", instance)
    rows = read_csv(tmp_path / "api" / "calls.csv")
    assert result.found == {"calls": len(rows)} and len(rows) >= 12
    assert {r["account"] for r in rows} == {"K00000001"} and all(r["extra"] == "" for r in rows)
    assert json.loads(rows[0]["client"])["sdk"]


def test_the_log_folder_can_be_set_by_environment_variable(tmp_path: Path) -> None:
    datamap = default_map_with(STANZAS, tmp_path, {"DSR_WEB_LOG_DIR": "/srv/portal/logs"})
    assert datamap.stores["web_logs"].resolved().connection["path"] == "/srv/portal/logs"
    assert datamap.stores["api_logs"].resolved().connection["path"] == f"{tmp_path}/logs/api"


def test_field_rules_of_the_map_apply_to_log_lines(tmp_path: Path) -> None:
    logs.build(tmp_path / "logs", lines=300)
    stanza = """
  web_logs:
    connector: jsonl
    description: {de: Webserver-Protokolle, en: web server logs}
    connection: {path: "{instance_dir}/logs/web", pattern: "access.log*"}
    identities:
      email: {field: user}
    tables:
      requests:
        category: web_server_logs
        fields:
          remote_addr:
            disclose: mask
            mask: last3
            reason: {de: gekürzt, en: shortened}
          user_agent:
            disclose: omit
            reason: {de: nicht herausgegeben, en: not disclosed}
"""
    datamap = default_map_with(stanza, tmp_path)
    result, sink = export(datamap, "web_logs", Subject({"email": MAX}), tmp_path / "out", tmp_path)
    rows = read_csv(tmp_path / "out" / "requests.csv")
    assert result.found == {"requests": len(rows)} and len(rows) == 12
    assert "user_agent" not in rows[0] and "log_file" in rows[0]
    assert {r["remote_addr"] for r in rows} == {"203.0.11x.xx"}  # Max's 203.0.113.10 without its last 3 digits
    summary = sink.summary()["requests"]
    assert {f: (v["disclose"], v["mask"]) for f, v in summary.items()} == {
        "remote_addr": ("mask", "last3"), "user_agent": ("omit", None)}
    assert all(12 in v.values() for v in summary.values())  # every one of Max's 12 lines was redacted
