"""When a kept record may be erased: a retention rule's anchor and duration applied to the record's date.

Periods are counted as German law counts them (§§ 187(1), 188(2), (3) BGB, which § 108 AO applies to
tax periods): the day of the event does not count; a period of years or months ends with the day of
the last year or month that bears the event's number (the last day of the month where that month is
shorter); the record is kept through that day and may be erased from the next. So an invoice of
15 Mar 2025 kept 8 years from the end of its year is kept through 31 Dec 2033 and erasable from
1 Jan 2034; a call of 31 Aug 2026 kept 6 months is kept through 28 Feb 2027, erasable from 1 Mar 2027.

Anchors (data map ``retention: anchor``) and what the record's date (``erasure: dated_by``) means:

- ``eoy``: the end of the calendar year of the date (invoices, access logs);
- ``consent_end_eoy``: the end of the calendar year in which the consent ended (the date of the
  withdrawal);
- ``collection``, ``invoice_dispatch``, ``ticket_closure``, ``flag_cleared``: the date itself;
- ``contract_end``: not known from a record: the contract's end decides (None, "when the contract
  ends + 30 days"); any other anchor, a rule without a duration, or a record without a date: None,
  kept until a person decides.

Holds (``holds``: a disputed bill, a tax audit, legal claims) extend a period while they last. dsr does
not know of any hold yet: a future hold keeps the register's entries (they stay ``kept`` past their
date until it is lifted); these functions give the date without holds.

Pure: no database, no clock.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

from dsr.datamap.model import DATED_ANCHORS, RetentionRule

YEAR_END = frozenset({"eoy", "consent_end_eoy"})
# The subset of ISO 8601 a retention period uses: years, months, weeks, days (a time part is rounded up
# to whole days: a record is erased on a day, never earlier than its period allows).
_DURATION = re.compile(r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                       r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


@dataclass(frozen=True)
class Period:
    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not an ISO 8601 duration such as P30D or P8Y")
        y, m, w, d, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        extra = hours * 3600 + minutes * 60 + seconds
        return cls(y, m, 7 * w + d + (extra + 86399) // 86400)

    def after(self, day: date) -> date:
        """The day this period after ``day`` ends on (§ 188(2), (3) BGB): years and months first, kept on
        the same day of the month or the month's last day, then the days."""
        months = day.month - 1 + self.months + 12 * self.years
        year, month = day.year + months // 12, months % 12 + 1
        last = calendar.monthrange(year, month)[1]
        return date(year, month, min(day.day, last)) + timedelta(days=self.days)


def dated(rule: RetentionRule) -> bool:
    """Whether a record's date gives its deletion date under ``rule`` (a dated anchor and a duration)."""
    return rule.anchor in DATED_ANCHORS and bool(rule.duration)


def anchor_day(anchor: str | None, record_day: date) -> date | None:
    """The day a rule's period starts after, for a record dated ``record_day``; None: a record's date
    does not tell (the contract's end, a customer's setting)."""
    if anchor in YEAR_END:
        return date(record_day.year, 12, 31)
    if anchor in DATED_ANCHORS:
        return record_day
    return None


def erasable_on(rule: RetentionRule, record_day: date | None) -> date | None:
    """The first day a record dated ``record_day`` may be erased under ``rule``; None where it is not
    known (no date in the record, an anchor no date decides, a rule without a duration)."""
    if record_day is None or not rule.duration:
        return None
    start = anchor_day(rule.anchor, record_day)
    if start is None:
        return None
    return Period.parse(rule.duration).after(start) + timedelta(days=1)


def first_day_kept(rule: RetentionRule, today: date) -> date | None:
    """The first record day whose records are still kept ``today``: the records dated before it are
    erasable (their ``erasable_on`` is ``today`` or earlier). None where the rule gives no date.

    ``erasable_on`` never decreases as the record's date increases, so the due days are all those before
    one day: found by bisection over the days up to ``today`` (no record dated today is erasable today)."""
    if not dated(rule):
        return None
    low, high = date.min.toordinal(), today.toordinal()  # erasable(high) > today always
    if not _erasable_by(rule, low, today):
        return date.fromordinal(low)
    while high - low > 1:  # invariant: low erasable by today, high not
        middle = (low + high) // 2
        if _erasable_by(rule, middle, today):
            low = middle
        else:
            high = middle
    return date.fromordinal(high)


def _erasable_by(rule: RetentionRule, ordinal: int, today: date) -> bool:
    try:
        due = erasable_on(rule, date.fromordinal(ordinal))
    except (OverflowError, ValueError):  # beyond year 9999
        return False
    return due is not None and due <= today
