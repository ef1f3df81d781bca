"""Deletion dates of kept records (ER-05): a retention rule's anchor and duration applied to a record's day,
counted as §§ 187(1), 188(2), (3) BGB count: kept through the last day of the period, erasable the next."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given
from hypothesis import strategies as st

from dsr.datamap.model import RetentionRule
from dsr.domain.retention_dates import Period, dated, erasable_on, first_day_kept


def rule(anchor: str | None, duration: str | None) -> RetentionRule:
    return RetentionRule("r", anchor, duration, {"de": "x", "en": "x"})


CASES = [
    # The requirements' example: an invoice of 15 Mar 2025, 8 years from the end of its year.
    ("eoy", "P8Y", date(2025, 3, 15), date(2034, 1, 1)),
    ("eoy", "P8Y", date(2025, 1, 1), date(2034, 1, 1)),
    ("eoy", "P8Y", date(2025, 12, 31), date(2034, 1, 1)),
    ("eoy", "P10Y", date(2024, 2, 29), date(2035, 1, 1)),  # the ledger: 10 years
    ("eoy", "P1Y", date(2026, 6, 1), date(2028, 1, 1)),  # access logs: the end of the year after
    ("consent_end_eoy", "P3Y", date(2026, 11, 30), date(2030, 1, 1)),
    # 6 months after the day; from a month's last day to a shorter month's last day (§ 188(3) BGB).
    ("invoice_dispatch", "P6M", date(2026, 3, 15), date(2026, 9, 16)),
    ("invoice_dispatch", "P6M", date(2026, 8, 31), date(2027, 3, 1)),  # kept through 28 Feb 2027
    ("invoice_dispatch", "P6M", date(2027, 8, 31), date(2028, 3, 1)),  # kept through 29 Feb 2028 (leap)
    ("invoice_dispatch", "P6M", date(2027, 8, 30), date(2028, 3, 1)),  # 29 Feb too
    ("invoice_dispatch", "P6M", date(2026, 12, 31), date(2027, 7, 1)),  # kept through 30 Jun
    ("ticket_closure", "P6M", date(2026, 2, 28), date(2026, 8, 29)),
    ("flag_cleared", "P1Y", date(2024, 2, 29), date(2025, 3, 1)),  # a leap day's year ends on 28 Feb
    ("flag_cleared", "P1Y", date(2027, 2, 28), date(2028, 2, 29)),
    ("collection", "P7D", date(2026, 12, 28), date(2027, 1, 5)),  # across the year's end
    ("collection", "P30D", date(2028, 2, 1), date(2028, 3, 3)),  # February of a leap year
    ("collection", "PT12H", date(2026, 5, 1), date(2026, 5, 3)),  # a part of a day counts as a whole day
    ("collection", "P1W", date(2026, 5, 1), date(2026, 5, 9)),
    ("collection", "P1M1D", date(2026, 1, 31), date(2026, 3, 2)),  # months first (to 28 Feb), then days
]


@pytest.mark.parametrize(("anchor", "duration", "day", "expected"), CASES)
def test_the_first_day_a_record_may_be_erased(anchor: str, duration: str, day: date, expected: date) -> None:
    assert erasable_on(rule(anchor, duration), day) == expected
    # The day before it, the record is still kept; on it, it is due.
    assert first_day_kept(rule(anchor, duration), expected - timedelta(days=1)) <= day  # type: ignore[operator]
    assert first_day_kept(rule(anchor, duration), expected) > day  # type: ignore[operator]


@pytest.mark.parametrize(("anchor", "duration", "day"), [
    ("contract_end", "P30D", date(2026, 1, 1)),  # the contract's end decides, not the record's date
    ("customer_config", None, date(2026, 1, 1)),
    ("referring_records", None, date(2026, 1, 1)),
    (None, None, date(2026, 1, 1)),  # not stored
    ("eoy", None, date(2026, 1, 1)),  # no duration: a person decides
    ("eoy", "P8Y", None),  # a record without its date (a consent not withdrawn)
])
def test_no_date_where_no_date_is_known(anchor: str | None, duration: str | None, day: date | None) -> None:
    assert erasable_on(rule(anchor, duration), day) is None
    assert first_day_kept(rule(anchor, duration), date(2100, 1, 1)) is None or day is None


def test_dated_rules_and_periods() -> None:
    assert dated(rule("eoy", "P8Y")) and dated(rule("invoice_dispatch", "P6M"))
    assert not dated(rule("contract_end", "P30D")) and not dated(rule("eoy", None))
    assert Period.parse("P8Y") == Period(years=8) and Period.parse("P1Y2M3W4D") == Period(1, 2, 25)
    assert Period.parse("PT1S") == Period(days=1) and Period.parse("PT24H") == Period(days=1)
    with pytest.raises(ValueError, match="ISO 8601"):
        Period.parse("8 years")


RULES = st.sampled_from([rule("eoy", "P8Y"), rule("eoy", "P1Y"), rule("consent_end_eoy", "P3Y"),
                         rule("invoice_dispatch", "P6M"), rule("flag_cleared", "P1Y"), rule("collection", "P7D"),
                         rule("collection", "P30D"), rule("ticket_closure", "P6M"), rule("collection", "P1M15D")])
DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))


@given(RULES, DAYS, DAYS)
def test_a_later_record_is_never_erasable_earlier(r: RetentionRule, one: date, other: date) -> None:
    first, second = sorted((one, other))
    assert erasable_on(r, first) <= erasable_on(r, second)  # type: ignore[operator]


@given(RULES, DAYS)
def test_a_record_is_kept_at_least_its_whole_period(r: RetentionRule, day: date) -> None:
    """Never erased before the period has run in full after the day (nor, for eoy, after the year's end)."""
    due = erasable_on(r, day)
    assert due is not None
    period = Period.parse(r.duration or "")
    start = date(day.year, 12, 31) if r.anchor in ("eoy", "consent_end_eoy") else day
    assert due > start + relativedelta(years=period.years, months=period.months, days=period.days)
    assert due == start + relativedelta(years=period.years, months=period.months) + timedelta(days=period.days + 1)


@given(RULES, DAYS)
def test_the_run_erases_exactly_the_records_due_by_the_day(r: RetentionRule, today: date) -> None:
    """Records dated before ``first_day_kept`` are due by ``today``; that day's records are not."""
    cutoff = first_day_kept(r, today)
    assert cutoff is not None
    assert erasable_on(r, cutoff) > today  # type: ignore[operator]
    assert erasable_on(r, cutoff - timedelta(days=1)) <= today  # type: ignore[operator]
