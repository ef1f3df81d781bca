"""Who is told of an erasure (Art. 19), by which identifiers, and what a store's notice records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from dsr import runtime
from dsr.config import DEFAULT_DATAMAP, ConfigError, Settings
from dsr.datamap import load
from dsr.domain import notices


@pytest.fixture(scope="module")
def datamap(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load(DEFAULT_DATAMAP, instance_dir=tmp_path_factory.mktemp("instance"))


def _preview(**tables: dict[str, int | str | list[str]]) -> dict[str, object]:
    """A preview of portal_db with the given tables' counts."""
    return {"stores": {"portal_db": {"tables": {name: {"category": None, "fields": [], **counts}
                                                for name, counts in tables.items()}}}}


def test_only_recipients_of_what_is_deleted_or_changed_are_told(datamap):
    told = notices.recipients_of_erased(datamap, _preview(
        support_tickets={"deleted": 2, "changed": 0, "category": "support_cases"},
        invoices={"deleted": 0, "changed": 0, "retained": 4, "category": "invoices"}))
    assert told == {"support_tool": {"support_cases"}, "vonage": {"support_cases"}}  # invoices kept: no one
    assert notices.recipients_of_erased(datamap, _preview(
        invoices={"deleted": 0, "changed": 0, "retained": 4, "category": "invoices"})) == {}
    # A deleted account row takes its company and contact fields with it (their categories' recipients too).
    told = notices.recipients_of_erased(datamap, _preview(accounts={"deleted": 1, "category": "acct_identity"}))
    assert told["tax_authorities"] == {"acct_company"}
    assert {"acct_identity", "acct_company", "acct_contact"} <= told["vonage"]
    # A changed row only the categories of the fields it changes.
    told = notices.recipients_of_erased(datamap, _preview(
        accounts={"changed": 1, "category": "acct_identity", "fields": ["phone", "mobile"]}))
    assert told == {"vonage": {"acct_contact"}}


def test_a_processor_holding_an_erased_store_is_told(datamap):
    preview = {"stores": {"analytics": {"tables": {"events": {"category": "analytics_tracking", "deleted": 3}}}}}
    assert notices.recipients_of_erased(datamap, preview) == {"aws": {"analytics_tracking"}}


def test_a_recipient_is_named_the_subject_only_by_identifiers_we_gave_it(datamap):
    # Vonage holds the account's identity and contact categories (and the web logs): e-mail, customer
    # number and phone; AWS holds the analytics store, keyed by customer number; the help desk none.
    assert notices.known_identifiers(datamap, "vonage") == {"email": "portal_db", "customer_id": "portal_db",
                                                            "phone": "portal_db", "ip_address": "web_logs"}
    assert notices.known_identifiers(datamap, "aws") == {"customer_id": "analytics"}
    assert notices.known_identifiers(datamap, "support_tool") == {}


def test_a_notice_through_a_processor_store_records_its_signed_confirmation():
    finished = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    notice = notices._Notice(
        rid="vonage", channel="store", categories=["comm_content"], reference="DSR-2026-000001",
        checkpoint={"store": "vonage"}, identities={}, erased_at=finished,
        erase_tasks={"vonage": {"id": "t-1", "status": "done", "finished_at": finished, "reference": "odsr-7",
                                "evidence": {"kind": "opendsr-status", "reference": "odsr-7", "body_sha256": "ab"}}})
    told = notices._through_store(notice)
    assert told["told_at"] == finished.isoformat() and told["answer"] == "erasure confirmed by vonage (odsr-7)"
    assert told["evidence"] == {"erase_task": "t-1", "store": "vonage", "reference": "odsr-7",
                                "kind": "opendsr-status", "body_sha256": "ab"}
    # An erase task that asked the processor nothing (its plan kept everything there) told nobody.
    erase = {**notice.erase_tasks["vonage"], "evidence": None, "reference": None}
    assert notices._through_store(replace(notice, erase_tasks={"vonage": erase})) is None


def test_the_mail_text_in_either_language():
    facts = {"reference": "DSR-2026-000007", "controller": "Beispiel GmbH", "reply_to": "dpo@example.com",
             "erased_on": date(2026, 3, 1), "categories": ["Support-Anfragen"], "identifiers": []}
    subject, body = notices.render("de", **facts)
    assert subject == "Mitteilung nach Art. 19 DSGVO: Löschung personenbezogener Daten (Aktenzeichen DSR-2026-000007)"
    assert "am 1. März 2026" in body and "unter diesen Angaben" not in body and body.endswith("Beispiel GmbH\n")
    subject, body = notices.render("en", **{**facts, "identifiers": [{"label": "Customer number", "value": "K-1"}]})
    assert "(reference DSR-2026-000007)" in subject and "on 1 March 2026" in body and "- Customer number: K-1" in body


def test_production_with_an_emailed_recipient_needs_an_smtp_server(tmp_path: Path):
    raw = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))
    raw["recipients"]["aws"]["notify"] = {"via": "email", "email": "privacy@aws.example"}
    path = tmp_path / "datamap.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    settings = Settings(env="production", instance_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'dsr.sqlite'}",
                        redis_url="redis://127.0.0.1:1/0", secret_key="s" * 32, base_url="https://dsr.example.com",
                        datamap_path=path)
    with pytest.raises(ConfigError, match=r"tells aws by e-mail .* needs DSR_SMTP_URL"):
        runtime.build(settings)
