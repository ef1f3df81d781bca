"""Acceptance tests of gdpr-requirements.md section 5.2 (access) and 5.4 (portability), by their ids.

Each runs a real request end to end (API -> worker -> package) and reads the package back,
including the PDF report as text.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from typing import Any

import pytest
import yaml
from pypdf import PdfReader
from rq.scheduler import RQScheduler

from dsr.config import DEFAULT_DATAMAP
from dsr.demo import processor_sim
from tests.helpers import MAX, dpo_auth, read_zip, submit, work_off

SECRET = "acceptance-secret-" + "s" * 20


def _answer(app, email: str = MAX, kind: str = "access", locale: str = "en") -> tuple[dict[str, Any], bytes]:  # type: ignore[no-untyped-def]
    client, auth = app.test_client(), dpo_auth(app)
    created = submit(client, email=email, type=kind, locale=locale)
    client.post(f"/api/v1/requests/{created['id']}/verify", headers=auth)
    work_off(app, "CRITICAL")
    detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
    if detail["status"] != "completed":
        # a processor answers later: let RQ's scheduler move the due poll, then run it
        queue = app.extensions["dsr"].queue
        scheduler = RQScheduler([queue], connection=queue.connection)
        scheduler.prepare_registries([queue.name])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and detail["status"] == "in_progress":
            scheduler.enqueue_scheduled_jobs()
            work_off(app, "CRITICAL")
            detail = client.get(f"/api/v1/requests/{created['id']}", headers=auth).get_json()
            time.sleep(0.2)
    assert detail["status"] == "completed", detail
    artifacts = client.get(f"/api/v1/requests/{created['id']}/artifacts", headers=auth).get_json()
    package = client.get(artifacts[0]["download_url"].replace("http://localhost", "")).data
    return {**detail, "artifacts": artifacts, "auth": auth}, package


def _report_text(package: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        reader = PdfReader(io.BytesIO(archive.read("report.pdf")))
    # A word the layout hyphenated ends its line with U+2010 (a typed hyphen is U+002D): joined again.
    return " ".join(" ".join(re.sub("\u2010\\s+", "", page.extract_text() or "").split())
                    for page in reader.pages)


@pytest.fixture
def full_app(make_app, tmp_path, monkeypatch):
    """The shipped default data map, every store, with the processor simulator playing Vonage."""
    simulator = processor_sim.serve(port=0, secret=SECRET, delay=0.2)
    monkeypatch.setenv("DSR_VONAGE_SECRET", SECRET)
    raw = processor_sim.with_vonage_store(yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8")),
                                          simulator.url, poll_seconds=1)
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    yield make_app(datamap_path=path)
    simulator.shutdown()


@pytest.mark.parametrize("locale", ["en", "de"])
def test_AT_10_the_report_gives_the_art_15_information_per_category_from_the_data_map(app, make_app, settings,
                                                                                     tmp_path, locale):
    datamap = app.extensions["dsr"].runtime.datamap
    _detail, package = _answer(app, locale=locale)
    text = _report_text(package)
    words = " ".join(text.split())
    # Nothing of the installation reaches the subject (issue 12.2): no folder, file pattern or host.
    # (A log line's own file name, e.g. access.log.1, is part of the record: it says where the line is.)
    instance = str(settings.instance_dir)
    for leak in (instance, "logs/web", "logs/api", "access.log*", "api.log*", "events-*", "127.0.0.1", "sqlite"):
        assert leak not in text, leak
    # The demo subject has data in every category of the default data map (the processor's own
    # categories aside, which this map leaves out), so every category's Art. 15(1) items are there;
    # processing that stores nothing here (Google Maps, reCAPTCHA: sent to the USA) is in every answer.
    assert any(c.transfers and not c.stored for c in datamap.categories.values())
    for category in datamap.categories.values():
        assert category.title[locale] in words, category.id
        for purpose in category.purposes:  # (c) purposes and (1)(c) legal bases
            assert datamap.purposes[purpose].description[locale] in words, (category.id, purpose)
            assert datamap.purposes[purpose].legal_basis.split(";")[0] in words
        assert datamap.retention[category.retention].description[locale].split("(")[0].strip() in words  # (d)
        for recipient in category.recipients:  # (c) recipients and processors
            assert datamap.recipients[recipient].name in words, (category.id, recipient)
        assert category.source[locale] in words, category.id  # (g)
        for transfer in category.transfers:  # (2) third-country transfers and their safeguards
            assert f"{datamap.recipients[transfer.recipient].name} ({transfer.country})" in words, category.id
            assert transfer.safeguard[locale] in words, category.id
        assert datamap.authorities[category.authority].name in words  # (f) where to complain
        if category.automated_decisions:  # (h)
            assert category.automated_decisions[locale] in words
    no_automated = {"en": "No automated decision-making", "de": "Es findet keine automatisierte Entscheidung"}
    assert no_automated[locale] in words
    assert "BfDI" in text and "LDI NRW" in text  # the competent authorities, with the right to complain
    rights = {"en": ("rectification", "erasure", "restriction", "object"),
              "de": ("Berichtigung", "Löschung", "Einschränkung", "Widerspruch")}
    for right in rights[locale]:
        assert right.lower() in text.lower()
    if locale == "de":
        return
    # Changing the data map changes the report: nothing about it is hard-coded.
    raw = yaml.safe_load(settings.datamap_path.read_text(encoding="utf-8"))
    raw["retention"]["contract_plus_30d"]["description"]["en"] = "until 45 days after the contract ends (changed)"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    other = make_app(datamap_path=changed)
    assert "until 45 days after the contract ends (changed)" in _report_text(_answer(other)[1])


def test_AT_11_a_subject_without_data_gets_a_negative_confirmation_within_the_deadline(app):
    detail, package = _answer(app, email="nobody@example.net", locale="de")
    text = _report_text(package)
    assert "keine personenbezogenen Daten" in text
    assert detail["completed_at"] < detail["due_at"]


def test_AT_12_the_copy_holds_every_store_including_processor_logs_recordings_and_invoices(full_app):
    _detail, package = _answer(full_app)
    tables = read_zip(package)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = set(archive.namelist())
    for store in full_app.extensions["dsr"].runtime.datamap.stores:
        assert any(n.startswith(f"{store}/") for n in names), store
    assert tables["vonage/messages.csv"], "the processor's answer"
    assert tables["web_logs/requests.csv"] and tables["api_logs/calls.csv"], "log lines"
    assert any(n.startswith("media/recordings/") and n.endswith(".wav") for n in names), "recordings"
    assert tables["portal_db/invoices.csv"], "the invoices kept under retention duties"


def test_AT_14_report_csv_json_media_and_a_manifest_of_sha256_behind_an_expiring_signed_link(app):
    detail, package = _answer(app)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        import hashlib

        for entry in manifest["files"]:
            assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    assert "report.pdf" in names
    assert any(n.endswith(".csv") for n in names) and any(n.endswith(".json") for n in names)
    assert any(n.startswith("media/voicemails/") for n in names)
    client = app.test_client()
    url = detail["artifacts"][0]["download_url"].replace("http://localhost", "")
    assert client.get(url.split("?")[0]).status_code == 403  # no signature, no data
    assert client.get(url[:-2] + "xx").status_code == 403  # altered
    assert "sig=" in url and detail["artifacts"][0]["expires_at"]


def test_AT_16_password_hashes_are_never_exported_but_their_existence_is(app):
    _detail, package = _answer(app)
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        for name in archive.namelist():
            if name.endswith((".csv", ".json")) and not name.startswith("documentation/"):
                content = archive.read(name).decode("utf-8-sig")
                assert "$argon2" not in content and "password_hash" not in content, name
    text = _report_text(package)
    assert "password_hash" in text and "stored, not disclosed" in text


def test_AT_40_portability_holds_only_portable_data_as_json_and_csv_with_a_schema(app):
    _detail, package = _answer(app, kind="portability")
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = set(archive.namelist())
    assert not any(n.startswith("web_logs/") for n in names)  # legitimate interest: not portable
    assert "portal_db/consents.csv" not in names  # kept for a legal obligation: not portable
    assert {"portal_db/accounts.csv", "portal_db/accounts.json"} <= names
    assert "documentation/schemas/portal_db/accounts.schema.json" in names
    assert "portal_db/call_records.csv" in names  # observed data (traffic) is portable
