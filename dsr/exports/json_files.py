"""The same data as JSON (Art. 20: structured, commonly used, machine-readable), and a data
dictionary that documents every column: its category, meaning and how it was disclosed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsr.datamap.model import DataMap, Store
from dsr.exports.csv_files import unguarded

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"


def csv_to_json(source: Path, target: Path) -> int:
    """Stream ``<table>.csv`` into ``<table>.json``: an array of objects, one per row; empty cells are null.

    Values stay text, exactly as in the CSV (times ISO 8601 UTC); the data dictionary says what each is.
    """
    rows = 0
    with source.open(encoding="utf-8-sig", newline="") as f, target.open("w", encoding="utf-8") as out:
        reader = csv.reader(f)
        header = next(reader, None)
        out.write("[")
        if header is not None:
            for row in reader:
                # JSON is no spreadsheet: values are given as stored, without the CSV's formula guard.
                record = {k: (unguarded(v) if v != "" else None) for k, v in zip(header, row, strict=False)}
                out.write(("\n" if rows == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
                rows += 1
        out.write("\n]\n")
    return rows


def add_json(folder: Path) -> list[Path]:
    """A ``.json`` twin for every ``.csv`` in a store's output folder."""
    written = []
    for source in sorted(folder.glob("*.csv")):
        target = source.with_suffix(".json")
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
    """A JSON Schema (2020-12) of one table's JSON file, from its data dictionary entry."""
    properties = {}
    for column, info in entry["columns"].items():
        text = (info.get("description") or info.get("category_title") or {}).get("en")
        properties[column] = {"type": ["string", "null"], **({"description": text} if text else {})}
    return {"$schema": JSON_SCHEMA, "title": title, "type": "array",
            "items": {"type": "object", "properties": properties, "additionalProperties": False}}


def schemas(dictionary_doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, entry in dictionary_doc["files"].items():
        yield path.removesuffix(".csv") + ".schema.json", json_schema(entry, path.removesuffix(".csv"))
