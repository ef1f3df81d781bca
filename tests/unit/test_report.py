"""The PDF report: rendered from the shipped data map in German and English and read back as text.

Every Art. 15(1)/(2) item of every category with records appears in its section; the negative answer;
page numbers, contents and bookmarks; previews that point to the files; redactions explained with
counts; values from stores printed as text and never loaded as URLs or files.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap import DataMap, load
from dsr.exports.csv_files import CsvTableWriter
from dsr.exports.report import (
    PREVIEW_ROWS,
    AssetFetcher,
    ReportData,
    build_report,
    preview_rows,
    report_data,
    templates_folder,
)
from dsr.stores import validate_store

# One pytest-xdist worker takes the whole module (make test runs --dist loadgroup), so the module's
# rendered reports (several seconds of WeasyPrint) are made once, not once per worker.
pytestmark = pytest.mark.xdist_group("report")

EVIL = '<img src="file:///etc/passwd">'
CONNECTOR_NOTE = "searched 3 files (2,000 lines) in /srv/dsr/instance/logs/web matching 'access.log*'"
EVIL_NOTE = '<link rel="stylesheet" href="http://127.0.0.1:9/x.css"><img src="data:image/png;base64,AAAA">'
CALLS = 1_234_567  # counted in the store; the CSV below holds 40 (the report reads PREVIEW_ROWS)
# received_at is naive, as SQLite gives it back: the report reads it as UTC (10:30 in Berlin).
REQUEST = {"reference": "DSR-2026-000042", "type": "access",
           "received_at": datetime(2026, 11, 2, 9, 30),  # noqa: DTZ001
           "legal_end": date(2026, 12, 2), "answered_at": datetime(2026, 11, 20, 12, 0, tzinfo=UTC)}
START = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)

# store -> table -> (columns as disclosed, rows in the CSV, rows counted, files)
TABLES: dict[str, dict[str, tuple[list[str], list[list[Any]], int, int]]] = {
    "portal_db": {
        "accounts": (["id", "customer_number", "email", "first_name", "last_name", "phone", "mobile",
                      "company_name", "company_address", "vat_id", "language", "status"],
                     [[1, "K-100001", "max.mustermann@example.com", EVIL, "Mustermann", "+49 228 1234567",
                       "=HYPERLINK(\"x\")", "Muster GmbH", "Musterweg 1, 53113 Bonn", "DE123456789", "de",
                       "active"]], 1, 0),
        "invited_users": (["id", "account_id", "email", "role", "status"],
                          [[7, 1, "erika@example.com", "developer", "pending"]], 1, 0),
        "payment_methods": (["id", "account_id", "kind", "holder", "iban"],
                            [[3, 1, "sepa", "Max Mustermann", "******************3000"]], 1, 0),
        "api_usage": (["id", "account_id", "endpoint", "method", "status_code", "called_at"],
                      [[n, 1, "/v1/messages", "POST", 201, START + timedelta(minutes=n)] for n in range(30)],
                      30_000, 0),
        "call_records": (["id", "account_id", "direction", "from_number", "to_number", "started_at", "duration_s",
                          "status"],
                         [[f"CALL-{n:04d}", 1, "outbound", "+4915100000001", "+49309018xxx",
                           START + timedelta(hours=n), 60 + n, ["completed", "busy", "no-answer"][n % 3]]
                          for n in range(40)], CALLS, 0),
        "message_records": (["id", "account_id", "channel", "to_number", "sent_at", "status"],
                            [[n, 1, "sms", "+49221123xxx", START, "delivered"] for n in range(3)], 3, 0),
        "support_tickets": (["id", "account_id", "subject", "body", "status"],
                            [[5, 1, "Rufumleitung", "Die Umleitung geht nicht. " * 30, "closed"]], 1, 0),
        "invoices": (["id", "account_id", "invoice_number", "issued_on", "net_amount", "currency"],
                     [[9, 1, "R-2026-0001", date(2026, 10, 31), "12.50", "EUR"]], 1, 0),
        "consents": (["id", "account_id", "purpose", "granted_at", "withdrawn_at"],
                     [[2, 1, "analytics", START, ""]], 1, 0),
    },
    "web_logs": {
        "requests": (["time", "remote_addr", "method", "path", "status", "user"],
                     [["2026-11-01T10:00:00Z", "203.0.113.7", "GET", "/portal", 200, "max.mustermann@example.com"]],
                     1, 0),
    },
    "api_logs": {
        "calls": (["time", "account", "endpoint", "method", "status"],
                  [["2026-11-01T10:00:01Z", "K-100001", "/v1/calls", "POST", 429]], 1, 0),
    },
    "media": {
        "voicemails": (["file", "size", "sha256", "status", "from_number", "account_id"],
                       [["voicemails/vm-1.mp3", 5120, "ab" * 32, "exported", "+49221987xxx", 1]], 1, 1),
    },
    "vonage": {
        "messages": (["message_id", "sent_at", "channel", "to_number", "status", "text_snippet"],
                     [["MSG-0001", "2026-10-02T08:17:00Z", "whatsapp", "+49893xxx", "delivered", "Danke!"]], 1, 0),
    },
}
REDACTIONS = {
    "portal_db": {
        "accounts": {"password_hash": {"disclose": "omit", "mask": None, "records": 1}},
        "payment_methods": {"iban": {"disclose": "mask", "mask": "keep_last4", "records": 1}},
        # to_number's cases: 0 counselling line (withheld), 1 inbound (own number, shown), 2 full numbers
        # on request (not asked for here: never counted, never mentioned)
        "call_records": {"from_number": {"disclose": "mask", "mask": "last3", "records": 17,
                                         "outcomes": {"default": 17}},
                         "to_number": {"disclose": "mask", "mask": "last3", "records": CALLS - 2,
                                       "outcomes": {"default": CALLS - 5, "0": 3, "1": 2}}},
    },
}


@pytest.fixture(scope="module")
def datamap(tmp_path_factory: pytest.TempPathFactory) -> DataMap:
    return load(DEFAULT_DATAMAP, instance_dir=tmp_path_factory.mktemp("instance"), validate_store=validate_store)


def _collected(root: Path) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """What the collect tasks leave: one CSV per table in each store's output folder, and the counts."""
    tasks, outputs = [], {}
    for store, tables in TABLES.items():
        outputs[store] = root / store / "attempt-1"
        for table, (columns, rows, _, _) in tables.items():
            writer = CsvTableWriter(outputs[store] / f"{table}.csv", columns)
            writer.write(rows)
            writer.close()
        tasks.append({"store": store, "counts": {
            "found": {t: n for t, (_, _, n, _) in tables.items()},
            "files": {t: f for t, (_, _, _, f) in tables.items() if f},
            "redactions": REDACTIONS.get(store, {}),
            # A connector's notes describe the installation (folders, patterns): never in the report.
            "notes": [CONNECTOR_NOTE] if store == "web_logs" else [],
            # A note written by the person who searched a store by hand is (escaped, like any value).
            **({"note": EVIL_NOTE} if store == "api_logs" else {}),
        }})
    tasks.append({"store": "portal_db_archive", "counts": {"found": {}, "files": {"evidence": 1},
                                                           "note": "Papierarchiv durchsucht"}})
    outputs["portal_db_archive"] = root / "archive"
    return tasks, outputs


@dataclasses.dataclass
class Rendered:
    data: ReportData
    pdf: Path
    pages: int
    reader: PdfReader
    texts: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    def outline(self) -> list[tuple[int, str, int]]:
        """(level, title, page index) of every bookmark, in order."""
        out: list[tuple[int, str, int]] = []

        def walk(items: list[Any], level: int) -> None:
            for item in items:
                if isinstance(item, list):
                    walk(item, level + 1)
                else:
                    out.append((level, str(item.title), self.reader.get_destination_page_number(item)))

        walk(self.reader.outline, 1)
        return out


def _render(data: ReportData, out: Path) -> Rendered:
    info = build_report(data, out)
    reader = PdfReader(out)
    assert info.pages == len(reader.pages) and info.size == out.stat().st_size and len(info.sha256) == 64
    return Rendered(data, out, info.pages, reader, [page.extract_text() or "" for page in reader.pages])


FETCHED: list[str] = []


@pytest.fixture(scope="module")
def reports(datamap: DataMap, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rendered]]:
    root = tmp_path_factory.mktemp("report")
    tasks, outputs = _collected(root / "work")
    original = AssetFetcher.fetch

    def spy(self: AssetFetcher, url: str, headers: Any = None) -> Any:
        FETCHED.append(url)
        return original(self, url, headers)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AssetFetcher, "fetch", spy)
        yield {locale: _render(report_data(datamap, REQUEST, tasks, outputs, locale), root / f"{locale}.pdf")
               for locale in ("de", "en")}


def squash(text: str) -> str:
    """Text without whitespace: line breaks in the PDF fall anywhere, also inside a word the layout
    hyphenated (with U+2010; a typed hyphen is U+002D)."""
    return "".join(text.replace("\u2010", "").split())


def _categories_with_records(datamap: DataMap) -> list[str]:
    found = set()
    for store, tables in TABLES.items():
        for table, (columns, _, rows, files) in tables.items():
            definition = datamap.stores[store].tables[table]
            if rows or files:
                found.add(definition.category)
                found.update(definition.rule(c).category for c in columns)
    return [c for c in datamap.categories if c in found]


PROCESSING = {"de": "Informationen zur Verarbeitung", "en": "Information about the processing"}
NO_AUTOMATED = {"de": "Es findet keine automatisierte Entscheidungsfindung einschließlich Profiling",
                "en": "No automated decision-making, including profiling"}


def _category_blocks(r: Rendered) -> dict[str, str]:
    """The text of each category's section, found through the bookmarks under the processing heading."""
    outline = r.outline()
    start = next(i for i, (level, title, _) in enumerate(outline) if level == 1 and title == PROCESSING[r.data.locale])
    end = next(i for i in range(start + 1, len(outline)) if outline[i][0] == 1)
    entries = outline[start + 1:end]
    blocks = {}
    for n, (_, title, page) in enumerate(entries):
        following = entries[n + 1] if n + 1 < len(entries) else outline[end]  # the next section may share a page
        text = squash("\n".join(r.texts[page:following[2] + 1]))
        begin = text.index(squash(title))
        stop = text.find(squash(following[1]), begin + 1)
        blocks[title] = text[begin:stop if stop > 0 else None]
    return blocks


@pytest.mark.parametrize("locale", ["de", "en"])
def test_every_category_with_records_has_every_art15_item(reports: dict[str, Rendered], datamap: DataMap,
                                                          locale: str) -> None:
    r = reports[locale]
    blocks = _category_blocks(r)
    expected = _categories_with_records(datamap)
    assert len(expected) >= 10  # the fixture has data in nearly every category of the default map
    assert list(blocks) == [datamap.categories[c].title[locale] for c in expected]
    for cid in expected:
        category = datamap.categories[cid]
        block = blocks[category.title[locale]]
        items = [datamap.purposes[p].legal_basis for p in category.purposes]
        items += [datamap.purposes[p].description[locale] for p in category.purposes]
        items += [datamap.recipients[rid].name for rid in category.recipients]
        items += [datamap.retention[category.retention].description[locale], category.source[locale],
                  datamap.authorities[category.authority].name, NO_AUTOMATED[locale]]
        for item in items:
            assert squash(item) in block, f"{cid}: {item!r} missing from its section ({locale})"


def test_a_category_with_automated_decisions_explains_them(datamap: DataMap, tmp_path: Path) -> None:
    logic = {"de": "Eine Betrugsprüfung bewertet neue Konten automatisch anhand der Zahl der Anmeldeversuche",
             "en": "A fraud check scores new accounts automatically by the number of sign-up attempts"}
    categories = dict(datamap.categories)
    categories["acct_identity"] = dataclasses.replace(categories["acct_identity"], automated_decisions=logic)
    changed = dataclasses.replace(datamap, categories=categories)
    tasks, outputs = _collected(tmp_path / "work")
    r = _render(report_data(changed, REQUEST, tasks, outputs, "en"), tmp_path / "en.pdf")
    blocks = _category_blocks(r)
    assert squash(logic["en"]) in blocks[categories["acct_identity"].title["en"]]
    assert squash(NO_AUTOMATED["en"]) not in blocks[categories["acct_identity"].title["en"]]
    assert squash(NO_AUTOMATED["en"]) in blocks[categories["comm_traffic"].title["en"]]


@pytest.mark.parametrize("locale", ["de", "en"])
def test_rights_complaint_and_remedy(reports: dict[str, Rendered], datamap: DataMap, locale: str) -> None:
    text = squash(reports[locale].text)
    words = {"de": ["Berichtigung", "Löschung", "Einschränkung der Verarbeitung", "Widerspruch",
                    "Datenübertragbarkeit", "Widerruf einer Einwilligung", "Art. 77 DSGVO", "Art. 79 DSGVO"],
             "en": ["Rectification", "Erasure", "Restriction of processing", "Objection", "Data portability",
                    "Withdrawal of consent", "Art. 77 GDPR", "Art. 79 GDPR"]}[locale]
    for word in words:
        assert squash(word) in text
    for authority in ("bfdi", "ldi_nrw"):  # both are competent for some category with records
        a = datamap.authorities[authority]
        assert squash(a.name) in text and squash(a.address or "") in text and squash(a.url or "") in text
    assert squash(datamap.controller.dpo.name) in text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_page_numbers_contents_and_bookmarks(reports: dict[str, Rendered], locale: str) -> None:
    r = reports[locale]
    word, of = {"de": ("Seite", "von"), "en": ("Page", "of")}[locale]
    for n in (1, r.pages):
        assert f"{word} {n} {of} {r.pages}" in r.texts[n - 1]
    outline = r.outline()
    assert [t for level, t, _ in outline if level == 1][1:3] == [
        {"de": "Übersicht", "en": "Overview"}[locale], PROCESSING[locale]]
    contents = squash(r.texts[1])
    assert contents.startswith({"de": "Inhalt", "en": "Contents"}[locale])
    pages: dict[str, set[int]] = {}
    for level, title, page in outline:
        if level <= 2:
            pages.setdefault(squash(title), set()).add(page + 1)
    for title, on in pages.items():
        if title in contents and min(on) > 2:
            # the contents give each section the page its bookmark points to (target-counter); a system is
            # a heading both where it was searched and where its data is
            found = re.findall(re.escape(title) + r"\.+(\d+)", contents)
            assert found and {int(n) for n in found} <= on, (title, found, on)


@pytest.mark.parametrize("locale", ["de", "en"])
def test_cover_letter(reports: dict[str, Rendered], locale: str) -> None:
    first = squash(reports[locale].texts[0])
    for item in {"de": ["DSR-2026-000042", "2.November2026,10:30Uhr", "20.November2026", "2.Dezember2026",
                        "personenbezogeneDatenzuIhrerPersonverarbeiten", "manifest.json", "zweiEbenen",
                        "portal_db/accounts.csv", "media/voicemails/"],
                 "en": ["DSR-2026-000042", "2November2026,10:30(CET)", "20November2026", "2December2026",
                        "weprocesspersonaldataconcerningyou", "manifest.json", "twolayers",
                        "portal_db/accounts.csv", "media/voicemails/"]}[locale]:
        assert item in first


@pytest.mark.parametrize("locale", ["de", "en"])
def test_previews_show_the_first_rows_and_point_to_the_file(reports: dict[str, Rendered], locale: str) -> None:
    r = reports[locale]
    text = squash(r.text)
    assert PREVIEW_ROWS == 10
    assert "CALL-0009" in text and "CALL-0010" not in text
    more = {"de": "1.234.557 weitere Datensätze in portal_db/call_records.csv",
            "en": "1,234,557 more rows in portal_db/call_records.csv"}[locale]
    assert squash(more) in text
    assert squash({"de": "Alle Datensätze sind oben abgebildet; dieselben Daten stehen in portal_db/accounts.csv",
                   "en": "All records are shown above; the same data is in portal_db/accounts.csv"}[locale]) in text
    assert squash({"de": "1 Datei im Ordner media/voicemails/", "en": "1 file in the folder media/voicemails/"}
                  [locale]) in text
    assert '=HYPERLINK("x")' in text  # shown as stored, without the CSV file's formula guard
    assert r.pages < 100 and r.data.total_rows > 1_000_000
    # codes that appear in the data are explained
    assert squash({"de": "Gegenstelle hat nicht abgenommen", "en": "the other party did not answer"}[locale]) in text
    assert squash({"de": "zu viele Anfragen", "en": "too many requests"}[locale]) in text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_redactions_are_explained_with_counts(reports: dict[str, Rendered], datamap: DataMap, locale: str) -> None:
    text = squash(reports[locale].text)
    tables = datamap.stores["portal_db"].tables
    n = {"de": "1.234.562", "en": "1,234,562"}[locale]  # CALLS less the 5 records its cases decided
    how = {"de": "die letzten drei Ziffern durch x ersetzt", "en": "last three digits replaced by x"}[locale]
    rule = tables["call_records"].rule("to_number")
    assert rule.reason is not None and rule.label is not None
    # Only what applied, each with its own count: the field's rule, the counselling lines (withheld),
    # the subject's own number shown in full; not the full numbers, which the subject did not ask for.
    counselling, inbound, full_numbers = rule.cases
    withheld = {"de": "durch „withheld“ ersetzt (nicht angezeigt)", "en": 'replaced by "withheld" (not shown)'}[locale]
    shown = {"de": "nichts: vollständig angezeigt", "en": "nothing: shown in full"}[locale]
    # The field by its label, its name in the file beside it.
    assert re.search(re.escape(squash(f"{rule.label[locale]} (to_number) {how} {rule.reason[locale]}")) + re.escape(n),
                     text)
    assert squash(f"{withheld} {counselling.reason[locale]} 3") in text
    assert squash(f"{shown} {inbound.reason[locale]} 2") in text
    assert squash(full_numbers.reason[locale]) not in text
    assert "; " + squash(counselling.reason[locale]) not in text  # reasons are no longer joined
    iban = tables["payment_methods"].rule("iban").reason
    assert iban is not None and squash(iban[locale]) in text
    omitted = {"de": "Gespeichert, aber nicht herausgegeben", "en": "Stored, not disclosed"}[locale]
    password_rule = tables["accounts"].rule("password_hash")
    password, label = password_rule.reason, password_rule.label
    assert password is not None and label is not None
    assert squash(omitted) in text and squash(f"{label[locale]} (password_hash) {password[locale]}") in text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_stored_values_print_as_text_and_load_nothing(reports: dict[str, Rendered], locale: str) -> None:
    text = squash(reports[locale].text)
    assert squash(EVIL) in text
    assert squash(EVIL_NOTE) in text


@pytest.mark.parametrize("locale", ["de", "en"])
def test_nothing_of_the_installation_reaches_the_subject(reports: dict[str, Rendered], locale: str) -> None:
    """Issue 12.2: a connector's note with the server's folder and file pattern was printed verbatim."""
    text = reports[locale].text
    for leak in ("/srv/dsr", "access.log", "searched 3 files", "logs/web"):
        assert leak not in text
    assert "(portal_db)" not in squash(text)  # stores are named in the data map's words
    assert FETCHED, "the spy saw the report's stylesheet being loaded"
    css = (templates_folder() / "report.css").resolve()
    assert {AssetFetcher([css]).asset(url) for url in FETCHED} == {css}
    assert not [url for url in FETCHED if "passwd" in url or "127.0.0.1" in url or url.startswith("data:")]


def test_the_fetcher_loads_only_the_reports_own_assets() -> None:
    folder = templates_folder()
    fetcher = AssetFetcher.for_folder(folder)
    css = (folder / "report.css").resolve()
    assert fetcher.fetch(css.as_uri()).read().startswith(b"/*")
    for url in ("file:///etc/passwd", "file://localhost/etc/passwd", "http://127.0.0.1:9/x.css",
                "https://example.com/report.css", "data:text/css,body{}", "ftp://example.com/x",
                (folder / "texts" / "de.html").resolve().as_uri(), css.as_uri() + "?x", "report.css"):
        with pytest.raises(ValueError, match="only its own assets"):
            fetcher.fetch(url)


@pytest.mark.parametrize("locale", ["de", "en"])
def test_pdf_metadata(reports: dict[str, Rendered], datamap: DataMap, locale: str) -> None:
    r = reports[locale]
    meta = r.reader.metadata
    assert meta is not None
    assert meta.title and "DSR-2026-000042" in meta.title
    assert meta.author == datamap.controller.name
    assert r.reader.trailer["/Root"]["/Lang"] == locale


@pytest.mark.parametrize("locale", ["de", "en"])
def test_no_data_is_a_negative_answer(datamap: DataMap, tmp_path: Path, locale: str) -> None:
    tasks = [{"store": s, "counts": {"found": dict.fromkeys(TABLES[s], 0), "files": {}}} for s in TABLES]
    r = _render(report_data(datamap, REQUEST, tasks, {}, locale), tmp_path / "none.pdf")
    text = squash(r.text)
    assert squash({"de": "Wir bestätigen Ihnen, dass wir keine personenbezogenen Daten zu Ihrer Person verarbeiten "
                         "(Art. 15 Abs. 1 DSGVO)",
                   "en": "We confirm that we do not process any personal data concerning you (Art. 15(1) GDPR)"}
                  [locale]) in squash(r.texts[0])
    assert PROCESSING[locale] not in [t for _, t, _ in r.outline()]
    # tables named by their labels in the data map (issue 12.4)
    empty = {"de": "Ohne Treffer durchsucht: Kundenkonto", "en": "Searched, nothing found: Customer account"}[locale]
    assert squash(empty) in text
    assert squash(datamap.authorities["bfdi"].name) in text  # the complaint right is given all the same


def test_portability_says_what_is_left_out(reports: dict[str, Rendered], datamap: DataMap, tmp_path: Path) -> None:
    tasks, outputs = _collected(tmp_path / "work")
    r = _render(report_data(datamap, {**REQUEST, "type": "portability"}, tasks, outputs, "en"), tmp_path / "p.pdf")
    first = squash(r.texts[0])
    assert squash("Art. 20(1) GDPR") in first and squash("Art. 20(4) GDPR") in first
    for cid in ("web_server_logs", "consent_log"):  # not portable in the default map
        assert squash(datamap.categories[cid].title["en"]) in first
        assert datamap.categories[cid].title["en"] not in _category_blocks(r)
    assert squash("Not included, as not portable (Art. 20 GDPR): Page requests") in squash(r.text)
    assert "Web server logs" in _category_blocks(reports["en"])  # an access answer includes them


def test_preview_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    writer = CsvTableWriter(path, ["id", "value"])
    writer.write([[n, f"=v{n}" if n == 0 else f"v{n}"] for n in range(30)])
    writer.close()
    with path.open("a", encoding="utf-8") as f:  # beyond the preview: a value no csv reader accepts
        f.write('31,"' + "x" * 200_000 + '"\n')
    preview = preview_rows(path, 25)
    assert preview is not None and preview.columns == ("id", "value")
    assert len(preview.rows) == 25 and preview.rows[0] == ("0", "=v0") and preview.rows[24] == ("24", "v24")
    assert preview_rows(tmp_path / "missing.csv", 25) is None
    broken = preview_rows(path, 100)  # reaching the broken line keeps the rows before it
    assert broken is not None and len(broken.rows) == 30


def test_report_data_from_task_counts(datamap: DataMap, tmp_path: Path) -> None:
    tasks, outputs = _collected(tmp_path / "work")
    data = report_data(datamap, {**REQUEST, "locale": "en"}, reversed(tasks), outputs, package_prefix="data/")
    assert data.locale == "en" and [s.name for s in data.stores][:2] == ["portal_db", "web_logs"]
    portal = data.stores[0]
    calls = next(t for t in portal.tables if t.name == "call_records")
    assert calls.csv_path == "data/portal_db/call_records.csv" and calls.rows == CALLS
    assert calls.preview is not None and len(calls.preview.rows) == PREVIEW_ROWS and calls.category == "comm_traffic"
    assert {r.field: r.records for r in calls.redactions} == {"from_number": 17, "to_number": CALLS - 2}
    assert dict(next(r for r in calls.redactions if r.field == "to_number").outcomes) == {
        "default": CALLS - 5, "0": 3, "1": 2}
    voicemails = data.stores[[s.name for s in data.stores].index("media")].tables[0]
    assert voicemails.files == 1 and voicemails.files_path == "data/media/voicemails/"
    archive = data.stores[-1]
    assert archive.notes == ("Papierarchiv durchsucht",) and archive.tables[0].category is None
    assert portal.description == datamap.stores["portal_db"].description["en"]
    with pytest.raises(ValueError, match="locale"):
        dataclasses.replace(data, locale="fr")


def test_the_report_needs_neither_flask_nor_the_database() -> None:
    code = ("import sys, dsr.exports.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'rq', 'redis')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("locale", ["de", "en"])
def test_processing_that_stores_nothing_is_named_with_its_third_country_transfer(
        reports: dict[str, Rendered], datamap: DataMap, tmp_path: Path, locale: str) -> None:
    """Issue 12.5: Google Maps and reCAPTCHA send the visitor's IP address and device data to Google in the
    USA; the controller stores nothing, yet the answer must name the recipient and the safeguard."""
    nothing = [{"store": s, "counts": {"found": dict.fromkeys(TABLES[s], 0), "files": {}}} for s in TABLES]
    negative = _render(report_data(datamap, REQUEST, nothing, {}, locale), tmp_path / "none.pdf")
    unstored = [c for c in datamap.categories.values() if not c.stored]
    assert {c.id for c in unstored} == {"google_maps", "recaptcha"}
    for r in (reports[locale], negative):
        text = squash(r.text)
        assert squash({"de": "Verarbeitungen, bei denen wir nichts speichern",
                       "en": "Processing in which we store nothing"}[locale]) in text
        for category in unstored:
            assert squash(category.title[locale]) in text
            for transfer in category.transfers:
                assert squash(f"{datamap.recipients[transfer.recipient].name} ({transfer.country})") in text
                assert squash(transfer.safeguard[locale]) in text
            for purpose in category.purposes:
                assert squash(datamap.purposes[purpose].legal_basis) in text
    tasks, outputs = _collected(tmp_path / "work")
    portability = _render(report_data(datamap, {**REQUEST, "type": "portability"}, tasks, outputs, locale),
                          tmp_path / "p.pdf")
    assert squash(unstored[0].title[locale]) not in squash(portability.text)  # not data we could hand over
