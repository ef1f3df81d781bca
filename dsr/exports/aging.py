"""Records kept longer than the data map says: a finding for the DPO office, found while collecting.

A retention rule anchored at ``collection`` (web logs 7 days, analytics 30 days) says how old a
record may be. A table that names the column holding when each record was collected
(``collected_at``) is checked on the way out: how many of the subject's records are older than the
rule allows, and the oldest. Real stores do hold data past its retention (a deletion job that
stopped, a forgotten export); the answer would then state a period its own data contradicts, so the
office learns of it before the answer goes out. Counts and dates only, never values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dsr.datamap.model import Category, RetentionRule, Store
from dsr.domain.deadlines import add_months

_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def before(moment: datetime, duration: str) -> datetime:
    """``moment`` less an ISO 8601 duration (``P30D``, ``P6M``, ``P8Y``); months and years by the calendar."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not an ISO 8601 duration: {duration!r}")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    day = add_months(moment.date(), -(years * 12 + months)) if years or months else moment.date()
    shifted = datetime.combine(day, moment.timetz())
    return shifted - timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class Limit:
    """The records of one table must not be older than ``cutoff`` (by ``column``) under ``rule``."""

    column: str
    cutoff: datetime
    rule: str
    category: str


def limits(store: Store, categories: Mapping[str, Category], retention: Mapping[str, RetentionRule],
           now: datetime) -> dict[str, Limit]:
    """Per table of ``store`` that names ``collected_at`` and whose category's rule runs from collection."""
    out = {}
    for name, table in store.tables.items():
        category = categories.get(table.category)
        rule = retention.get(category.retention) if category else None
        if table.collected_at and category and rule and rule.anchor == "collection" and rule.duration:
            out[name] = Limit(table.collected_at, before(now, rule.duration), rule.id, category.id)
    return out


def moment(value: Any) -> datetime | None:
    """A stored time as an aware datetime (naive ones are UTC); None for what is not a time."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass
class Tally:
    """What one table held past its limit."""

    limit: Limit
    records: int = 0
    oldest: datetime | None = field(default=None)

    def add(self, records: int, oldest: datetime | None) -> None:
        self.records += records
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest

    def see(self, value: Any) -> None:
        at = moment(value)
        if at is not None and at < self.limit.cutoff:
            self.add(1, at)

    def finding(self) -> dict[str, Any]:
        return {"records": self.records, "oldest": self.oldest.isoformat() if self.oldest else None,
                "retention": self.limit.rule, "category": self.limit.category,
                "limit": self.limit.cutoff.isoformat()}
