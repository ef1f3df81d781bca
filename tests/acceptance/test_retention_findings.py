"""Issue 12.3: the demo holds nothing its own data map says is gone, and records a store keeps past
their retention are reported to the DPO office (task counts, the request's findings, the audit
trail) before the answer goes out: on the row path (SQLite, log lines) and on PostgreSQL's COPY path."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime, timedelta

import yaml

from dsr.exports.aging import before
from tests.acceptance.test_access_export import _answer
from tests.helpers import MAX


def test_the_demo_answer_holds_nothing_past_its_retention(app):
    detail, _package = _answer(app, email=MAX)
    assert detail["findings"] == []
    assert not any("past_retention" in t["counts"] for t in detail["tasks"])
    analytics = next(t for t in detail["tasks"] if t["store"] == "analytics")
    assert analytics["counts"]["found"]["events"] > 0  # there were events to check


def test_log_lines_past_their_retention_are_a_finding_for_the_office(make_app, backend, monkeypatch, tmp_path):
    folder = tmp_path / "analytics"
    shutil.copytree(backend.analytics, folder)
    old = datetime.now(UTC) - timedelta(days=270)  # nine months: what the demo once held
    lines = [{"time": (old + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"), "visitor_id": "v-old",
              "session_id": "s-old", "account": "K00000001", "event": "page_view", "page": "/portal/usage"}
             for n in range(3)]
    with gzip.open(folder / f"events-{old.date().isoformat()}.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    monkeypatch.setenv("DSR_ANALYTICS_DIR", str(folder))

    detail, _package = _answer(make_app(), email=MAX)
    [finding] = detail["findings"]
    assert finding["store"] == "analytics" and finding["table"] == "events" and finding["records"] == 3
    assert finding["retention"] == "analytics" and finding["category"] == "analytics_tracking"
    assert finding["oldest"].startswith(old.strftime("%Y-%m-%dT%H:%M"))
    assert "older than the retention rule 'analytics'" in finding["message"]
    events = [e for e in detail["timeline"] if e["action"] == "retention.exceeded"]
    assert [e["data"]["tables"]["events"]["records"] for e in events] == [3]
    assert "v-old" not in json.dumps(detail)  # counts and dates, never values


def test_sql_records_past_their_retention_are_counted_on_both_export_paths(make_app, settings, tmp_path):
    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    raw["retention"]["usage_30d"] = {"anchor": "collection", "duration": "P30D",
                                     "description": {"de": "30 Tage", "en": "30 days"}}
    raw["categories"]["portal_api_usage"]["retention"] = "usage_30d"
    raw["stores"]["portal_db"]["tables"]["api_usage"]["collected_at"] = "called_at"
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

    detail, _package = _answer(make_app(datamap_path=path), email=MAX)
    portal = next(t for t in detail["tasks"] if t["store"] == "portal_db")
    found = portal["counts"]["found"]["api_usage"]
    assert found > 0  # the demo's API usage is from early 2026: every record is past 30 days
    [finding] = [f for f in detail["findings"] if f["table"] == "api_usage"]
    assert finding["records"] == found and finding["retention"] == "usage_30d"
    assert datetime.fromisoformat(finding["oldest"]) < before(datetime.now(UTC), "P30D")


def test_before_counts_months_and_years_by_the_calendar():
    at = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    assert before(at, "P30D") == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert before(at, "P1M") == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)  # clamped, never 3 March
    assert before(at, "P8Y") == datetime(2018, 3, 31, 12, 0, tzinfo=UTC)
    assert before(at, "PT36H") == datetime(2026, 3, 30, 0, 0, tzinfo=UTC)
