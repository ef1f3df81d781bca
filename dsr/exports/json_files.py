"""The same data as JSON (Art. 20: structured, commonly used, machine-readable), and a data
dictionary that documents every column: its category, meaning and how it was disclosed.

A table's JSON file gives the column names once and then each row as an array of its values, in
the columns' order (docs/package.md)::

    {"columns":["id","started_at","duration_s","to_number","net_amount"],"rows":[
    [1,"2026-03-08T16:15:10+00:00",42,"+4915164734xxx","19.99"],
    [2,"2026-08-17T12:20:17+00:00",null,null,"0.00"]
    ]}

Values have the JSON type of the column's kind, which the store told when it opened the table
(``dsr.stores.base.ColumnKind``, noted beside the CSV: ``csv_files.kinds_path``): integers, numbers
and booleans as such; times as ISO 8601 text in UTC with the offset; exact decimals (NUMERIC: money)
as text, so no reader rounds them to a float; masked values and anything else as text exactly as
in the CSV, without its formula guard. An empty cell is null. The JSON is written from the CSV's
bytes (``JsonTwin``) when the package is built: a block of rows without quotes, backslashes or
control characters, which is nearly every block, is turned into JSON by a few byte replacements
(and, with typed columns, one regular expression over the block), not value by value.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dsr.datamap.model import DataMap, Store
from dsr.exports.csv_files import read_kinds, unguarded
from dsr.exports.disclosure import disclosed_kind
from dsr.stores.base import ColumnKind

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_BOM = "\ufeff".encode()
# A CSV block holding none of these bytes has no quoted cell and nothing JSON must escape.
_SPECIAL = bytes(range(10)) + bytes(range(11, 32)) + b'"\\'
# The formula guard (csv_files.cell) before = + - @; before a tab or CR it is undone on the slow path.
_GUARDS = [(b"\"'" + c, b'"' + c) for c in (b"=", b"+", b"-", b"@")]
# Kinds written bare in the JSON, and the CSV text each must match to be written so (JSON's own
# grammar: no leading zeros, no NaN); anything else in such a column is written as text.
_BARE: dict[str, bytes] = {
    "integer": rb"-?(?:0|[1-9][0-9]*)",
    "number": rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?",
    "boolean": rb"true|false",
}
_BARE_TEXT = {kind: re.compile(pattern.decode()) for kind, pattern in _BARE.items()}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JsonTwin:
    """Writes ``<table>.json`` from the bytes of ``<table>.csv``.

    ``feed`` takes CSV text in any pieces (the header line first unless ``columns`` are given);
    rows are converted once complete, so memory holds at most one piece and one partial row."""

    def __init__(self, path: Path, columns: Sequence[str] | None = None,
                 kinds: Sequence[ColumnKind] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("wb")
        self._pending = b""
        self._columns: int | None = None
        self._first = True
        self._given_kinds = list(kinds) if kinds is not None else None
        self._cells: list[Callable[[str], str]] = []
        self._line: re.Pattern[bytes] | None = None  # the typed fast path (None: all text, or slow only)
        self._template = b""
        if columns is not None:
            self._start(list(columns))

    def _start(self, columns: list[str]) -> None:
        self._columns = len(columns)
        kinds: list[str] = ["string"] * len(columns)
        if self._given_kinds is not None and len(self._given_kinds) == len(columns):
            kinds = list(self._given_kinds)
        self._cells = [_CELLS.get(kind, _text) for kind in kinds]
        bare = [kind in _BARE for kind in kinds]
        if any(bare) and "json" not in kinds and len(kinds) > 1:
            # One row per line: bare kinds must match their grammar, text is anything without a comma.
            self._line = re.compile(b"^" + b",".join(b"(" + _BARE[k] + b")?" if k in _BARE else rb"([^,\n]*)"
                                                     for k in kinds) + b"$", re.MULTILINE)
            self._template = b"[" + b",".join((b"\\g<%d>" if b else b'"\\g<%d>"') % (i + 1)
                                             for i, b in enumerate(bare)) + b"]"
        self._slow_only = "json" in kinds or (any(bare) and self._line is None)
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
        if not self._slow_only and len(block.translate(None, _SPECIAL)) == len(block) and (
                block.count(b",") == rows * (self._columns - 1)):
            # No quoted cell: each line is its cells joined by commas; nothing needs escaping.
            if self._line is None:
                text = b'["' + block[:-1].replace(b",", b'","').replace(b"\n", b'"],\n["') + b'"]'
            else:
                text, matched = self._line.subn(self._template, block[:-1])
                if matched != rows:
                    text = None  # a value that is not what its kind says: the slow path writes it as text
                else:
                    # A bare cell left empty: null (no text cell holds a comma, so these are cell borders).
                    text = (text.replace(b"\n", b",\n").replace(b"[,", b"[null,").replace(b",]", b",null]")
                            .replace(b",,", b",null,").replace(b",,", b",null,"))
            if text is not None:
                text = text.replace(b'""', b"null")  # a value has no quote, so "" is an empty cell
                if b"\"'" in text:
                    for guarded, plain in _GUARDS:
                        text = text.replace(guarded, plain)
        if text is None:
            lines = csv.reader(io.StringIO(block.decode("utf-8"), newline=""))
            cells, width = self._cells, self._columns
            text = ",\n".join("[" + ",".join([_NULL if v == "" else cell(v)
                                              for cell, v in zip(cells, row, strict=False)]
                                             + [_NULL] * (width - len(row))) + "]" for row in lines).encode()
        self._file.write((b"\n" if self._first else b",\n") + text)
        self._first = False

    def close(self) -> None:
        if self._pending:
            self.feed(b"\n")  # a last row without its line end
        if self._columns is None:
            self._start([])
        self._file.write(b"\n]}\n")
        self._file.close()


_NULL = "null"


def _text(value: str) -> str:
    return _dumps(unguarded(value))


def _bare(kind: str) -> Callable[[str], str]:
    grammar = _BARE_TEXT[kind]
    return lambda value: value if grammar.fullmatch(value) else _text(value)


def _json(value: str) -> str:
    """JSON text of an object or list (a log line's nested fields), compact; anything else as text."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return _text(value)
    return _dumps(parsed) if isinstance(parsed, dict | list) else _text(value)


# How a CSV cell of each kind is written in the JSON (an empty cell is null whatever its kind).
_CELLS: dict[str, Callable[[str], str]] = {"integer": _bare("integer"), "number": _bare("number"),
                                          "boolean": _bare("boolean"), "json": _json}


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


def csv_to_json(source: Path, target: Path, kinds: Sequence[ColumnKind] | None = None) -> None:
    """Write ``target`` from a finished CSV file, a megabyte at a time; under a temporary name until
    it is complete, so an interrupted run leaves no half twin that a retry would take as done.
    ``kinds``: of the CSV's columns (None: those noted beside it, else all text)."""
    partial = target.with_name(target.name + ".partial")
    if kinds is None:
        kinds = read_kinds(source, _columns(source))
    twin = JsonTwin(partial, kinds=kinds)
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
            columns = _columns(csv_path)
            files[f"{store_name}/{table}.csv"] = _table_entry(datamap, store, table, columns,
                                                              read_kinds(csv_path, columns))
    return {"datamap_version": datamap.version, "files": files}


def _table_entry(datamap: DataMap, store: Store | None, table: str, columns: list[str],
                 kinds: Sequence[ColumnKind] | None = None) -> dict[str, Any]:
    spec = store.tables.get(table) if store else None
    entry: dict[str, Any] = {"json": f"{table}.json", "columns": {}}
    # Names as a subject reads them (the data map's labels), the raw name where none is given.
    if store is not None:
        entry["store_label"] = dict(store.label or store.description)
    entry["label"] = dict(spec.label) if spec is not None and spec.label else {"de": table, "en": table}
    if spec is not None:
        category = datamap.categories.get(spec.category)
        entry["category"] = spec.category
        entry["title"] = dict(category.title) if category else None
        if spec.description:
            entry["description"] = dict(spec.description)
    for i, column in enumerate(columns):
        rule = spec.rule(column) if spec else None
        category = datamap.categories.get(rule.category) if rule else None
        kind: ColumnKind = kinds[i] if kinds is not None else "string"
        info: dict[str, Any] = {"label": dict(rule.label) if rule and rule.label else {"de": column, "en": column},
                                "category": rule.category if rule else None,
                                "category_title": dict(category.title) if category else None,
                                "type": disclosed_kind(rule, kind) if rule else kind}
        if rule and rule.description:
            info["description"] = dict(rule.description)
        if rule and rule.disclose == "mask":
            info["masked"] = {"how": rule.mask, "why": dict(rule.reason or {})}
        entry["columns"][column] = info
    return entry


# Per kind, what its values are in the JSON (json_schema). A number column may hold NaN and
# infinities (as text: JSON has no such numbers); a decimal is exact text, as the store keeps it.
_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "string", "null"], "pattern": "^(NaN|nan|-?Infinity|-?inf)$"},
    "decimal": {"type": ["string", "null"],
                "pattern": "^(-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|-?Infinity)$"},
    "boolean": {"type": ["boolean", "null"]},
    "date-time": {"type": ["string", "null"], "format": "date-time"},
    "date": {"type": ["string", "null"], "format": "date"},
    "json": {"type": ["object", "array", "null"]},
}


def json_schema(entry: dict[str, Any], title: str) -> dict[str, Any]:
    """A JSON Schema (2020-12) of one table's JSON file, from its data dictionary entry: the column
    names, then rows whose n-th value is the n-th column's."""
    columns = list(entry["columns"])
    cells = []
    for column, info in entry["columns"].items():
        meaning = (info.get("description") or info.get("category_title") or {}).get("en")
        label = (info.get("label") or {}).get("en")
        text = ": ".join(t for t in (label if label != column else None, meaning) if t)
        cells.append({"title": column, **_TYPES.get(info.get("type", "string"), _TYPES["string"]),
                      **({"description": text} if text else {})})
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
