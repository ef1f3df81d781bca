"""Load and check a data map file; the result is a plain, immutable object the domain reads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from dsr.datamap.schema import DataMapSchema

_ENV = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


class DataMapError(ValueError):
    """The data map is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class SqlTable:
    name: str
    key: str
    references: Mapping[str, tuple[str, str]]  # column -> (table, column)
    category: str | None


@dataclass(frozen=True)
class Store:
    name: str
    connector: str
    url: str
    identities: Mapping[str, tuple[str, str]]  # identity type -> (table, column)
    tables: Mapping[str, SqlTable]
    description: str | None = None


@dataclass(frozen=True)
class DataMap:
    version: str
    date: date
    controller: Mapping[str, Any]
    stores: Mapping[str, Store]
    source: Path | None = None


def load(path: Path, *, instance_dir: Path, environ: Mapping[str, str] | None = None) -> DataMap:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataMapError(f"{path}: cannot read the data map: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DataMapError(f"{path}: not valid YAML: {exc}") from None
    return parse(raw, source=path, instance_dir=instance_dir, environ=environ)


def parse(raw: Any, *, source: Path | None, instance_dir: Path,
          environ: Mapping[str, str] | None = None) -> DataMap:
    where = str(source) if source else "<data map>"
    try:
        data = DataMapSchema().load(raw if isinstance(raw, dict) else {})
    except ValidationError as exc:
        raise DataMapError(f"{where}: {_flatten(exc.messages)}") from None
    env = os.environ if environ is None else environ
    stores = {
        name: _store(name, spec, where, instance_dir, env) for name, spec in data["stores"].items()
    }
    return DataMap(str(data["version"]), data["date"], data["controller"], stores, source)


def _store(name: str, spec: dict[str, Any], where: str, instance_dir: Path, env: Mapping[str, str]) -> Store:
    tables: dict[str, SqlTable] = {}
    for tname, t in spec["tables"].items():
        refs: dict[str, tuple[str, str]] = {}
        for column, target in t["references"].items():
            other, _, other_col = target.partition(".")
            if other not in spec["tables"] or not other_col:
                raise DataMapError(
                    f"{where}: stores.{name}.tables.{tname}.references.{column}: "
                    f"{target!r} must name a table of this store as table.column"
                )
            refs[column] = (other, other_col)
        tables[tname] = SqlTable(tname, t["key"], refs, t["category"])
    identities: dict[str, tuple[str, str]] = {}
    for kind, ident in spec["identities"].items():
        if ident["table"] not in tables:
            raise DataMapError(f"{where}: stores.{name}.identities.{kind}: unknown table {ident['table']!r}")
        identities[kind] = (ident["table"], ident["column"])
    _check_reachable(name, tables, {t for t, _ in identities.values()}, where)
    url = _interpolate(spec["connection"]["url"], env, instance_dir, f"{where}: stores.{name}.connection.url")
    return Store(name, spec["connector"], url, identities, tables, spec["description"])


def _check_reachable(store: str, tables: Mapping[str, SqlTable], roots: set[str], where: str) -> None:
    """Every table must lead to an identity table through its references, without cycles."""
    def walk(name: str, seen: tuple[str, ...]) -> None:
        if name in seen:
            raise DataMapError(f"{where}: stores.{store}.tables: references form a cycle: "
                               + " -> ".join((*seen, name)))
        if name in roots:
            return
        refs = tables[name].references
        if not refs:
            raise DataMapError(f"{where}: stores.{store}.tables.{name}: no reference leads to an identity table, "
                               "so the subject's rows in it cannot be found")
        for other, _ in refs.values():
            walk(other, (*seen, name))

    for name in tables:
        walk(name, ())


def _interpolate(value: str, env: Mapping[str, str], instance_dir: Path, where: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if env.get(name):
            return env[name]
        if default is None:
            raise DataMapError(f"{where}: environment variable {name} is not set")
        return default

    return _ENV.sub(sub, value.replace("{instance_dir}", str(instance_dir)))


def _flatten(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        return "; ".join(_flatten(v, f"{prefix}{k}." if prefix or k != "_schema" else "") for k, v in messages.items())
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return f"{prefix.rstrip('.')}: {' '.join(messages)}"
    return f"{prefix.rstrip('.')}: {messages}"
