"""The same data as JSON (Art. 20: structured, commonly used, machine-readable), and a data
dictionary that documents every column: its category, meaning and how it was disclosed.

A table's JSON file gives the column names once and then each row as an array of its values, in
the columns' order (docs/package.md)::

    {"columns":["id","started_at","to_number"],"rows":[
    ["1","2026-03-08T16:15:10+00:00","+4915164734xxx"],
    ["2","2026-08-17T12:20:17+00:00",null]
    ]}

Values are text exactly as in the CSV file (times ISO 8601 UTC), without the CSV's formula guard;
an empty cell is null. The JSON is written from the CSV's bytes (``JsonTwin``) when the package is
built: a block of rows without quotes, backslashes or control characters, which is nearly every
block, is turned into JSON by a few byte replacements, not value by value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dsr.datamap.model import DataMap, Store
from dsr.exports.csv_files import unguarded

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_BOM = "\ufeff".encode()
# A CSV block holding none of these bytes has no quoted cell and nothing JSON must escape.
_SPECIAL = bytes(range(10)) + bytes(range(11, 32)) + b'"\\'
# The formula guard (csv_files.cell) before = + - @; before a tab or CR it is undone on the slow path.
_GUARDS = [(b"\"'" + c, b'"' + c) for c in (b"=", b"+", b"-", b"@")]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JsonTwin:
    """Writes ``<table>.json`` from the bytes of ``<table>.csv``.

    ``feed`` takes CSV text in any pieces (the header line first unless ``columns`` are given);
    rows are converted once complete, so memory holds at most one piece and one partial row."""

    def __init__(self, path: Path, columns: Sequence[str] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("wb")
        self._pending = b""
        self._columns: int | None = None
        self._first = True
        if columns is not None:
            self._start(list(columns))

    def _start(self, columns: list[str]) -> None:
        self._columns = len(columns)
        self._file.write(('{"columns":' + _dumps(columns) + ',"rows":[').encode())

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending + bytes(data)
        cut = _complete(pending)
        if cut == 0:
            self._pending = pending
            return
        block, self._pending = pending[:cut], pending[cut:]
        if self._columns is None:
            line = _complete(block, first=True)
            header = next(csv.reader(io.StringIO(block[:line].decode("utf-8").removeprefix("\ufeff"))), [])
            self._start(header)
            block = block[line:]
        if block:
            self._rows(block)

    def _rows(self, block: bytes) -> None:
        assert self._columns is not None
        rows = block.count(b"\n")
        text = None
        if len(block.translate(None, _SPECIAL)) == len(block) and (
                block.count(b",") == rows * (self._columns - 1)):
            # No quoted cell: each line is its cells joined by commas; nothing needs escaping.
            text = b'["' + block[:-1].replace(b",", b'","').replace(b"\n", b'"],\n["') + b'"]'
            text = text.replace(b'""', b"null")  # a value has no quote, so "" is an empty cell
            if b"\"'" in text:
                for guarded, plain in _GUARDS:
                    text = text.replace(guarded, plain)
        else:
            lines = csv.reader(io.StringIO(block.decode("utf-8"), newline=""))
            width = self._columns
            text = ",\n".join(_dumps([unguarded(v) if v != "" else None for v in row]
                                      + [None] * (width - len(row))) for row in lines).encode()
        self._file.write((b"\n" if self._first else b",\n") + text)
        self._first = False

    def close(self) -> None:
        if self._pending:
            self.feed(b"\n")  # a last row without its line end
        if self._columns is None:
            self._start([])
        self._file.write(b"\n]}\n")
        self._file.close()


def _complete(data: bytes, first: bool = False) -> int:
    """Where the complete CSV records in ``data`` end (after a newline outside quotes); 0: none yet.
    ``first``: the end of the first record instead of the last."""
    end = data.find(b"\n") if first else data.rfind(b"\n")
    if b'"' not in data:
        return end + 1
    while end >= 0:
        # Outside a quoted cell exactly when an even number of quotes came before ("" included).
        if data.count(b'"', 0, end) % 2 == 0:
            return end + 1
        end = data.find(b"\n", end + 1) if first else data.rfind(b"\n", 0, end)
    return 0


def csv_to_json(source: Path, target: Path) -> None:
    """Write ``target`` from a finished CSV file, a megabyte at a time; under a temporary name until
    it is complete, so an interrupted run leaves no half twin that a retry would take as done."""
    partial = target.with_name(target.name + ".partial")
    twin = JsonTwin(partial)
    with source.open("rb") as f:
        head = f.read(len(_BOM))
        if head != _BOM:
            twin.feed(head)
        while chunk := f.read(1 << 20):
            twin.feed(chunk)
    twin.close()
    partial.replace(target)


def add_json(folder: Path) -> list[Path]:
    """A ``.json`` twin for every ``.csv`` in a store's output folder that has none yet (a retried
    package step keeps the twins an earlier attempt finished)."""
    written = []
    for source in sorted(folder.glob("*.csv")):
        target = source.with_suffix(".json")
        if not target.exists():
            csv_to_json(source, target)
            written.append(target)
    return written


def _columns(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f), [])


def dictionary(datamap: DataMap, outputs: dict[str, Path]) -> dict[str, Any]:
    """The data dictionary of a package: per file, per column, what it holds (de and en)."""
    files: dict[str, Any] = {}
    for store_name, folder in sorted(outputs.items()):
        store = datamap.stores.get(store_name)
        for csv_path in sorted(folder.glob("*.csv")):
            table = csv_path.stem
            files[f"{store_name}/{table}.csv"] = _table_entry(datamap, store, table, _columns(csv_path))
    return {"datamap_version": datamap.version, "files": files}


def _table_entry(datamap: DataMap, store: Store | None, table: str, columns: list[str]) -> dict[str, Any]:
    spec = store.tables.get(table) if store else None
    entry: dict[str, Any] = {"json": f"{table}.json", "columns": {}}
    if spec is not None:
        category = datamap.categories.get(spec.category)
        entry["category"] = spec.category
        entry["title"] = dict(category.title) if category else None
        if spec.description:
            entry["description"] = dict(spec.description)
    for column in columns:
        rule = spec.rule(column) if spec else None
        category = datamap.categories.get(rule.category) if rule else None
        info: dict[str, Any] = {"category": rule.category if rule else None,
                                "category_title": dict(category.title) if category else None}
        if rule and rule.description:
            info["description"] = dict(rule.description)
        if rule and rule.disclose == "mask":
            info["masked"] = {"how": rule.mask, "why": dict(rule.reason or {})}
        entry["columns"][column] = info
    return entry


def json_schema(entry: dict[str, Any], title: str) -> dict[str, Any]:
    """A JSON Schema (2020-12) of one table's JSON file, from its data dictionary entry: the column
    names, then rows whose n-th value is the n-th column's."""
    columns = list(entry["columns"])
    cells = []
    for column, info in entry["columns"].items():
        text = (info.get("description") or info.get("category_title") or {}).get("en")
        cells.append({"title": column, "type": ["string", "null"], **({"description": text} if text else {})})
    return {"$schema": JSON_SCHEMA, "title": title, "type": "object", "required": ["columns", "rows"],
            "additionalProperties": False,
            "properties": {
                "columns": {"const": columns},
                "rows": {"type": "array", "items": {"type": "array", "prefixItems": cells, "items": False,
                                                    "minItems": len(cells)}},
            }}


def records(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of a table's JSON file as objects keyed by column (for readers and tests)."""
    columns = document["columns"]
    for row in document["rows"]:
        yield dict(zip(columns, row, strict=True))


def schemas(dictionary_doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, entry in dictionary_doc["files"].items():
        yield path.removesuffix(".csv") + ".schema.json", json_schema(entry, path.removesuffix(".csv"))
