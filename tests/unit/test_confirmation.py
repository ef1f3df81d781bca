"""The erasure confirmation letter (ER-07): rendered from the shipped data map and erasure outcomes built
from the plan, in German and English, and read back as text.

Each paragraph appears only when it is true for the outcome: what was erased with its counts, what was
kept with reason, provision and period, the running contract, systems not finished, recipients told,
backups; nothing of the installation (notes, connections, paths, internal names) ever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMap, load
from dsr.datamap.model import Erasure
from dsr.domain.erasure import plan
from dsr.exports.confirmation import ConfirmationData, Erased, build_confirmation, confirmation_data, templates_folder
from dsr.exports.report import AssetFetcher

pytestmark = pytest.mark.xdist_group("confirmation")  # one worker renders the module's letters once

REQUEST = {"reference": "DSR-2026-000042", "received_at": datetime(2026, 11, 2, 9, 30),  # noqa: DTZ001 (as SQLite)
           "legal_end": date(2026, 12, 2), "answered_at": datetime(2026, 11, 20, 12, 0, tzinfo=UTC)}
# What the connectors told the DPO office: never for the subject.
NOTES = ["searched 3 files in /srv/secret/logs matching 'access.log*'",
         "connected to db-internal.example.net:5432 as dsr_erase", '<img src="file:///etc/passwd">']
LEAKS = ["/srv/secret", "secret/logs", "db-internal", "example.net", "5432", "dsr_erase", "access.log", "passwd",
         # the data map's connections, internal store, table and category names
         "127.0.0.1", "opendsr", "DSR_", "instance_dir", "sqlite", "portal_db", "web_logs", "call_records",
         "invoice_lines", "acct_identity", "comm_content"]
# Records per (store, table); every other table of the map has 2.
COUNTS = {("analytics", "events"): 1500, ("portal_db", "call_records"): 1234, ("portal_db", "support_tickets"): 3,
          ("portal_db", "invoices"): 7, ("portal_db", "invoice_lines"): 21, ("portal_db", "invited_users"): 0,
          ("vonage", "messages"): 12, ("media", "voicemails"): 4}
UNMAPPED = "whatsapp_media"  # a table the processor reported that the data map does not know

T = {
    "de": {"title": "Bestätigung der Löschung Ihrer Daten (Art. 17 DSGVO)", "erased": "Was wir gelöscht haben",
           "kept": "Was wir noch aufbewahren", "contract": "Daten für Ihren laufenden Vertrag",
           "pending": "Noch nicht abgeschlossen", "recipients": "Empfänger, die wir informiert haben (Art. 19 DSGVO)",
           "backups": "Datensicherungen", "complaint": "Ihr Recht auf Beschwerde", "contact": "Fragen",
           "what": "Umfang", "records": "Datensätze in", "why": "Grund", "provision": "Vorschrift",
           "until": "Aufbewahrung", "answered": "20. November 2026", "terminate": "können Sie Ihren Vertrag kündigen",
           "nothing": "Wir speichern keine personenbezogenen Daten zu Ihrer Person, die wir löschen könnten.",
           "backup_sentence": "Kopien Ihrer Daten in unseren Datensicherungen werden innerhalb von 35 Tagen "
                              "überschrieben. Bis dahin verwenden wir diese Kopien nicht.",
           "restricted": "haben wir gesperrt: Wir verwenden sie nur noch für den Zweck, für den wir sie aufbewahren",
           "pending_sentence": "In diesem System ist die Löschung noch nicht abgeschlossen: {}. Wir arbeiten daran "
                               "und teilen Ihnen mit, sobald sie abgeschlossen ist.",
           "done_none": "In den Systemen, in denen die Löschung abgeschlossen ist, speichern wir keine "
                        "personenbezogenen Daten zu Ihrer Person, die wir löschen könnten."},
    "en": {"title": "Confirmation of the erasure of your data (Art. 17 GDPR)", "erased": "What we have erased",
           "kept": "What we keep for now", "contract": "Data for your running contract",
           "pending": "Not yet complete", "recipients": "Recipients we have informed (Art. 19 GDPR)",
           "backups": "Backups", "complaint": "Your right to complain", "contact": "Questions",
           "what": "Extent", "records": "records in", "why": "Reason", "provision": "Provision", "until": "Kept",
           "answered": "20 November 2026", "terminate": "you can terminate your contract",
           "nothing": "We hold no personal data about you that could be erased.",
           "backup_sentence": "Copies of your data in our backups are overwritten within 35 days. Until then we do "
                              "not use these copies.",
           "restricted": "we use them only for the purpose we keep them for, and for nothing else",
           "pending_sentence": "The erasure is not yet complete in this system: {}. We are working on it and will "
                               "let you know as soon as it is complete.",
           "done_none": "In the systems where the erasure is complete we hold no personal data about you that "
                        "could be erased."},
}
HEADINGS = ("erased", "kept", "contract", "pending", "recipients", "backups", "complaint", "contact")
NUM = {"de": lambda n: f"{n:,}".replace(",", "."), "en": lambda n: f"{n:,}"}


@pytest.fixture(scope="module")
def datamap(tmp_path_factory: pytest.TempPathFactory) -> DataMap:
    return load(DEFAULT_DATAMAP, instance_dir=tmp_path_factory.mktemp("instance"))


def outcome(datamap: DataMap, *, contract_ended: bool, counts: Mapping[tuple[str, str], int] | None = None,
            failed: Iterable[str] = (), recipients: Iterable[str] = ()) -> dict[str, Any]:
    """What the erasure records: each table as the plan says, its records deleted, emptied or kept."""
    counts = COUNTS if counts is None else counts
    counted = {"delete": "deleted", "processor": "deleted", "manual": "deleted", "null": "changed",
               "retain": "retained"}
    stores: dict[str, Any] = {}
    for name, store_plan in plan(datamap, contract_ended=contract_ended).items():
        tables = {}
        for step in store_plan.steps:
            n = counts.get((step.store, step.table), 2)
            tables[step.table] = {"category": step.category, "method": step.method, "found": n, "deleted": 0,
                                  "changed": 0, "retained": 0, counted[step.method]: n, "until": step.until,
                                  "provision": step.provision, "kept": dict(step.kept) if step.kept else None}
        stores[name] = {"by": store_plan.by, "status": "failed" if name in failed else "done", "tables": tables,
                        "notes": list(NOTES)}
    return {"contract_ended": contract_ended, "stores": stores,
            "recipients": [{"id": r, "channel": "email", "told_at": "2026-11-20T11:00:00+00:00"} for r in recipients]}


@dataclasses.dataclass
class Letter:
    data: ConfirmationData
    pdf: Path
    reader: PdfReader
    text: str  # squashed: without whitespace or the layout's hyphenation

    def section(self, name: str) -> str:
        """The text from a heading to the next heading of the letter that follows it ("" without it)."""
        t = T[self.data.locale]
        start = self.text.find(squash(t[name]))
        if start < 0:
            return ""
        ends = [self.text.find(squash(t[h]), start + 1) for h in HEADINGS[HEADINGS.index(name) + 1:]]
        return self.text[start:min([e for e in ends if e > 0], default=len(self.text))]


def squash(text: str) -> str:
    """Text without whitespace: line breaks fall anywhere, also inside a hyphenated word (U+2010)."""
    return "".join(text.replace("\u2010", "").split())


def render(data: ConfirmationData, out: Path) -> Letter:
    info = build_confirmation(data, out)
    reader = PdfReader(out)
    assert info.path == out and info.pages == len(reader.pages) and info.size == out.stat().st_size
    assert info.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    return Letter(data, out, reader, squash("\n".join(page.extract_text() or "" for page in reader.pages)))


FETCHED: list[str] = []


@pytest.fixture(scope="module")
def letters(datamap: DataMap, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Letter]]:
    """running: the contract runs, the media store failed, two recipients told, backups 35 days;
    ended: the contract has ended, all done, no recipient told, no backup window; nothing: no records."""
    root = tmp_path_factory.mktemp("confirmation")
    running = outcome(datamap, contract_ended=False, failed=["media"], recipients=["vonage", "aws", "unknown"])
    running["stores"]["vonage"]["tables"][UNMAPPED] = {"method": "processor", "found": 3, "deleted": 3, "changed": 0,
                                                       "retained": 0, "until": None, "provision": None, "kept": None}
    cases = {"running": (running, 35),
             "ended": (outcome(datamap, contract_ended=True), None),
             "nothing": (outcome(datamap, contract_ended=True, counts=dict.fromkeys(_tables(datamap), 0)), 35)}
    original = AssetFetcher.fetch

    def spy(self: AssetFetcher, url: str, headers: Any = None) -> Any:
        FETCHED.append(url)
        return original(self, url, headers)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AssetFetcher, "fetch", spy)
        yield {(locale, case): render(confirmation_data(datamap, REQUEST, result, locale, backup_days=days),
                                      root / f"{case}-{locale}.pdf")
               for locale in ("de", "en") for case, (result, days) in cases.items()}


def _tables(datamap: DataMap) -> list[tuple[str, str]]:
    return [(s, t) for s, store in datamap.stores.items() for t in store.tables]


def _label(datamap: DataMap, store: str, locale: str) -> str:
    label = datamap.stores[store].label
    assert label is not None
    return label[locale]


def _title(datamap: DataMap, category: str, locale: str) -> str:
    return datamap.categories[category].title[locale]


@pytest.mark.parametrize("locale", ["de", "en"])
def test_header_names_the_controller_the_reference_and_the_subject(letters: dict[tuple[str, str], Letter],
                                                                    datamap: DataMap, locale: str) -> None:
    r = letters[(locale, "running")]
    controller = datamap.controller
    assert controller.address
    assert r.text.startswith(squash(f"{controller.name} {controller.address}"))
    first = squash(r.reader.pages[0].extract_text())
    for part in ("DSR-2026-000042", T[locale]["answered"], T[locale]["title"]):
        assert squash(part) in first
    meta = r.reader.metadata
    assert meta is not None and meta.title and "DSR-2026-000042" in meta.title and meta.author == controller.name
    assert r.reader.trailer["/Root"]["/Lang"] == locale


@pytest.mark.parametrize("locale", ["de", "en"])
def test_erased_categories_with_their_counts_and_systems(letters: dict[tuple[str, str], Letter], datamap: DataMap,
                                                         locale: str) -> None:
    erased = letters[(locale, "running")].section("erased")
    num, portal, vonage = NUM[locale], _label(datamap, "portal_db", locale), _label(datamap, "vonage", locale)
    rows = [(_title(datamap, "analytics_tracking", locale), _label(datamap, "analytics", locale), num(1500)),
            (_title(datamap, "support_cases", locale), portal, "3"),
            (_title(datamap, "agent_notes", locale), portal, "2"),
            # the processor's two tables; the failed media store's 4 voicemails are not claimed
            (_title(datamap, "comm_content", locale), vonage, "14"),
            (vonage, vonage, "3")]  # the processor's table the map does not know: under the store's label
    for row in rows:
        assert squash(" ".join(row)) + "–" in erased  # deleted, no fields emptied
    assert num(1500) == {"de": "1.500", "en": "1,500"}[locale]
    # kept, failed or without records: not in the erased table
    for absent in (_title(datamap, "invoices", locale), _title(datamap, "acct_identity", locale),
                   _title(datamap, "invited_users", locale), _label(datamap, "media", locale)):
        assert squash(absent) not in erased


@pytest.mark.parametrize("locale", ["de", "en"])
def test_kept_invoices_say_why_under_which_provision_and_until_when(letters: dict[tuple[str, str], Letter],
                                                                    datamap: DataMap, locale: str) -> None:
    t = T[locale]
    invoices = datamap.categories["invoices"]
    rule = datamap.retention[invoices.retention]
    reason = datamap.stores["portal_db"].tables["invoices"].erasure.reason  # type: ignore[union-attr]
    assert reason is not None and invoices.statutory_retention
    for case in ("running", "ended"):
        kept = letters[(locale, case)].section("kept")
        assert squash(f"{invoices.title[locale]} {t['what']} {NUM[locale](28)} {t['records']} "
                      f"{_label(datamap, 'portal_db', locale)} {t['why']} {reason[locale]} "
                      f"{t['provision']} {invoices.statutory_retention} "
                      f"{t['until']} {rule.description[locale]}") in kept
        assert squash(t["restricted"]) in kept
    traffic = squash(f"{_title(datamap, 'comm_traffic', locale)} {t['what']} {NUM[locale](1236)} {t['records']}")
    assert traffic in letters[(locale, "ended")].section("kept")  # 1,234 calls and 2 messages


def test_provision_and_reason_fall_back_to_the_retention_rule_and_the_plan(datamap: DataMap) -> None:
    result = outcome(datamap, contract_ended=False)
    for table in ("invoices", "invoice_lines", "payment_methods"):
        result["stores"]["portal_db"]["tables"][table].update(provision=None, kept=None)
    data = confirmation_data(datamap, REQUEST, result, "en", backup_days=None)
    kept = {k.title: k for k in data.kept}
    invoices = kept[_title(datamap, "invoices", "en")]
    assert invoices.provision == datamap.retention["vouchers"].reference  # the rule's reference
    assert invoices.reason == "statutory retention duty for invoices"  # the table's own reason in the map
    payment = kept[_title(datamap, "payment_means", "en")]
    assert payment.reason.startswith("needed to perform your contract while it runs")  # the category's policy
    assert payment.contract and not payment.restricted and invoices.restricted and not invoices.contract


@pytest.mark.parametrize("locale", ["de", "en"])
def test_the_contract_paragraph_only_while_it_runs_and_its_data_is_kept(letters: dict[tuple[str, str], Letter],
                                                                        datamap: DataMap, tmp_path: Path,
                                                                        locale: str) -> None:
    t = T[locale]
    running = letters[(locale, "running")].section("contract")
    assert squash(t["terminate"]) in running
    for category in ("acct_identity", "payment_means", "portal_api_usage"):
        assert squash(_title(datamap, category, locale)) in running
    assert squash(_title(datamap, "invoices", locale)) not in running  # statutory, not the contract's
    ended = letters[(locale, "ended")]
    assert squash(_title(datamap, "acct_identity", locale)) in ended.section("kept")  # kept 30 days after the end
    assert squash(t["contract"]) not in ended.text and squash(t["terminate"]) not in ended.text
    # The contract runs, but nothing the contract needs was found: nothing to explain.
    none = {**COUNTS, ("portal_db", "accounts"): 0, ("portal_db", "payment_methods"): 0,
            ("portal_db", "api_usage"): 0, ("api_logs", "calls"): 0}
    r = render(confirmation_data(datamap, REQUEST, outcome(datamap, contract_ended=False, counts=none), locale,
                                 backup_days=None), tmp_path / "no-contract-data.pdf")
    assert squash(t["kept"]) in r.text and squash(t["contract"]) not in r.text and squash(t["terminate"]) not in r.text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_nothing_of_the_installation_reaches_the_subject(letters: dict[tuple[str, str], Letter], datamap: DataMap,
                                                         locale: str) -> None:
    for case in ("running", "ended", "nothing"):
        r = letters[(locale, case)]
        raw = "\n".join(page.extract_text() or "" for page in r.reader.pages)
        for leak in LEAKS:
            assert leak not in raw and squash(leak) not in r.text, (case, leak)
    assert FETCHED, "the spy saw the stylesheet being loaded"
    css = (templates_folder() / "letter.css").resolve()
    assert {AssetFetcher([css]).asset(url) for url in FETCHED} == {css}


@pytest.mark.parametrize("locale", ["de", "en"])
def test_a_failed_store_is_not_called_erased(letters: dict[tuple[str, str], Letter], datamap: DataMap,
                                             tmp_path: Path, locale: str) -> None:
    t, media = T[locale], _label(datamap, "media", locale)
    r = letters[(locale, "running")]
    assert squash(t["pending_sentence"].format(media)) in r.section("pending")
    assert r.text.count(squash(media)) == 1  # named once: as not finished, neither erased nor kept
    assert squash(t["complaint"]) in r.text
    assert squash(t["pending"]) not in letters[(locale, "ended")].text
    # The only store with the subject's data failed: no "we hold nothing", and nothing claimed erased there.
    counts = dict.fromkeys(_tables(datamap), 0) | {("media", "voicemails"): 4}
    data = confirmation_data(datamap, REQUEST, outcome(datamap, contract_ended=True, counts=counts, failed=["media"]),
                             locale, backup_days=35)
    assert not data.nothing and data.pending == (media,) and not data.erased
    only = render(data, tmp_path / "failed.pdf")
    assert squash(t["nothing"]) not in only.text
    assert squash(t["done_none"]) in only.section("erased")
    assert squash(t["backups"]) not in only.text  # nothing erased, so no copies of erased data to speak of


@pytest.mark.parametrize("locale", ["de", "en"])
def test_recipients_only_when_they_were_told(letters: dict[tuple[str, str], Letter], datamap: DataMap,
                                             locale: str) -> None:
    told = letters[(locale, "running")].section("recipients")
    assert squash(datamap.recipients["vonage"].name) in told and squash(datamap.recipients["aws"].name) in told
    assert "unknown" not in told
    for name in (datamap.recipients["google"].name, datamap.recipients["support_tool"].name):
        assert squash(name) not in told  # not told: not named
    ended = letters[(locale, "ended")].text
    assert squash(T[locale]["recipients"]) not in ended and "Art.19" not in ended
    assert squash(datamap.recipients["aws"].name) not in ended


@pytest.mark.parametrize("locale", ["de", "en"])
def test_backup_sentence_only_with_a_backup_window(letters: dict[tuple[str, str], Letter], locale: str) -> None:
    t = T[locale]
    assert squash(t["backup_sentence"]) in letters[(locale, "running")].section("backups")
    ended = letters[(locale, "ended")]
    assert ended.data.erased and ended.data.backup_days is None
    assert squash(t["backups"]) not in ended.text and squash(t["backup_sentence"][:40]) not in ended.text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_nothing_found_says_that_nothing_is_held(letters: dict[tuple[str, str], Letter], datamap: DataMap,
                                                 locale: str) -> None:
    t, r = T[locale], letters[(locale, "nothing")]
    assert r.data.nothing
    assert squash(t["nothing"]) in r.text
    assert squash(_label(datamap, "portal_db", locale)) in r.text  # the systems searched are named
    for heading in ("erased", "kept", "pending", "recipients", "backups", "complaint"):
        assert squash(t[heading]) not in r.text, heading
    assert squash(datamap.controller.dpo.name) in r.section("contact")
    assert squash(t["nothing"]) not in letters[(locale, "running")].text
    assert squash(t["nothing"]) not in letters[(locale, "ended")].text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_the_complaint_names_the_authorities_of_what_was_kept(letters: dict[tuple[str, str], Letter],
                                                              datamap: DataMap, locale: str) -> None:
    complaint = letters[(locale, "ended")].section("complaint")
    for authority in ("ldi_nrw", "bfdi"):  # invoices (LDI NRW), traffic data (BfDI)
        a = datamap.authorities[authority]
        assert squash(a.name) in complaint and squash(a.address or "") in complaint
    assert "Art.77" in complaint and "Art.79" in complaint
    assert squash(datamap.controller.dpo.name) in letters[(locale, "ended")].section("contact")
    # Only the authority competent for what is kept: invoices alone, LDI NRW.
    counts = dict.fromkeys(_tables(datamap), 0) | {("portal_db", "invoices"): 1}
    data = confirmation_data(datamap, REQUEST, outcome(datamap, contract_ended=True, counts=counts), locale,
                             backup_days=None)
    assert [a.name for a in data.authorities] == [datamap.authorities["ldi_nrw"].name]


def test_emptied_fields_are_counted_apart_from_deleted_records(datamap: DataMap, tmp_path: Path) -> None:
    tables = dict(datamap.stores["portal_db"].tables)
    tables["agent_notes"] = dataclasses.replace(tables["agent_notes"], erasure=Erasure("null", ("note",)))
    stores = {**datamap.stores, "portal_db": dataclasses.replace(datamap.stores["portal_db"], tables=tables)}
    changed = dataclasses.replace(datamap, stores=stores)
    result = outcome(changed, contract_ended=True, counts={**COUNTS, ("portal_db", "agent_notes"): 1234})
    assert result["stores"]["portal_db"]["tables"]["agent_notes"]["changed"] == 1234
    data = confirmation_data(changed, REQUEST, result, "de", backup_days=7)
    assert Erased(_title(datamap, "agent_notes", "de"), 0, 1234, ("Portal-Datenbank",)) in data.erased
    r = render(data, tmp_path / "null.pdf")
    erased = r.section("erased")
    assert squash(f"{_title(datamap, 'agent_notes', 'de')} Portal-Datenbank – 1.234") in erased
    assert squash("„Angaben entfernt“: Der Datensatz bleibt bestehen") in erased
    assert squash("innerhalb von 7 Tagen überschrieben") in r.text


def test_the_letter_is_written_whole_or_not_at_all(datamap: DataMap, tmp_path: Path) -> None:
    data = confirmation_data(datamap, REQUEST, outcome(datamap, contract_ended=True), "fr", backup_days=None)
    assert data.locale == "de"  # an unknown language: German
    out = tmp_path / "letters" / "confirmation.pdf"
    r = render(data, out)
    assert r.reader.pages and [p.name for p in out.parent.iterdir()] == ["confirmation.pdf"]  # no .partial left
    with pytest.raises(ValueError, match="locale"):
        dataclasses.replace(data, locale="fr")


def test_the_letter_needs_neither_flask_nor_the_database() -> None:
    code = ("import sys, dsr.exports.confirmation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'rq', 'redis')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("locale", ["de", "en"])
def test_deletion_days_past_come_by_the_next_day_and_many_later_days_as_a_span(datamap: DataMap, tmp_path: Path,
                                                                               locale: str) -> None:
    """A letter never names a past day as one on which kept records are erased: records whose period
    has ended go with the next daily run, by the day after the answer; many later days read as a span."""
    result = outcome(datamap, contract_ended=True)
    answered = REQUEST["answered_at"].date()
    calls = result["stores"]["portal_db"]["tables"]["call_records"]
    calls["erasable"] = [[(answered - timedelta(days=30)).isoformat(), 2], [answered.isoformat(), 1],
                         *[[(answered + timedelta(days=d)).isoformat(), 1] for d in (10, 40, 70, 100)]]
    invoices = result["stores"]["portal_db"]["tables"]["invoices"]
    invoices["erasable"] = [["2034-01-01", 5]]
    text = render(confirmation_data(datamap, REQUEST, result, locale, backup_days=None), tmp_path / "days.pdf").text
    by, first, last = answered + timedelta(days=1), answered + timedelta(days=10), answered + timedelta(days=100)
    if locale == "de":
        assert squash(f"3 Datensätze, deren Frist schon abgelaufen ist: bis zum {_de(by)}") in text, text
        assert squash(f"4 Datensätze, jeweils an ihrem Tag zwischen dem {_de(first)} und dem {_de(last)}") in text
        assert squash("1. Januar 2034 (5 Datensätze)") in text
    else:
        assert squash(f"3 records whose period has already ended: by {_en(by)}") in text, text
        assert squash(f"4 records each on its day between {_en(first)} and {_en(last)}") in text
        assert squash("1 January 2034 (5 records)") in text
    assert _en(answered - timedelta(days=30)) not in text and _de(answered - timedelta(days=30)) not in text


MONTHS = {"de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
                 "November", "Dezember"],
          "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                 "November", "December"]}


def _de(d: date) -> str:
    return f"{d.day}. {MONTHS['de'][d.month - 1]} {d.year}"


def _en(d: date) -> str:
    return f"{d.day} {MONTHS['en'][d.month - 1]} {d.year}"
