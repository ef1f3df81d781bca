"""Deadline computation (requirements §1.3, §1.4) and the holiday calendar it relies on."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsr.domain.deadlines import Deadline, DeadlinePolicy, ExtensionTooLate, add_months
from dsr.domain.holidays import GERMANY_NRW, HolidayCalendar, easter_sunday

BERLIN = ZoneInfo("Europe/Berlin")
POLICY = DeadlinePolicy()


def berlin(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=BERLIN)


# --- §1.3 worked examples -----------------------------------------------------------------

# received, 1-month legal end, receipt + 3 months (rolled), official extended end (LC-22)
WORKED_EXAMPLES = [
    (date(2025, 1, 29), date(2025, 2, 28), date(2025, 4, 29), date(2025, 4, 28)),
    (date(2025, 1, 31), date(2025, 2, 28), date(2025, 4, 30), date(2025, 4, 28)),
    (date(2024, 1, 31), date(2024, 2, 29), date(2024, 4, 30), date(2024, 4, 29)),
    (date(2025, 3, 31), date(2025, 4, 30), date(2025, 6, 30), date(2025, 6, 30)),
    (date(2025, 4, 1), date(2025, 5, 2), date(2025, 7, 1), date(2025, 7, 1)),
    (date(2025, 5, 15), date(2025, 6, 16), date(2025, 8, 15), date(2025, 8, 15)),
    (date(2025, 11, 30), date(2025, 12, 30), date(2026, 3, 2), date(2026, 3, 2)),
    (date(2025, 12, 24), date(2026, 1, 26), date(2026, 3, 24), date(2026, 3, 24)),
]


@pytest.mark.parametrize(
    ("received", "legal_end", "plus_three_rolled", "extended_end"),
    WORKED_EXAMPLES,
    ids=[row[0].isoformat() for row in WORKED_EXAMPLES],
)
def test_worked_examples(
    received: date, legal_end: date, plus_three_rolled: date, extended_end: date
) -> None:
    received_at = berlin(received)

    deadline = POLICY.compute(received_at)
    assert deadline.received_on == received
    assert deadline.legal_end == legal_end
    assert deadline.extended is False

    # The table's "receipt + 3 months" column is shown after roll-over (e.g. 28 Feb 2026 -> 2 Mar).
    assert POLICY.calendar.roll_forward(add_months(received, 3)) == plus_three_rolled

    # Declared the same day as receipt: always in time.
    extended = POLICY.extend(received_at, declared_at=received_at)
    assert extended.legal_end == extended_end
    assert extended.extended is True
    assert extended.original_legal_end == legal_end
    assert extended.received_on == received
    assert extended.due_at == POLICY.end_of_day_utc(extended_end)


# --- add_months -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2025, 1, 31), 1, date(2025, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2025, 3, 31), 1, date(2025, 4, 30)),
        (date(2025, 12, 24), 1, date(2026, 1, 24)),
        (date(2025, 11, 30), 3, date(2026, 2, 28)),
        (date(2025, 1, 15), 0, date(2025, 1, 15)),
        (date(2025, 3, 31), -1, date(2025, 2, 28)),
        (date(2025, 1, 10), -1, date(2024, 12, 10)),
        (date(2025, 1, 31), 13, date(2026, 2, 28)),
    ],
)
def test_add_months_clamps_to_month_end(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


# --- holiday calendar -------------------------------------------------------------------------


def test_easter_sunday_known_years() -> None:
    assert easter_sunday(2024) == date(2024, 3, 31)
    assert easter_sunday(2025) == date(2025, 4, 20)
    assert easter_sunday(2026) == date(2026, 4, 5)
    assert easter_sunday(2000) == date(2000, 4, 23)
    assert easter_sunday(2038) == date(2038, 4, 25)  # latest possible date
    assert easter_sunday(2285) == date(2285, 3, 22)  # earliest possible date


def test_holidays_2025_de_nw() -> None:
    cal = HolidayCalendar.for_regions(GERMANY_NRW)
    assert cal.holidays_in(2025) == {
        date(2025, 1, 1): "Neujahr",
        date(2025, 4, 18): "Karfreitag",
        date(2025, 4, 21): "Ostermontag",
        date(2025, 5, 1): "Tag der Arbeit",
        date(2025, 5, 29): "Christi Himmelfahrt",
        date(2025, 6, 9): "Pfingstmontag",
        date(2025, 6, 19): "Fronleichnam",
        date(2025, 10, 3): "Tag der Deutschen Einheit",
        date(2025, 11, 1): "Allerheiligen",
        date(2025, 12, 25): "1. Weihnachtstag",
        date(2025, 12, 26): "2. Weihnachtstag",
    }


def test_holidays_2026_de_nw() -> None:
    cal = HolidayCalendar.for_regions(GERMANY_NRW)
    assert cal.holidays_in(2026) == {
        date(2026, 1, 1): "Neujahr",
        date(2026, 4, 3): "Karfreitag",
        date(2026, 4, 6): "Ostermontag",
        date(2026, 5, 1): "Tag der Arbeit",
        date(2026, 5, 14): "Christi Himmelfahrt",
        date(2026, 5, 25): "Pfingstmontag",
        date(2026, 6, 4): "Fronleichnam",
        date(2026, 10, 3): "Tag der Deutschen Einheit",
        date(2026, 11, 1): "Allerheiligen",
        date(2026, 12, 25): "1. Weihnachtstag",
        date(2026, 12, 26): "2. Weihnachtstag",
    }


def test_holidays_in_is_sorted_by_date() -> None:
    days = list(HolidayCalendar.for_regions(GERMANY_NRW).holidays_in(2026))
    assert days == sorted(days)


def test_national_calendar_lacks_nrw_holidays() -> None:
    de_only = HolidayCalendar.for_regions(["DE"])
    assert not de_only.is_holiday(date(2025, 6, 19))  # Fronleichnam is NRW only
    assert not de_only.is_holiday(date(2025, 11, 1))  # Allerheiligen is NRW only
    assert de_only.is_holiday(date(2025, 10, 3))


def test_is_working_day() -> None:
    cal = HolidayCalendar.for_regions(GERMANY_NRW)
    assert cal.is_working_day(date(2025, 4, 17))  # Thursday before Good Friday
    assert not cal.is_working_day(date(2025, 4, 18))  # Karfreitag
    assert not cal.is_working_day(date(2025, 6, 14))  # Saturday
    assert not cal.is_working_day(date(2025, 6, 15))  # Sunday
    assert not cal.is_holiday(date(2025, 6, 15))  # weekends are not "holidays"
    assert not cal.is_holiday(date(2025, 12, 24))  # Heiligabend is not a public holiday
    assert cal.roll_forward(date(2025, 4, 18)) == date(2025, 4, 22)  # Fri..Mon of Easter


def test_one_off_and_overlapping_holidays() -> None:
    cal = HolidayCalendar.for_regions(GERMANY_NRW)
    assert cal.holidays_in(2017)[date(2017, 10, 31)] == "Reformationstag"
    assert not cal.is_holiday(date(2018, 10, 31))
    # 2008: Ascension Day fell on 1 May.
    assert cal.holidays_in(2008)[date(2008, 5, 1)] == "Tag der Arbeit / Christi Himmelfahrt"


def test_extra_dates_and_normalised_region_codes() -> None:
    extra_day = date(2025, 7, 14)  # a Monday
    cal = HolidayCalendar.for_regions([" de ", "de-nw", "DE"], extra=[extra_day])
    assert cal.regions == ("DE", "DE-NW")
    assert cal.is_holiday(extra_day)
    assert not cal.is_working_day(extra_day)
    assert extra_day in cal.holidays_in(2025)
    assert extra_day not in HolidayCalendar.for_regions(GERMANY_NRW).holidays_in(2025)


def test_unknown_region_rejected() -> None:
    with pytest.raises(ValueError, match="DE-XX"):
        HolidayCalendar.for_regions(["DE", "DE-XX"])


def test_empty_region_list_rejected() -> None:
    with pytest.raises(ValueError, match="at least one region"):
        HolidayCalendar.for_regions([])


def test_calendar_is_hashable_and_frozen() -> None:
    a = HolidayCalendar.for_regions(GERMANY_NRW)
    b = HolidayCalendar.for_regions(list(GERMANY_NRW))
    assert a == b
    assert hash(a) == hash(b)


# --- time zone, due_at, target -----------------------------------------------------------------


def test_late_evening_utc_is_next_day_in_berlin_winter() -> None:
    # 23:30 UTC on 28 Jan is 00:30 CET on 29 Jan.
    deadline = POLICY.compute(datetime(2025, 1, 28, 23, 30, tzinfo=UTC))
    assert deadline.received_on == date(2025, 1, 29)
    assert deadline.legal_end == date(2025, 2, 28)


def test_late_evening_utc_is_next_day_in_berlin_summer() -> None:
    # 22:30 UTC on 31 Mar is 00:30 CEST on 1 Apr: the deadline moves from 30 Apr to 2 May.
    deadline = POLICY.compute(datetime(2025, 3, 31, 22, 30, tzinfo=UTC))
    assert deadline.received_on == date(2025, 4, 1)
    assert deadline.legal_end == date(2025, 5, 2)
    just_before = POLICY.compute(datetime(2025, 3, 31, 21, 59, tzinfo=UTC))
    assert just_before.received_on == date(2025, 3, 31)
    assert just_before.legal_end == date(2025, 4, 30)


def test_other_controller_time_zone() -> None:
    policy = DeadlinePolicy(tz_name="UTC")
    deadline = policy.compute(datetime(2025, 1, 28, 23, 30, tzinfo=UTC))
    assert deadline.received_on == date(2025, 1, 28)
    assert deadline.due_at == datetime(2025, 3, 1, tzinfo=UTC)


def test_due_at_is_exclusive_end_of_legal_end_in_berlin_as_utc() -> None:
    winter = POLICY.compute(berlin(date(2025, 1, 31)))
    assert winter.legal_end == date(2025, 2, 28)
    assert winter.due_at == datetime(2025, 2, 28, 23, 0, tzinfo=UTC)  # 1 Mar 00:00 CET
    assert winter.due_at.utcoffset() == timedelta(0)

    summer = POLICY.compute(berlin(date(2025, 4, 1)))
    assert summer.due_at == datetime(2025, 5, 2, 22, 0, tzinfo=UTC)  # 3 May 00:00 CEST


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        POLICY.compute(datetime(2025, 1, 29, 10, 0))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        POLICY.extend(berlin(date(2025, 1, 29)), datetime(2025, 2, 1, 10, 0))  # noqa: DTZ001


def test_unknown_time_zone_rejected() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        DeadlinePolicy(tz_name="Mars/Olympus")


def test_negative_buffer_rejected() -> None:
    with pytest.raises(ValueError, match="target_buffer_days"):
        DeadlinePolicy(target_buffer_days=-1)


def test_target_is_unrolled_end_minus_five_days() -> None:
    # Unrolled end 15 Jun 2025 is a Sunday; legal end rolls to Monday 16 Jun, target does not.
    deadline = POLICY.compute(berlin(date(2025, 5, 15)))
    assert deadline.legal_end == date(2025, 6, 16)
    assert deadline.target == date(2025, 6, 10)


def test_target_buffer_is_configurable() -> None:
    policy = DeadlinePolicy(target_buffer_days=10)
    assert policy.compute(berlin(date(2025, 1, 31))).target == date(2025, 2, 18)
    assert DeadlinePolicy(target_buffer_days=0).compute(berlin(date(2025, 5, 15))).target == date(2025, 6, 15)


def test_extended_target_is_unrolled_extended_end_minus_buffer() -> None:
    # 30 Nov 2025: unrolled extended end is Sat 28 Feb 2026 (rolled to 2 Mar).
    extended = POLICY.extend(berlin(date(2025, 11, 30)), berlin(date(2025, 12, 1)))
    assert extended.legal_end == date(2026, 3, 2)
    assert extended.target == date(2026, 2, 23)


def test_deadline_is_frozen() -> None:
    deadline = POLICY.compute(berlin(date(2025, 1, 29)))
    with pytest.raises(AttributeError):
        deadline.legal_end = date(2030, 1, 1)  # type: ignore[misc]
    assert isinstance(deadline, Deadline)


def test_custom_calendar_moves_legal_end() -> None:
    extra = HolidayCalendar.for_regions(GERMANY_NRW, extra=[date(2025, 2, 28)])
    deadline = DeadlinePolicy(calendar=extra).compute(berlin(date(2025, 1, 31)))
    assert deadline.legal_end == date(2025, 3, 3)  # Fri is extra holiday -> Mon


# --- extension: LC-21 ------------------------------------------------------------------------


def test_extension_on_last_day_allowed() -> None:
    received_at = berlin(date(2025, 1, 31))
    last_minute = berlin(date(2025, 2, 28), 23, 59)
    assert POLICY.extension_allowed(received_at, last_minute)
    extended = POLICY.extend(received_at, last_minute)
    assert extended.legal_end == date(2025, 4, 28)


def test_extension_on_rolled_legal_end_allowed() -> None:
    # Legal end rolled from Sun 15 Jun to Mon 16 Jun 2025: declaring on the Monday is in time.
    received_at = berlin(date(2025, 5, 15))
    assert POLICY.extend(received_at, berlin(date(2025, 6, 16), 18)).legal_end == date(2025, 8, 15)


def test_extension_too_late_rejected() -> None:
    received_at = berlin(date(2025, 1, 31))
    too_late = berlin(date(2025, 3, 1), 0, 0)
    assert not POLICY.extension_allowed(received_at, too_late)
    with pytest.raises(ExtensionTooLate, match="2025-02-28") as excinfo:
        POLICY.extend(received_at, too_late)
    assert excinfo.value.legal_end == date(2025, 2, 28)
    assert excinfo.value.declared_on == date(2025, 3, 1)
    assert isinstance(excinfo.value, ValueError)


def test_extension_too_late_judged_in_controller_time_zone() -> None:
    # 23:30 UTC on 28 Feb is already 1 Mar in Berlin: too late.
    received_at = berlin(date(2025, 1, 31))
    with pytest.raises(ExtensionTooLate, match="2025-02-28"):
        POLICY.extend(received_at, datetime(2025, 2, 28, 23, 30, tzinfo=UTC))
    assert POLICY.extension_allowed(received_at, datetime(2025, 2, 28, 22, 59, tzinfo=UTC))


def test_extension_before_receipt_rejected() -> None:
    received_at = berlin(date(2025, 1, 31))
    with pytest.raises(ValueError, match="before the request was received"):
        POLICY.extend(received_at, received_at - timedelta(hours=1))


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    received=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    minute_of_day=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_legal_end_properties(received: date, minute_of_day: int) -> None:
    received_at = berlin(received, *divmod(minute_of_day, 60))
    deadline = POLICY.compute(received_at)
    unrolled = add_months(received, 1)

    assert deadline.received_on == received
    assert POLICY.calendar.is_working_day(deadline.legal_end)
    assert unrolled <= deadline.legal_end < unrolled + timedelta(days=6)
    assert deadline.target == unrolled - timedelta(days=5)
    assert deadline.due_at.astimezone(BERLIN) == datetime.combine(
        deadline.legal_end + timedelta(days=1), time(0), tzinfo=BERLIN
    )

    extended = POLICY.extend(received_at, received_at)
    assert extended.legal_end >= deadline.legal_end
    assert POLICY.calendar.is_working_day(extended.legal_end)
    # Never later than receipt + 3 months rolled (LC-22 takes the earlier date).
    assert extended.legal_end <= POLICY.calendar.roll_forward(add_months(received, 3))
