"""What the PDF report is made from: plain, immutable values, gathered without Flask or a database.

``report_data`` turns what ``assemble`` has at hand (the request's fields, each task's counts, each
task's output folder) into a ``ReportData``; ``preview_rows`` reads only the first rows of a CSV
file. Nothing here renders: ``dsr.exports.report`` does.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from dsr.datamap.model import DataMap, Localized, Store
from dsr.exports.csv_files import _safe as package_name
from dsr.exports.csv_files import unguarded  # the file names CsvDirectorySink gives tables

LOCALES = ("de", "en")
PREVIEW_ROWS = 10
# The CSV writer puts a quote before a value a spreadsheet would run as a formula (csv_files.cell);
# the report is not a spreadsheet, so it shows the value as stored.


@dataclass(frozen=True)
class Preview:
    """The first rows of a table as disclosed in its CSV file (masked and omitted fields already applied)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Redaction:
    """An Art. 15(4) / secrets rule applied to one field: how, and to how many records (never values)."""

    field: str
    disclose: str  # mask | omit
    mask: str | None
    records: int
    # Records per outcome that applied: "default" (the field's own rule) or a case's position in the
    # data map's ``cases``. Empty in counts recorded before outcomes were (then: the rule, ``records``).
    outcomes: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class TableData:
    name: str
    category: str | None  # the table's data map category; None for a table the data map does not list
    rows: int
    files: int = 0
    csv_path: str | None = None  # inside the package, e.g. "portal_db/call_records.csv"
    files_path: str | None = None  # the folder of its files inside the package, e.g. "media/voicemails/"
    preview: Preview | None = None
    redactions: tuple[Redaction, ...] = ()
    left_out: tuple[str, ...] = ()  # fields outside the request's scope (portability: not portable)


@dataclass(frozen=True)
class StoreData:
    name: str
    description: str  # in the report's language
    tables: tuple[TableData, ...]
    # What the person who searched this store by hand wrote for the answer. The connectors' own notes
    # (files, folders, patterns, hosts searched) are for the DPO office and never reach the report.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportData:
    locale: str  # de | en
    reference: str
    request_type: str  # access | portability
    received_at: datetime
    answered_at: datetime
    legal_end: date
    datamap: DataMap  # controller, DPO, version and date, and all Art. 15(1)/(2) information
    stores: tuple[StoreData, ...]
    preview_limit: int = PREVIEW_ROWS
    formats: tuple[str, ...] = ("csv",)  # data file formats in the package: csv, json
    timezone: str = "Europe/Berlin"  # dates and times are shown in this zone

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, not {self.locale!r}")
        if self.preview_limit < 0:
            raise ValueError("preview_limit must not be negative")

    @property
    def total_rows(self) -> int:
        return sum(t.rows for s in self.stores for t in s.tables)

    @property
    def total_files(self) -> int:
        return sum(t.files for s in self.stores for t in s.tables)


def localized(text: Localized | None, locale: str) -> str:
    """A data map text in ``locale`` (the other language if it is missing; "" for none)."""
    if not text:
        return ""
    return text.get(locale) or next((v for v in text.values() if v), "")


def preview_rows(csv_path: Path, limit: int = PREVIEW_ROWS) -> Preview | None:
    """The header and the first ``limit`` rows of a CSV file, read without reading the rest of it.

    None when the file does not exist or is empty. A damaged file gives the rows before the damage."""
    if not csv_path.is_file():
        return None
    header: list[str] | None = None
    rows: list[tuple[str, ...]] = []
    with csv_path.open(encoding="utf-8-sig", errors="replace", newline="") as file:
        reader = csv.reader(file)
        try:
            header = next(reader, None)
            if header is not None:
                for row in itertools.islice(reader, limit):
                    rows.append(tuple(_cell(v) for v in row))
        except csv.Error:  # e.g. a value longer than csv.field_size_limit(): keep what was read
            pass
    return Preview(tuple(header), tuple(rows)) if header is not None else None


def _cell(value: str) -> str:
    return unguarded(value)


def report_data(
    datamap: DataMap,
    request: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    outputs: Mapping[str, Path],
    locale: str | None = None,
    *,
    preview_limit: int = PREVIEW_ROWS,
    formats: tuple[str, ...] = ("csv",),
    package_prefix: str = "",
    timezone: str = "Europe/Berlin",
) -> ReportData:
    """Build the report's data from plain inputs.

    ``request``: reference, type, received_at, legal_end, and optionally answered_at (default: now)
    and locale. ``tasks``: per store ``{"store": name, "counts": task.counts}``, where counts holds
    ``found`` and ``files`` ({table: n}), ``redactions`` ({table: {field: {disclose, mask, records,
    outcomes}}}), for a store searched by hand ``note``, for portability ``out_of_scope`` (a
    connector's ``notes`` describe the installation: they are not read).
    ``outputs``: each store's output folder with one ``<table>.csv`` per table. ``package_prefix`` is
    where the store folders sit inside the package ("" for the top level, "data/" for a data folder).
    """
    chosen = (locale or str(request.get("locale") or "de"))[:2].lower()
    stores = []
    for task in sorted(tasks, key=lambda t: _store_order(datamap, str(t["store"]))):
        name = str(task["store"])
        folder = outputs.get(name)
        stores.append(_store(datamap.stores.get(name), name, dict(task.get("counts") or {}), folder, chosen,
                             preview_limit, package_prefix))
    return ReportData(
        locale=chosen if chosen in LOCALES else "de",
        reference=str(request["reference"]),
        request_type=str(request["type"]),
        received_at=request["received_at"],
        answered_at=request.get("answered_at") or datetime.now(UTC),
        legal_end=request["legal_end"],
        datamap=datamap,
        stores=tuple(stores),
        preview_limit=preview_limit,
        formats=formats,
        timezone=timezone,
    )


def _store_order(datamap: DataMap, name: str) -> tuple[int, str]:
    names = list(datamap.stores)
    return (names.index(name), "") if name in names else (len(names), name)


def _store(store: Store | None, name: str, counts: dict[str, Any], folder: Path | None, locale: str,
           limit: int, prefix: str) -> StoreData:
    found: dict[str, int] = {str(k): int(v) for k, v in (counts.get("found") or {}).items()}
    files: dict[str, int] = {str(k): int(v) for k, v in (counts.get("files") or {}).items()}
    redactions: dict[str, dict[str, Any]] = counts.get("redactions") or {}
    left_out: dict[str, list[str]] = counts.get("out_of_scope") or {}
    known = list(store.tables) if store else []
    names = [t for t in known if t in found or t in files]
    names += sorted((set(found) | set(files)) - set(known))
    tables = []
    for table in names:
        rows, count = found.get(table, 0), files.get(table, 0)
        csv_file = folder / f"{package_name(table)}.csv" if folder is not None else None
        has_csv = csv_file is not None and csv_file.is_file()
        preview = preview_rows(csv_file, limit) if has_csv and rows and csv_file is not None else None
        tables.append(TableData(
            name=table,
            category=store.tables[table].category if store and table in store.tables else None,
            rows=rows,
            files=count,
            csv_path=f"{prefix}{package_name(name)}/{package_name(table)}.csv" if has_csv else None,
            files_path=f"{prefix}{package_name(name)}/{package_name(table)}/" if count else None,
            preview=preview,
            redactions=tuple(
                Redaction(str(field), str(rule.get("disclose") or "mask"), rule.get("mask"),
                          int(rule.get("records") or 0),
                          tuple((str(k), int(n)) for k, n in (rule.get("outcomes") or {}).items() if int(n)))
                for field, rule in (redactions.get(table) or {}).items()),
            left_out=tuple(str(f) for f in left_out.get(table) or ()),
        ))
    notes = [str(counts["note"])] if counts.get("note") else []
    description = localized(store.description, locale) if store else name
    return StoreData(name, description, tuple(tables), tuple(notes))
