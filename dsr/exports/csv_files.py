"""CSV files, one per table, written batch by batch as a connector streams rows."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from dsr.stores.base import KINDS, ColumnKind, JsonText

# A spreadsheet treats a cell starting with these as a formula (CSV injection): prefix a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_GUARDED = tuple("'" + c for c in _FORMULA_START)


def unguarded(value: str) -> str:
    """The value as stored, from its CSV cell (undoes the formula guard of ``cell``)."""
    return value[1:] if value.startswith(_GUARDED) else value


def iso_time(value: datetime) -> str:
    """ISO 8601, aware times in UTC; a fraction of a second only when not zero, without trailing zeros
    (as PostgreSQL writes times, so both export paths give the same bytes)."""
    text = (value.astimezone(UTC) if value.tzinfo else value).isoformat(timespec="microseconds")
    moment, plus, offset = text.partition("+")
    if "." in moment:
        moment = moment.rstrip("0").rstrip(".")
    return moment + plus + offset


def cell(value: Any) -> Any:
    """One value as written to CSV. The PostgreSQL COPY path (dsr.stores.sql) writes the same forms."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def kinds_path(csv_path: Path) -> Path:
    """Where a table's column kinds are noted beside its CSV: a dot file, which never names data
    (``_safe`` strips leading dots) and is not packed (``PackageWriter.add_folder``)."""
    return csv_path.with_name(f".{csv_path.stem}.kinds")


def write_kinds(csv_path: Path, columns: Sequence[str], kinds: Sequence[str]) -> None:
    kinds_path(csv_path).write_text(json.dumps({"columns": list(columns), "kinds": list(kinds)}), encoding="utf-8")


def read_kinds(csv_path: Path, columns: Sequence[str]) -> list[ColumnKind] | None:
    """The kinds noted for ``columns`` of this CSV; None when there are none (text), or they are of
    other columns (a note from another attempt)."""
    try:
        noted = json.loads(kinds_path(csv_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = noted.get("kinds") if isinstance(noted, dict) else None
    if noted.get("columns") != list(columns) or not isinstance(kinds, list) or not set(kinds) <= KINDS:
        return None
    return cast(list[ColumnKind], kinds)


def _kind_of(value: Any) -> str:
    if isinstance(value, JsonText | dict | list):
        return "json"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _settled(seen: set[str]) -> ColumnKind:
    """The kind of an "any" column from the kinds its values had: one kind (integers and floats are
    numbers) keeps its JSON type; a mix is text, so no value is given a type it did not have."""
    if seen == {"integer", "number"}:
        return "number"
    return cast(ColumnKind, next(iter(seen))) if len(seen) == 1 else "string"


class CsvTableWriter:
    """``<table>.csv`` from rows, batch by batch; with ``kinds``, noted beside it when closed."""

    def __init__(self, path: Path, columns: Sequence[str], kinds: Sequence[ColumnKind] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path, self._columns = path, list(columns)
        self._kinds = list(kinds) if kinds is not None and len(kinds) == len(columns) else None
        # "any" columns: the kinds their values had so far (the values are only seen here, as they pass).
        self._seen: dict[int, set[str]] = {i: set() for i, k in enumerate(self._kinds or []) if k == "any"}
        # utf-8-sig: the BOM makes spreadsheet software read the file as UTF-8 (umlauts intact).
        self._file: IO[str] = path.open("w", encoding="utf-8-sig", newline="")
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")  # as PostgreSQL's COPY writes it
        self._writer.writerow(columns)
        self._flush()

    def _flush(self) -> None:
        self._file.write(self._buffer.getvalue())
        self._buffer.seek(0)
        self._buffer.truncate()

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        for i, seen in self._seen.items():
            seen.update(_kind_of(row[i]) for row in rows if row[i] is not None)
        cells = [[cell(v) for v in row] for row in rows]
        self._writer.writerows(cells)
        if "\r" in self._buffer.getvalue():
            # Python's csv module leaves a lone CR unquoted, which breaks the record for readers (and
            # differs from PostgreSQL's COPY): rare, so such a batch is written again, quoted by us.
            self._buffer.seek(0)
            self._buffer.truncate()
            self._buffer.writelines(",".join(_quoted(v) for v in row) + "\n" for row in cells)
        self._flush()

    def close(self) -> None:
        self._file.close()
        if self._kinds is not None:
            kinds = [_settled(self._seen[i]) if i in self._seen else k for i, k in enumerate(self._kinds)]
            write_kinds(self._path, self._columns, kinds)


def _quoted(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


class CsvStream:
    """CSV bytes the store formats itself, header line first."""

    def __init__(self, path: Path, columns: Sequence[str] = (), kinds: Sequence[ColumnKind] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if kinds is not None and len(kinds) == len(columns):
            write_kinds(path, columns, kinds)  # known before the first byte: the store's SQL types
        self._file = path.open("wb")
        self._file.write("\ufeff".encode())  # the same BOM as the row-by-row writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)

    def close(self, rows: int = 0) -> None:
        self._file.close()


class CsvDirectorySink:
    """``<directory>/<table>.csv`` for each table a connector opens; files under ``<directory>/<table>/``.

    The JSON twins are written from these files when the package is built (``json_files.add_json``,
    in ``dsr.domain.packaging``), while the report renders on the other core."""

    accepts_raw_csv = True  # see open_csv

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open_table(self, name: str, columns: Sequence[str],
                   kinds: Sequence[ColumnKind] | None = None) -> CsvTableWriter:
        return CsvTableWriter(self.directory / f"{_safe(name)}.csv", columns, kinds)

    def open_csv(self, name: str, columns: Sequence[str] = (), kinds: Sequence[ColumnKind] | None = None) -> CsvStream:
        """A raw byte stream for CSV that the store formats itself (PostgreSQL COPY), header included
        (``columns``: the header's, for the kinds)."""
        return CsvStream(self.directory / f"{_safe(name)}.csv", columns, kinds)

    def add_file(self, table: str, name: str, content: BinaryIO) -> None:
        target = self.directory / _safe(table) / _safe(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            shutil.copyfileobj(content, out, 1024 * 1024)


def _safe(name: str) -> str:
    """A file name from a store's value: no folders, no hidden files, no control characters."""
    cleaned = "".join(c if c.isalnum() or c in "-_.@+" else "_" for c in name).lstrip(".")
    return cleaned[:150] or "unnamed"
