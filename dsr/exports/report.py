"""The PDF report a subject receives with their data (Art. 15 / Art. 20 GDPR): WeasyPrint and Jinja2.

``build_report(data, out)`` is pure: no Flask, no database. The wording is in the templates
(``templates/report/texts/<locale>.html``, the glossary in ``templates/report/glossary.yaml``), so a
controller changes texts without touching Python. Templates see plain values only (strings, numbers,
dates, lists, dicts), every value is autoescaped, and WeasyPrint loads nothing but the report's own
assets: no value from a store can make it read a local file or a URL.

The report shows counts and the first rows of each table, never every row: it points to the files.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname
from zoneinfo import ZoneInfo

import yaml
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup
from weasyprint import HTML
from weasyprint.urls import URLFetcher, URLFetcherResponse

from dsr.config import project_folder
from dsr.datamap.model import Category, Contact, DataMap, Store, Table
from dsr.exports.package import sha256_file
from dsr.exports.report_model import (
    PREVIEW_ROWS,
    Preview,
    ReportData,
    StoreData,
    TableData,
    localized,
    preview_rows,
    report_data,
)

__all__ = ["PREVIEW_ROWS", "AssetFetcher", "ReportData", "ReportInfo", "build_report", "preview_rows",
           "report_data", "warm_up"]

log = logging.getLogger(__name__)

ASSET_TYPES = {".css": "text/css", ".ttf": "font/ttf", ".otf": "font/otf", ".woff": "font/woff",
               ".woff2": "font/woff2", ".png": "image/png", ".svg": "image/svg+xml"}
# EU and EEA: a recipient elsewhere is in a third country (Art. 44 ff. GDPR).
EEA = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO",
})
CELL_CHARS = 160  # of a value shown in a preview; the file holds all of it
# Preview rows in the whole report: with many tables each shows fewer (at least MIN_PREVIEW), so the
# report stays short (well under 100 pages) whatever the data map holds.
PREVIEW_BUDGET = 600
MIN_PREVIEW = 5
_CONSENT = re.compile(r"\b[69]\s*\(\s*[12]\s*\)\s*\(\s*a\s*\)")  # Art. 6(1)(a), 9(2)(a)


@dataclass(frozen=True)
class ReportInfo:
    path: Path
    pages: int
    size: int
    sha256: str


def templates_folder() -> Path:
    return project_folder("templates") / "report"


class AssetFetcher(URLFetcher):
    """Fetches only the files named at construction (the report's stylesheet, fonts, images).

    Everything else is refused: ``file://`` elsewhere, ``http(s)://``, ``data:``, any other scheme."""

    def __init__(self, assets: Iterable[Path]) -> None:
        super().__init__(timeout=5, allowed_protocols=("file",), allow_redirects=False, fail_on_errors=False)
        self.allowed = frozenset(p.resolve() for p in assets if p.resolve().suffix in ASSET_TYPES)

    @classmethod
    def for_folder(cls, folder: Path) -> AssetFetcher:
        """The stylesheets, fonts and images in ``folder`` (not what a link there points to elsewhere)."""
        root = folder.resolve()
        return cls(p for p in root.rglob("*") if p.is_file() and p.resolve().is_relative_to(root))

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        path = self.asset(url)
        if path is None:
            log.warning("report: refused to load %r (only the report's own assets are loaded)", url[:200])
            raise ValueError("the report loads only its own assets")
        return URLFetcherResponse(url, path.read_bytes(), {"Content-Type": ASSET_TYPES[path.suffix]})

    def asset(self, url: str) -> Path | None:
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            return None
        path = Path(url2pathname(parts.path)).resolve()
        return path if path in self.allowed else None


def build_report(data: ReportData, out: Path, *, templates: Path | None = None) -> ReportInfo:
    """Render the report to ``out`` (written under a temporary name, then renamed)."""
    folder = (templates or templates_folder()).resolve()
    env = _environment(str(folder), data.locale)
    html = env.get_template("report.html").render(context(data, _glossary(folder / "glossary.yaml")))
    document = HTML(string=html, base_url=folder.as_uri() + "/", url_fetcher=AssetFetcher.for_folder(folder))
    rendered = document.render()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")  # two attempts never share one
    rendered.write_pdf(partial, pdf_tags=True)
    partial.replace(out)
    return ReportInfo(out, len(rendered.pages), out.stat().st_size, sha256_file(out))


def warm_up(datamap: DataMap, scratch: Path) -> None:
    """Render one report (an answer without data) and throw it away: WeasyPrint, the fonts, the
    stylesheet and the templates are then loaded. A worker does this once, before it forks the
    work horses that build packages, so they do not each pay for it."""
    for locale in ("de", "en"):
        now = datetime.now(UTC)
        out = scratch / f"warm-up-{locale}.pdf"
        build_report(report_data(datamap, {"reference": "DSR-0000-000000", "type": "access", "received_at": now,
                                           "legal_end": now.date(), "answered_at": now}, [], {}, locale), out)
        out.unlink()


@functools.lru_cache(maxsize=8)
def _environment(folder: str, locale: str) -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=FileSystemLoader(folder), autoescape=True, undefined=StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = functools.partial(_number, locale=locale)
    env.filters["css_string"] = _css_string
    return env


def _number(value: int, locale: str) -> str:
    text = f"{int(value):,}"
    return text.replace(",", ".") if locale == "de" else text


def _css_string(value: Any) -> Markup:
    """Text for a CSS string in the page margins: anything but letters, digits and spaces escaped."""
    return Markup("".join(c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in str(value)))  # noqa: S704


def _glossary(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [e for e in entries if isinstance(e, dict)]


def context(data: ReportData, glossary: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the templates see, as plain values."""
    data, left_out = _scoped(data)
    m, loc = data.datamap, data.locale
    zone: tzinfo = ZoneInfo(data.timezone)
    categories = _categories(data)
    used = [c for c in m.categories if c in categories]
    # Processing that keeps nothing here (a map, a captcha loaded from a third party) may have concerned
    # anyone who used the site: every answer names it, its recipients and transfers (Art. 15(1)(c), (2)).
    unstored = [c for c, cat in m.categories.items() if not cat.stored and data.request_type != "portability"]
    # With no data found, the subject may complain to any of them.
    authorities = {**(dict.fromkeys(m.categories[c].authority for c in used) or dict.fromkeys(m.authorities)),
                   **dict.fromkeys(m.categories[c].authority for c in unstored)}
    purposes = dict.fromkeys(p for c in [*used, *unstored] for p in m.categories[c].purposes)
    for n, cid in enumerate(used):
        categories[cid]["anchor"] = f"category-{n}"
    shown = sum(1 for s in data.stores for t in s.tables if t.rows and t.preview)
    limit = data.preview_limit
    if shown * limit > PREVIEW_BUDGET:
        limit = max(PREVIEW_BUDGET // shown, min(MIN_PREVIEW, limit))
    stores = [_store(data, s, n, limit, left_out.get(s.name, [])) for n, s in enumerate(data.stores)]
    answered = _local(data.answered_at, zone)
    return {
        "locale": loc,
        "request": {
            "reference": data.reference, "type": data.request_type,
            "received_at": _local(data.received_at, zone), "answered_at": answered,
            "legal_end": data.legal_end, "created": answered.isoformat(timespec="seconds"),
        },
        "nothing": not (data.total_rows or data.total_files),
        "controller": _contact(m.controller), "dpo": _contact(m.controller.dpo),
        "datamap": {"version": m.version, "date": m.date},
        "formats": list(data.formats),
        "preview_limit": limit,
        "totals": {"records": data.total_rows, "files": data.total_files, "categories": len(used),
                   "tables": sum(1 for s in data.stores for t in s.tables if t.rows or t.files),
                   "csv_files": sum(1 for s in data.stores for t in s.tables if t.csv_path)},
        "categories": [categories[c] for c in used],
        "not_stored": [_information(m, m.categories[c], loc) for c in unstored],
        "authorities": [{**_contact(m.authorities[a]), "scope": localized(m.authorities[a].scope, loc)}
                        for a in authorities],
        "objection": [localized(m.purposes[p].description, loc) for p in purposes
                      if m.purposes[p].legitimate_interest is not None],
        "consent": [localized(m.purposes[p].description, loc) for p in purposes
                    if _CONSENT.search(m.purposes[p].legal_basis)],
        "portable": [localized(m.categories[c].title, loc) for c in used if m.categories[c].portable],
        "not_portable": [localized(c.title, loc) for c in m.categories.values() if not c.portable and c.stored],
        "redactions": _redactions(data),
        "stores": stores,
        "data_stores": [s for s in stores if s["tables"]],
        "example_csv": next((t.csv_path for s in data.stores for t in s.tables if t.csv_path and t.rows), None),
        "example_files": next((t.files_path for s in data.stores for t in s.tables if t.files_path), None),
        "cell_chars": CELL_CHARS,
        "glossary": _glossary_entries(data, glossary or []),
    }


def _scoped(data: ReportData) -> tuple[ReportData, dict[str, list[str]]]:
    """Portability (Art. 20) covers only the categories the data map marks portable: tables of the
    others are not in the answer (a store may still have counted them) and are named as left out."""
    if data.request_type != "portability":
        return data, {}
    categories = data.datamap.categories
    left_out: dict[str, list[str]] = {}
    stores = []
    for store in data.stores:
        kept = []
        for table in store.tables:
            category = categories.get(table.category) if table.category else None
            if category is not None and not category.portable:
                left_out.setdefault(store.name, []).append(table.name)
            else:
                kept.append(table)
        stores.append(replace(store, tables=tuple(kept)))
    return replace(data, stores=tuple(stores)), left_out


def _local(value: datetime, zone: tzinfo) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(zone)


def _contact(c: Contact) -> dict[str, str | None]:
    url = c.url if c.url and c.url.startswith(("https://", "http://")) else None
    return {"name": c.name, "address": c.address, "email": c.email, "phone": c.phone, "url": url}


def _categories(data: ReportData) -> dict[str, dict[str, Any]]:
    """The categories this subject has data in, each with where it is (tables, fields) and the
    Art. 15(1)/(2) information from the data map."""
    m, loc = data.datamap, data.locale
    places: dict[str, list[dict[str, Any]]] = {}
    for store in data.stores:
        definition = m.stores.get(store.name)
        for table in store.tables:
            if table.category is None or definition is None or not (table.rows or table.files):
                continue
            tdef = definition.tables.get(table.name)
            if tdef is None:
                continue
            columns = list(table.preview.columns) if table.preview else None
            place = {"store": store.name, "table": table.name, "csv": table.csv_path, "rows": table.rows,
                     "files": table.files, "description": localized(tdef.description, loc),
                     "where": _place(definition, table.name, loc)}
            own = ([field_label(tdef, c, loc) for c in columns if tdef.rule(c).category == tdef.category]
                   if columns is not None else None)
            places.setdefault(tdef.category, []).append({**place, "fields": own, "part": False})
            shared: dict[str, list[str]] = {}
            for column, rule in tdef.fields.items():
                if rule.category != tdef.category and rule.disclose != "omit" and (
                        columns is None or column in columns):
                    shared.setdefault(rule.category, []).append(field_label(tdef, column, loc))
            for category, fields in shared.items():
                places.setdefault(category, []).append({**place, "fields": fields, "part": True})
    out = {}
    for cid, where in places.items():
        cat = m.categories.get(cid)
        if cat is None:
            continue
        out[cid] = {**_information(m, cat, loc), "places": where,
                    "records": sum(p["rows"] for p in where), "files": sum(p["files"] for p in where)}
    return out


def _information(m: DataMap, cat: Category, loc: str) -> dict[str, Any]:
    """A category's Art. 15(1) and (2) information from the data map."""
    retention = m.retention[cat.retention]
    return {
        "id": cat.id, "title": localized(cat.title, loc),
        "purposes": [{"description": localized(m.purposes[p].description, loc),
                      "legal_basis": m.purposes[p].legal_basis,
                      "legitimate_interest": localized(m.purposes[p].legitimate_interest, loc)}
                     for p in cat.purposes],
        "recipients": [_recipient(m, r, loc) for r in dict.fromkeys(
            (*cat.recipients, *(t.recipient for t in cat.transfers)))],
        "transfers": [{"recipient": m.recipients[t.recipient].name, "country": t.country,
                       "safeguard": localized(t.safeguard, loc)} for t in cat.transfers],
        "retention": localized(retention.description, loc),
        "statutory_retention": cat.statutory_retention,
        "source": localized(cat.source, loc),
        "automated_decisions": localized(cat.automated_decisions, loc),
        "authority": m.authorities[cat.authority].name,
        "portable": cat.portable,
    }


def store_label(store: Store | None, name: str, locale: str) -> str:
    """A system as a subject reads it: its label, else its description, else its name in the map."""
    if store is None:
        return name
    return localized(store.label, locale) or localized(store.description, locale) or name


def table_label(store: Store | None, table: str, locale: str) -> str:
    spec = store.tables.get(table) if store else None
    return (localized(spec.label, locale) if spec else "") or table


def field_label(spec: Table | None, column: str, locale: str) -> str:
    rule = spec.fields.get(column) if spec else None
    return (localized(rule.label, locale) if rule else "") or column


def _place(store: Store | None, table: str, locale: str) -> str:
    """Where a table is, in words: "Calls (portal database)"."""
    name = store.name if store else ""
    return f"{table_label(store, table, locale)} ({store_label(store, name, locale)})"


def _recipient(m: DataMap, rid: str, loc: str) -> dict[str, Any]:
    r = m.recipients[rid]
    return {"name": r.name, "role": r.role, "country": r.country, "third_country": r.country not in EEA,
            "address": r.address, "description": localized(r.description, loc)}


def _redactions(data: ReportData) -> list[dict[str, Any]]:
    """One entry per field and way it was disclosed that applied to this subject's records, with that
    way's own reason and count: a case that matched no record (or that the request did not ask for) is
    not mentioned, so the answer states no reason that does not hold for this subject."""
    m, loc = data.datamap, data.locale
    out = []
    for store in data.stores:
        definition = m.stores.get(store.name)
        for table in store.tables:
            tdef = definition.tables.get(table.name) if definition else None
            for r in table.redactions:
                rule = tdef.rule(r.field) if tdef else None
                category = m.categories.get(rule.category) if rule else None
                common = {"store": store.name, "table": table.name, "field": field_label(tdef, r.field, loc),
                          "column": r.field, "where": _place(definition, table.name, loc),
                          "description": localized(rule.description, loc) if rule else "",
                          "category": localized(category.title, loc) if category else ""}
                if not r.outcomes:  # counted before outcomes were: the field's own rule
                    if r.records or r.disclose != "export":
                        reason = localized(rule.reason, loc) if rule and rule.reason else ""
                        out.append({**common, "disclose": r.disclose, "mask": r.mask, "records": r.records,
                                    "reason": reason})
                    continue
                for key, records in r.outcomes:
                    case = rule.cases[int(key)] if rule and key != "default" and int(key) < len(rule.cases) else None
                    if case is not None:
                        disclose, mask, reason = case.disclose, case.mask, localized(case.reason, loc)
                    else:
                        disclose, mask = r.disclose, r.mask
                        reason = localized(rule.reason, loc) if rule and rule.reason else ""
                    out.append({**common, "disclose": disclose, "mask": mask, "records": records, "reason": reason})
    return out


def _store(data: ReportData, store: StoreData, n: int, limit: int, left_out: list[str]) -> dict[str, Any]:
    definition, loc = data.datamap.stores.get(store.name), data.locale
    label = store_label(definition, store.name, loc)
    spec = definition.tables if definition else {}
    return {"name": store.name, "label": label,
            "description": store.description if store.description != label else "", "notes": list(store.notes),
            "anchor": f"store-{n}",
            "tables": [_table(data, store.name, definition, t, f"table-{n}-{i}", limit)
                       for i, t in enumerate(store.tables) if t.rows or t.files],
            "empty": [table_label(definition, t.name, loc) for t in store.tables if not (t.rows or t.files)],
            "left_out": [{"table": table_label(definition, t, loc), "fields": []} for t in left_out]
                        + [{"table": table_label(definition, t.name, loc),
                            "fields": [field_label(spec.get(t.name), f, loc) for f in t.left_out]}
                           for t in store.tables if t.left_out]}


def _table(data: ReportData, store: str, definition: Any, table: TableData, anchor: str,
           limit: int) -> dict[str, Any]:
    loc, m = data.locale, data.datamap
    tdef = definition.tables.get(table.name) if definition else None
    category = m.categories.get(table.category) if table.category else None
    preview: Preview | None = table.preview
    columns = list(preview.columns) if preview else []
    rows = [_row(r, len(columns)) for r in preview.rows[:limit]] if preview else []
    legend = []
    if tdef is not None:
        for column in columns:
            rule = tdef.rule(column)
            text = localized(rule.description, loc)
            if rule.disclose == "mask":
                text = "; ".join(t for t in (text, localized(rule.reason, loc)) if t)
            label = field_label(tdef, column, loc)
            if text or label != column:
                # The label heads the preview; the legend gives the column's name in the file beside it.
                legend.append({"field": label, "column": column if label != column else "", "text": text,
                               "masked": rule.disclose == "mask"})
    headers = [field_label(tdef, c, loc) for c in columns]
    return {"store": store, "name": table.name, "label": table_label(definition, table.name, loc), "anchor": anchor,
            "category": localized(category.title, loc) if category else "",
            "description": localized(tdef.description, loc) if tdef else "",
            "rows": table.rows, "files": table.files, "csv": table.csv_path, "files_path": table.files_path,
            "columns": [c.replace("_", "_\u200b") for c in headers],  # a line may break after _
            "widths": _widths(headers, rows), "preview": rows, "shown": len(rows),
            "more": max(table.rows - len(rows), 0),
            "legend": legend}


def _widths(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Column widths in percent, from the longest value (capped): the preview tables use a fixed layout,
    as WeasyPrint's automatic one measures every possible line break of every cell (seconds per table)."""
    weights = []
    for i, column in enumerate(columns):
        longest = max((len(r[i]) for r in rows), default=0)
        # a long header breaks between its words (a label) or after _ (a column name)
        header = len(column) if len(column) <= 12 else max(len(part) for part in re.split(r"[\s_/-]+", column))
        weights.append(min(max(longest, header * 1.2, 3), 36) + 2)  # headers are bold; +2: cell padding
    total = sum(weights) or 1
    return [f"{100 * w / total:.2f}%" for w in weights]


def _row(row: tuple[str, ...], width: int) -> list[str]:
    cells = [v if len(v) <= CELL_CHARS else v[:CELL_CHARS] + "…" for v in row[:width]]
    return cells + [""] * (width - len(cells))


def _glossary_entries(data: ReportData, glossary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The glossary entries for the columns this report shows."""
    present: set[str] = set()
    for store in data.stores:
        for table in store.tables:
            if table.rows and table.preview is not None:
                present.update(f"{store.name}.{table.name}.{c}" for c in table.preview.columns)
    out = []
    for entry in glossary:
        where = [w for w in entry.get("applies", ()) if w in present]
        if not where:
            continue
        out.append({"title": _text(entry.get("title"), data.locale),
                    "where": [_glossary_place(data, w) for w in where],
                    "codes": [{"code": str(c.get("code")), "meaning": _text(c, data.locale)}
                              for c in entry.get("codes", ())]})
    return out


def _glossary_place(data: ReportData, where: str) -> str:
    """``store.table.column`` as a subject reads it: "Status (Calls)"."""
    store_name, table, column = where.split(".", 2)
    store = data.datamap.stores.get(store_name)
    spec = store.tables.get(table) if store else None
    return f"{field_label(spec, column, data.locale)} ({table_label(store, table, data.locale)})"


def _text(value: Any, locale: str) -> str:
    if isinstance(value, Mapping):
        return str(value.get(locale) or value.get("de") or value.get("en") or "")
    return "" if value is None else str(value)

