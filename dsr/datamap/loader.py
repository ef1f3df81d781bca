"""Load a data map file, check it whole, and name the file, line and field of every problem."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from dsr.datamap.model import (
    DATED_ANCHORS,
    VARIABLE,
    Authority,
    Case,
    Category,
    Contact,
    Contract,
    Controller,
    DataMap,
    Erasure,
    FieldRule,
    Notify,
    Purpose,
    Recipient,
    RetentionRule,
    Store,
    Table,
    Transfer,
    expand,
)
from dsr.datamap.schema import DataMapSchema

# Checks a connector's own settings of one store (and what it names of other stores); returns
# problems as (path, message).
StoreValidator = Callable[[Store, Mapping[str, Store]], list[tuple[str, str]]]


class DataMapError(ValueError):
    """The data map is invalid. ``problems`` lists every one as ``file:line: path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load(path: Path, *, instance_dir: Path, environ: Mapping[str, str] | None = None,
         validate_store: StoreValidator | None = None) -> DataMap:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataMapError([f"{path}: cannot read the data map: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
        lines = dict(_lines(root)) if root is not None else {}
    except yaml.YAMLError as exc:
        raise DataMapError([f"{path}: not valid YAML: {exc}"]) from None
    return parse(raw, source=path, instance_dir=instance_dir, environ=environ, lines=lines,
                 validate_store=validate_store)


def parse(raw: Any, *, source: Path | None, instance_dir: Path, environ: Mapping[str, str] | None = None,
          lines: Mapping[str, int] | None = None, validate_store: StoreValidator | None = None) -> DataMap:
    lines = lines or {}

    def where(path: str) -> str:
        probe = DataMap("", None, None, {}, {}, {}, {}, {}, {}, source=source, lines=lines)  # type: ignore[arg-type]
        return probe.where(path)

    try:
        data = DataMapSchema().load(raw if isinstance(raw, dict) else {})
    except ValidationError as exc:
        raise DataMapError([f"{where(path)}: {message}" for path, message in _flatten(exc.messages)]) from None
    inline = [f"{where(path)}: {message}" for path, message in [*_inline_secrets(data), *_bad_variables(data)]]
    if inline:
        raise DataMapError(inline)
    env = os.environ if environ is None else environ
    datamap = _build(data, source, lines, instance_dir, environ)
    problems = [f"{datamap.where(path)}: {message}" for path, message in _cross_check(datamap)]
    if validate_store is not None:
        for store in datamap.stores.values():
            # Checked with the values this process can read (a variable it lacks stays ${NAME}): the
            # values themselves are read again where they are used, never kept in the map.
            problems += [f"{datamap.where(path)}: {message}"
                         for path, message in validate_store(_as_far_as_known(store, env), datamap.stores)]
    if problems:
        raise DataMapError(problems)
    return datamap


def _build(data: dict[str, Any], source: Path | None, lines: Mapping[str, int], instance_dir: Path,
           environ: Mapping[str, str] | None) -> DataMap:
    c = data["controller"]
    controller = Controller(**{k: v for k, v in c.items() if k != "dpo"}, dpo=Contact(**c["dpo"]))
    stores = {}
    for name, s in data["stores"].items():
        tables = {}
        for tname, t in s["tables"].items():
            category = t.pop("category") or s["category"] or ""
            rules = {col: _rule(col, f, category, data["lists"]) for col, f in t.pop("fields_").items()}
            erasure = t.pop("erasure")
            description, label, collected_at = t.pop("description"), t.pop("label"), t.pop("collected_at")
            tables[tname] = Table(tname, category, rules, dict(t), _erasure(erasure), description, label,
                                  collected_at)
        # {instance_dir} now (it is no secret); ${NAME} stays as written until a connector is built.
        connection = {k: v.replace("{instance_dir}", str(instance_dir)) if isinstance(v, str) else v
                      for k, v in s["connection"].items()}
        needs = {k: names for k, v in connection.items() if isinstance(v, str)
                 and (names := tuple(m["name"] for m in VARIABLE.finditer(v) if m["default"] is None))}
        stores[name] = Store(name, s["connector"], s["description"], connection, s["identities"], tables,
                             s["recipient"], s["deadline_days"], label=s["label"], variables=needs,
                             environ=environ)
    return DataMap(
        version=str(data["version"]),
        date=data["date"],
        controller=controller,
        authorities={k: Authority(**v) for k, v in data["authorities"].items()},
        purposes={k: Purpose(k, **v) for k, v in data["purposes"].items()},
        retention={k: RetentionRule(k, v["anchor"], v["duration"], v["description"], tuple(v["holds"]),
                                    v["reference"]) for k, v in data["retention"].items()},
        recipients={k: Recipient(k, v["name"], v["role"], v["country"], Notify(**v["notify"]), v["address"],
                                 v["description"]) for k, v in data["recipients"].items()},
        categories={k: Category(k, v["title"], tuple(v["purposes"]), v["source"], v["retention"],
                                tuple(v["recipients"]), tuple(Transfer(**t) for t in v["transfers"]), v["portable"],
                                v["erasure"], v["authority"], v["statutory_retention"], v["automated_decisions"],
                                v["stored"])
                    for k, v in data["categories"].items()},
        stores=stores,
        notice=data["notice"],
        contract=_contract(data["contract"]),
        source=source,
        lines=lines,
    )


def _rule(column: str, spec: dict[str, Any], category: str, lists: dict[str, Any]) -> FieldRule:
    cases = []
    for case in spec.pop("cases"):
        when = case["when"]
        listed = lists.get(when["in_list"], {}).get("values") if when.get("in_list") else None
        cases.append(Case(case["disclose"], case["mask"], case["reason"], when["column"], when["equals"],
                          tuple(listed) if listed is not None else None, when["request"]))
    return FieldRule(column, spec.pop("category") or category, cases=tuple(cases), **spec)


def _contract(c: dict[str, Any] | None) -> Contract | None:
    return None if c is None else Contract(c["store"], c["table"], c["column"], tuple(c["ended"]))


def _erasure(e: dict[str, Any] | None) -> Erasure | None:
    return None if e is None else Erasure(e["method"], tuple(e["fields_"]), e["reason"], e["until"],
                                      dict(e["replacements"]), e["dated_by"])


def _cross_check(m: DataMap) -> Iterator[tuple[str, str]]:
    """References between the parts: every name used must be defined."""
    for cid, cat in m.categories.items():
        base = f"categories.{cid}"
        for p in cat.purposes:
            if p not in m.purposes:
                yield f"{base}.purposes", f"unknown purpose {p!r}"
        if cat.retention not in m.retention:
            yield f"{base}.retention", f"unknown retention rule {cat.retention!r}"
        for r in cat.recipients:
            if r not in m.recipients:
                yield f"{base}.recipients", f"unknown recipient {r!r}"
        for t in cat.transfers:
            if t.recipient not in m.recipients:
                yield f"{base}.transfers", f"unknown recipient {t.recipient!r}"
        if cat.authority not in m.authorities:
            yield f"{base}.authority", f"unknown supervisory authority {cat.authority!r}"
    if m.contract is not None:
        c = m.contract
        if c.store not in m.stores:
            yield "contract.store", f"unknown store {c.store!r}"
        elif c.table not in m.stores[c.store].tables:
            yield "contract.table", f"store {c.store} has no table {c.table!r}"
        elif c.column not in m.stores[c.store].tables[c.table].fields:
            yield "contract.column", f"table {c.store}.{c.table} lists no field {c.column!r}"
    for rid, rec in m.recipients.items():
        if rec.notify.via == "store" and rec.notify.store not in m.stores:
            yield f"recipients.{rid}.notify.store", f"unknown store {rec.notify.store!r}"
    for sname, store in m.stores.items():
        base = f"stores.{sname}"
        if store.recipient and store.recipient not in m.recipients:
            yield f"{base}.recipient", f"unknown recipient {store.recipient!r}"
        for tname, table in store.tables.items():
            tbase = f"{base}.tables.{tname}"
            if not table.category:
                yield f"{tbase}.category", "has no category (set one on the table or the store)"
            elif table.category not in m.categories:
                yield f"{tbase}.category", f"unknown category {table.category!r}"
            elif not m.categories[table.category].stored:
                yield f"{tbase}.category", f"category {table.category!r} is marked stored: false (nothing kept)"
            for col, rule in table.fields.items():
                if rule.category not in m.categories:
                    yield f"{tbase}.fields.{col}.category", f"unknown category {rule.category!r}"
                elif not m.categories[rule.category].stored:
                    yield (f"{tbase}.fields.{col}.category",
                           f"category {rule.category!r} is marked stored: false (nothing kept)")
                for i, case in enumerate(rule.cases):
                    if case.column is not None and case.equals is None and case.values is None:
                        yield f"{tbase}.fields.{col}.cases.{i}.when.in_list", "unknown list (see lists:)"
                if rule.names_from and rule.names_from.split(".")[0] not in store.tables:
                    yield (f"{tbase}.fields.{col}.names_from",
                           f"unknown table {rule.names_from.split('.')[0]!r} (it must be a table of this store)")
            if table.erasure and table.erasure.until and table.erasure.until not in m.retention:
                yield f"{tbase}.erasure.until", f"unknown retention rule {table.erasure.until!r}"
            if table.erasure and table.erasure.dated_by:
                yield from _dated_by(m, tbase, table)


def _dated_by(m: DataMap, tbase: str, table: Table) -> Iterator[tuple[str, str]]:
    """``erasure: dated_by`` names one of the table's fields, under a rule a record's date can start."""
    assert table.erasure is not None and table.erasure.dated_by
    column, rule = table.erasure.dated_by, m.retention.get(table.erasure.until or "")
    if column not in table.fields:
        yield f"{tbase}.erasure.dated_by", f"table {table.name} lists no field {column!r} (dated_by must be one of " \
                                           "its fields)"
    elif rule is not None and rule.anchor not in DATED_ANCHORS:
        yield (f"{tbase}.erasure.dated_by",
               f"retention rule {rule.id!r} counts from {rule.anchor or 'no anchor'}, which no date in a record "
               f"tells; dated_by is for rules anchored at {', '.join(sorted(DATED_ANCHORS))}")


_PASSWORD_IN_URL = re.compile(r"://[^/@:]*:(?P<password>[^@/]+)@")
_SECRET_KEYS = re.compile(r"(password|secret|token|api_key)$", re.IGNORECASE)


def _inline_secrets(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Secrets come from the environment, never from the file (it is versioned and shown around)."""
    for name, store in data["stores"].items():
        for key, value in store["connection"].items():
            path = f"stores.{name}.connection.{key}"
            if not isinstance(value, str):
                continue
            match = _PASSWORD_IN_URL.search(value)
            if match and not match["password"].startswith("${"):
                yield path, "holds a password: write ${VARIABLE} and set it in the environment"
            elif _SECRET_KEYS.search(key) and not value.startswith("${"):
                yield path, "holds a secret: write ${VARIABLE} or name the variable (secret_env)"


def _bad_variables(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A ``${`` that is no variable reference would otherwise reach the store as text."""
    for name, store in data["stores"].items():
        for key, value in store["connection"].items():
            if isinstance(value, str) and "${" in VARIABLE.sub("", value.replace("{instance_dir}", "")):
                yield (f"stores.{name}.connection.{key}", "holds a ${ that is not a variable: write ${NAME} or "
                       "${NAME:-default}, NAME in upper-case letters, digits and _")


def _as_far_as_known(store: Store, env: Mapping[str, str]) -> Store:
    """The store as its connector's schema checks it: the variables this process has, read."""
    connection = {k: expand(v, env, []) if isinstance(v, str) else v for k, v in store.connection.items()}
    return replace(store, connection=connection)


def _lines(node: yaml.Node, path: str = "") -> Iterator[tuple[str, int]]:
    """Dotted path of every mapping key -> its 1-based line in the file."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            yield child, key.start_mark.line + 1
            yield from _lines(value, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}.{i}"
            yield child, item.start_mark.line + 1
            yield from _lines(item, child)


def _flatten(messages: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema" or (key == "value" and isinstance(value, dict)):
                yield from _flatten(value, prefix)
            elif key == "key":
                yield from ((p, f"key: {m}") for p, m in _flatten(value, prefix))
            else:
                yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        yield prefix or "<root>", " ".join(messages)
    else:
        yield prefix or "<root>", str(messages)
