"""The record of processing (Art. 30 GDPR) as rows: one per data category, built from the data map."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from dsr.datamap.model import DataMap

COLUMNS = ("category", "title", "purposes", "legal_basis", "retention", "recipients", "transfers", "portable",
           "erasure", "statutory_retention", "authority", "held_in")


def rows(m: DataMap, locale: str = "en") -> Iterator[dict[str, str]]:
    held: dict[str, set[str]] = {}
    for store in m.stores.values():
        for table in store.tables.values():
            for category in {table.category, *(rule.category for rule in table.fields.values())}:
                held.setdefault(category, set()).add(f"{store.name}.{table.name}")
    for cid, cat in m.categories.items():
        yield {
            "category": cid,
            "title": cat.title[locale],
            "purposes": "; ".join(m.purposes[p].description[locale] for p in cat.purposes),
            "legal_basis": "; ".join(dict.fromkeys(
                part.strip() for p in cat.purposes for part in m.purposes[p].legal_basis.split(";"))),
            "retention": m.retention[cat.retention].description[locale],
            "recipients": "; ".join(m.recipients[r].name for r in cat.recipients) or "-",
            "transfers": "; ".join(f"{t.country}: {t.safeguard[locale]}" for t in cat.transfers) or "-",
            "portable": "yes" if cat.portable else "no",
            "erasure": cat.erasure,
            "statutory_retention": cat.statutory_retention or "-",
            "authority": m.authorities[cat.authority].name,
            "held_in": (", ".join(sorted(held.get(cid, set()))) or "-") if cat.stored else "not stored here",
        }


def render(m: DataMap, fmt: str = "table", locale: str = "en") -> str:
    data = list(rows(m, locale))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
        return out.getvalue()
    if fmt == "md":
        def esc(value: str) -> str:
            return value.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(esc(r[c]) for c in COLUMNS) + " |" for r in data]
        return "\n".join(lines) + "\n"
    blocks = [f"Record of processing: {m.controller.name}, data map {m.version} ({m.date.isoformat()})", ""]
    width = max(len(c) for c in COLUMNS)
    for r in data:
        blocks += [f"{c.ljust(width)}  {r[c]}" for c in COLUMNS] + [""]
    return "\n".join(blocks)
