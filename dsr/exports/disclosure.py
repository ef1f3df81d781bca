"""Art. 15(4) and secrets: apply each field's disclosure rule from the data map on the way out.

Connectors emit what the store holds; this sink wrapper drops omitted fields (a password hash is
"stored, not disclosed") and masks third parties' data (another party's number without its last
three digits), counting every redaction by field, never recording the value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO

from dsr.datamap.model import Case, FieldRule, Store
from dsr.exports.aging import Limit, Tally
from dsr.stores.base import ColumnKind, TableSink, TableWriter

_DIGIT = re.compile(r"\d")


def _last3(value: str) -> str:
    # Hide the last three digits, keep the rest (the format of an itemised bill, § 11 TDDDG).
    positions = [m.start() for m in _DIGIT.finditer(value)][-3:]
    chars = list(value)
    for i in positions:
        chars[i] = "x"
    return "".join(chars)


def _keep_last4(value: str) -> str:
    visible = 4 if len(value) > 4 else 0
    return "*" * (len(value) - visible) + value[len(value) - visible:]


MASKS: dict[str, Callable[[str], str]] = {
    "last3": _last3,
    "keep_last4": _keep_last4,
    "withheld": lambda _value: "withheld",
    "redact": lambda _value: "[redacted]",
}
# What a name cut out of a text leaves behind: the editorial mark for an omission, in any language.
NAME_REMOVED = "[…]"


def names_mask(names: Iterable[str]) -> Callable[[str], str]:
    """Cuts each of ``names`` out of a text wherever it stands as whole words, in any letter case,
    with a genitive s ("Jan Kowalskis Notiz") (the COPY path does the same in SQL:
    ``dsr.stores.copy_sql``). Longer names first, so "Jan Kowalski-Berg" is not cut as
    "Jan Kowalski" and a leftover."""
    words = sorted({n.strip() for n in names if n and n.strip()}, key=lambda n: (-len(n), n))
    if not words:
        return lambda value: value
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")s?(?!\w)", re.IGNORECASE)
    return lambda value: pattern.sub(NAME_REMOVED, value)


def as_text(value: Any) -> str | None:
    """How a condition sees a value (the same on the COPY path): booleans as true/false."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def disclosed_kind(rule: FieldRule, kind: ColumnKind) -> ColumnKind:
    """A masked value is text ("+4915164734xxx", "withheld"), whatever the store keeps."""
    if rule.disclose == "mask" or any(c.disclose == "mask" for c in rule.cases):
        return "string"
    return kind


def _apply(disclose: str, mask: str | None, value: Any) -> Any:
    if disclose == "omit":
        return None
    if disclose == "mask" and mask and value not in (None, ""):
        return MASKS[mask](str(value))
    return value


DEFAULT = "default"  # the outcome of a field's own rule, where none of its cases matched


def outcome_key(index: int | None) -> str:
    """How an outcome is counted: a case by its position in the field's ``cases``, else ``default``."""
    return DEFAULT if index is None else str(index)


def _by_case(rule: FieldRule, position: int, index: dict[str, int], options: dict[str, Any],
             counts: Counter[str]) -> Callable[[Any], Any]:
    """Per record: the first case whose condition holds decides, else the field's own rule. Each
    record is counted under the outcome that decided it, so the answer names only cases that applied."""
    checks: list[tuple[int | None, set[str | None] | None, Case, str]] = []
    for n, case in enumerate(rule.cases):
        if not case.applies(options):
            continue
        if case.column is None:
            checks.append((None, None, case, outcome_key(n)))
            continue
        wanted: set[str | None] = {as_text(case.equals)} if case.values is None else set(case.values)
        checks.append((index[case.column], wanted, case, outcome_key(n)))

    def value(row: Any) -> Any:
        for column, wanted, case, key in checks:
            if column is None or as_text(row[column]) in (wanted or set()):
                counts[key] += 1
                return _apply(case.disclose, case.mask, row[position])
        counts[DEFAULT] += 1
        return _apply(rule.disclose, rule.mask, row[position])

    return value


class _DisclosingWriter:
    def __init__(self, inner: TableWriter, keep: list[int], masks: dict[int, Callable[[str], str]],
                 counts: dict[str, Counter[str]], names: list[str], by_case: dict[int, Callable[[Any], Any]],
                 aging: tuple[int, Tally] | None = None) -> None:
        self.inner, self.keep, self.masks, self.by_case, self.aging = inner, keep, masks, by_case, aging
        # Fields redacted by one rule for every record (by_case fields count themselves, per record).
        self.plain = [counts[names[i]] for i in masks] + [counts[n] for i, n in enumerate(names)
                                                          if i not in keep and n in counts]

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        masks, keep, by_case = self.masks, self.keep, self.by_case
        self.inner.write([
            [by_case[i](row) if i in by_case else
             masks[i](str(row[i])) if i in masks and row[i] not in (None, "") else row[i] for i in keep]
            for row in rows
        ])
        for counter in self.plain:
            counter[DEFAULT] += len(rows)
        if self.aging is not None:
            column, tally = self.aging
            for row in rows:
                tally.see(row[column])

    def close(self) -> None:
        self.inner.close()


class _Discarding:
    """A table entirely outside the request's scope: nothing is written."""

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class _CountingStream:
    def __init__(self, inner: Any, on_close: Callable[[int], None]) -> None:
        self.inner, self.on_close = inner, on_close

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(data)

    def close(self, rows: int = 0) -> None:
        self.inner.close(rows)
        self.on_close(rows)


class DisclosingSink:
    """Wraps a sink; ``summary()`` tells, per table and field, the rule and how many records it applied to.

    Counts are of records whose value was masked or withheld, never the values themselves.
    """

    def __init__(self, inner: TableSink, store: Store, in_scope: Callable[[FieldRule], bool] | None = None,
                 options: dict[str, Any] | None = None, limits: Mapping[str, Limit] | None = None) -> None:
        """``in_scope``: which fields the answer covers (portability, Art. 20: only portable categories);
        fields out of scope are left out, and ``excluded()`` names them. ``limits``: per table, how old
        a record may be (``dsr.exports.aging``); ``past_retention()`` tells what was older."""
        self.inner, self.store, self.in_scope = inner, store, in_scope
        self.limits = dict(limits or {})
        self.aged: dict[str, Tally] = {}
        self.names: Callable[[str], Sequence[str]] | None = None
        self.options = options or {}  # what the subject chose in the request (e.g. full_numbers)
        self.redactions: dict[str, dict[str, dict[str, Any]]] = {}
        self.out_of_scope: dict[str, list[str]] = {}

    @property
    def accepts_raw_csv(self) -> bool:
        return bool(getattr(self.inner, "accepts_raw_csv", False))

    def plan(self, name: str, columns: Sequence[str]) -> list[FieldRule]:
        """The rule of each column to write, in order; omitted columns are left out."""
        table = self.store.tables.get(name)
        rules = [table.rule(c) if table else FieldRule(c, "") for c in columns]
        if self.in_scope is not None:
            excluded = [r.name for r in rules if not self.in_scope(r)]
            if excluded:
                self.out_of_scope[name] = excluded
            rules = [r for r in rules if self.in_scope(r)]
        return [r for r in rules if r.disclose != "omit"]

    def _register(self, name: str, columns: Sequence[str]) -> dict[str, Counter[str]]:
        """Per redacted field (masked, left out, or with cases), a counter of records per outcome."""
        table = self.store.tables.get(name)
        counts: dict[str, Counter[str]] = {}
        if table is not None:
            rules = [r for r in (table.rule(c) for c in columns) if r.disclose != "export" or r.cases]
            counts = {r.name: Counter() for r in rules}
            if rules:
                self.redactions[name] = {r.name: {"disclose": r.disclose, "mask": r.mask, "counter": counts[r.name]}
                                         for r in rules}
        return counts

    def _kinds(self, name: str, columns: Sequence[str], kinds: Sequence[ColumnKind] | None,
               kept: Sequence[str]) -> list[ColumnKind] | None:
        """The kinds of the ``kept`` columns as written (masked ones are text)."""
        if kinds is None or len(kinds) != len(columns):
            return None
        table, of = self.store.tables.get(name), dict(zip(columns, kinds, strict=True))
        return [disclosed_kind(table.rule(c), of[c]) if table else of[c] for c in kept]

    def open_table(self, name: str, columns: Sequence[str],
                   kinds: Sequence[ColumnKind] | None = None) -> TableWriter:
        if name not in self.store.tables:
            return self.inner.open_table(name, columns, kinds)
        kept = {r.name: r for r in self.plan(name, columns)}
        if not kept:
            return _Discarding()
        counts = self._register(name, columns)
        keep = [i for i, c in enumerate(columns) if c in kept]
        index = {c: i for i, c in enumerate(columns)}
        by_case = {i: _by_case(kept[c], i, index, self.options, counts[c]) for i, c in enumerate(columns)
                   if c in kept and kept[c].cases}
        masks = {i: self._mask(kept[c]) for i, c in enumerate(columns)
                 if c in kept and kept[c].disclose == "mask" and i not in by_case}
        limit = self.limits.get(name)
        aging = (columns.index(limit.column), self.aged.setdefault(name, Tally(limit))) \
            if limit is not None and limit.column in columns else None
        names = [columns[i] for i in keep]
        inner = self.inner.open_table(name, names, self._kinds(name, columns, kinds, names))
        return _DisclosingWriter(inner, keep, masks, counts, list(columns), by_case, aging)

    def limit(self, name: str) -> Limit | None:
        """How old a record of ``name`` may be, for stores that count it themselves (``count_aged``)."""
        return self.limits.get(name)

    def count_aged(self, name: str, records: int, oldest: datetime | None) -> None:
        self.aged.setdefault(name, Tally(self.limits[name])).add(records, oldest)

    def past_retention(self) -> dict[str, dict[str, Any]]:
        """Per table that held records older than its retention allows: how many, and the oldest."""
        return {name: tally.finding() for name, tally in self.aged.items() if tally.records}

    def use_names(self, lookup: Callable[[str], Sequence[str]]) -> None:
        """The store's lookup of ``table.column`` for fields with ``mask: names`` (``Connector.names``):
        a connector that can look names up hands it over when it starts collecting."""
        self.names = lookup

    def _mask(self, rule: FieldRule) -> Callable[[str], str]:
        if rule.mask == "names":
            if self.names is None or rule.names_from is None:
                # Never written unmasked: without the names the field cannot be disclosed at all.
                raise RuntimeError(f"{self.store.name}: the field {rule.name} cuts out the names in "
                                   f"{rule.names_from}, which this store cannot look up")
            return names_mask(self.names(rule.names_from))
        return MASKS[rule.mask or ""]

    def open_csv(self, name: str, columns: Sequence[str], kinds: Sequence[ColumnKind] | None = None) -> Any:
        """For stores that format CSV themselves (PostgreSQL COPY) after applying ``plan()`` in their query.
        A field with cases is counted per outcome by the store (``count_outcomes``), the others here."""
        written = [r.name for r in self.plan(name, columns)]
        counts = self._register(name, columns)
        table = self.store.tables.get(name)
        cased = {f for f in counts if table is not None and table.rule(f).cases and table.rule(f).disclose != "omit"}
        plain = [c for f, c in counts.items() if f not in cased]

        def record(rows: int) -> None:
            for counter in plain:
                counter[DEFAULT] += rows

        stream = self.inner.open_csv(name, written, self._kinds(name, columns, kinds, written))  # type: ignore[attr-defined]
        return _CountingStream(stream, record)

    def count_outcomes(self, name: str, field: str, outcomes: Mapping[str, int]) -> None:
        """How many records each outcome of a field's cases decided (``outcome_key``), as the store
        counted them where it applied the cases itself."""
        self.redactions[name][field]["counter"].update({k: n for k, n in outcomes.items() if n})

    def add_file(self, table: str, name: str, content: BinaryIO) -> None:
        spec = self.store.tables.get(table)
        if self.in_scope is not None and spec is not None and not self.in_scope(FieldRule("file", spec.category)):
            self.out_of_scope.setdefault(table, []).append("files")
            return
        self.inner.add_file(table, name, content)

    def excluded(self) -> dict[str, list[str]]:
        """Per table, the fields (and "files") left out as outside the request's scope."""
        return {t: sorted(set(cols)) for t, cols in self.out_of_scope.items()}

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per table and field: the field's own rule, ``records`` redacted (masked or left out) and
        ``outcomes``, the records per outcome that applied (``default`` or a case's position)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for table, fields in self.redactions.items():
            spec = self.store.tables.get(table)
            out[table] = {}
            for field, v in fields.items():
                rule = spec.rule(field) if spec else FieldRule(field, "", v["disclose"], v["mask"])
                outcomes = {k: n for k, n in sorted(v["counter"].items()) if n}
                redacted = sum(n for k, n in outcomes.items() if _outcome(rule, k)[0] != "export")
                out[table][field] = {"disclose": v["disclose"], "mask": v["mask"], "records": redacted,
                                     "outcomes": outcomes}
        return out


def _outcome(rule: FieldRule, key: str) -> tuple[str, str | None]:
    """How an outcome disclosed the field: (disclose, mask)."""
    if key == DEFAULT:
        return rule.disclose, rule.mask
    case = rule.cases[int(key)]
    return case.disclose, case.mask
