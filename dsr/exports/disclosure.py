"""Art. 15(4) and secrets: apply each field's disclosure rule from the data map on the way out.

Connectors emit what the store holds; this sink wrapper drops omitted fields (a password hash is
"stored, not disclosed") and masks third parties' data (another party's number without its last
three digits), counting every redaction by field, never recording the value.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from dsr.datamap.model import Store
from dsr.stores.base import TableSink, TableWriter

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


class _DisclosingWriter:
    def __init__(self, inner: TableWriter, keep: list[int], masks: dict[int, Callable[[str], str]],
                 counts: Counter[str], names: list[str]) -> None:
        self.inner, self.keep, self.masks, self.counts, self.names = inner, keep, masks, counts, names

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        out = []
        for row in rows:
            values = []
            for i in self.keep:
                value = row[i]
                if i in self.masks and value not in (None, ""):
                    value = self.masks[i](str(value))
                    self.counts[self.names[i]] += 1
                values.append(value)
            out.append(values)
        for i in set(range(len(self.names))) - set(self.keep):
            self.counts[self.names[i]] += sum(1 for row in rows if row[i] not in (None, ""))
        self.inner.write(out)

    def close(self) -> None:
        self.inner.close()


class DisclosingSink:
    """Wraps a sink; ``redactions`` holds, per table and field, how many values were masked or omitted."""

    def __init__(self, inner: TableSink, store: Store) -> None:
        self.inner, self.store = inner, store
        self.redactions: dict[str, dict[str, dict[str, Any]]] = {}

    def open_table(self, name: str, columns: Sequence[str]) -> TableWriter:
        table = self.store.tables.get(name)
        if table is None:
            return self.inner.open_table(name, columns)
        rules = [table.rule(c) for c in columns]
        keep = [i for i, r in enumerate(rules) if r.disclose != "omit"]
        masks = {i: MASKS[r.mask] for i, r in enumerate(rules) if r.disclose == "mask" and r.mask}
        counts: Counter[str] = Counter()
        redacted = {r.name: {"disclose": r.disclose, "mask": r.mask, "counter": counts}
                    for r in rules if r.disclose != "export"}
        if redacted:
            self.redactions[name] = redacted
        return _DisclosingWriter(self.inner.open_table(name, [columns[i] for i in keep]), keep, masks, counts,
                                 list(columns))

    def add_file(self, table: str, name: str, content: BinaryIO) -> None:
        self.inner.add_file(table, name, content)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per table and field: the rule and how many values it changed (never the values)."""
        return {
            table: {f: {"disclose": v["disclose"], "mask": v["mask"], "count": v["counter"][f]}
                    for f, v in fields.items()}
            for table, fields in self.redactions.items()
        }
