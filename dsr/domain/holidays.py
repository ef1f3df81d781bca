"""Public-holiday calendars for deadline roll-over.

R1182 Art. 3(4): a period whose last day is a Saturday, Sunday or public holiday ends at
the end of the next working day. R1182 Art. 2(1): the holidays are those of the place where
the act is done; for the controller in Bonn that is German national plus North
Rhine-Westphalia holidays (requirements §1.3 rule 3). The calendar is configurable.

Holidays are described as data (a table of rules per region code, ISO 3166-2), so adding
another German Land means adding one entry to ``_REGION_RULES``, not new branches.
Pure Python, no external holiday library: Easter-based dates use the Anonymous Gregorian
algorithm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

__all__ = [
    "GERMANY",
    "GERMANY_NRW",
    "SUPPORTED_REGIONS",
    "EasterHoliday",
    "FixedHoliday",
    "HolidayCalendar",
    "HolidayRule",
    "easter_sunday",
]

_SATURDAY = 5  # date.weekday(): Monday == 0

# Longest run of consecutive non-working days we accept before declaring the calendar broken
# (protects roll_forward against e.g. an "extra" list covering a whole year).
_MAX_ROLL_DAYS = 31


def easter_sunday(year: int) -> date:
    """Easter Sunday in the Gregorian calendar (Anonymous Gregorian / Meeus-Jones-Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's published variable name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return date(year, month, day + 1)


@dataclass(frozen=True)
class FixedHoliday:
    """A holiday on the same calendar day every year, optionally only within a year range."""

    month: int
    day: int
    name: str
    first_year: int | None = None  # inclusive; None = no lower bound
    last_year: int | None = None  # inclusive; None = no upper bound

    def on(self, year: int) -> date | None:
        if not _in_range(year, self.first_year, self.last_year):
            return None
        return date(year, self.month, self.day)


@dataclass(frozen=True)
class EasterHoliday:
    """A holiday a fixed number of days from Easter Sunday (negative = before)."""

    offset_days: int
    name: str
    first_year: int | None = None
    last_year: int | None = None

    def on(self, year: int) -> date | None:
        if not _in_range(year, self.first_year, self.last_year):
            return None
        return easter_sunday(year) + timedelta(days=self.offset_days)


HolidayRule = FixedHoliday | EasterHoliday


def _in_range(year: int, first: int | None, last: int | None) -> bool:
    return (first is None or year >= first) and (last is None or year <= last)


# Region code (ISO 3166-2) -> rules. A Land entry lists only the holidays that Land adds on
# top of the national ones; a calendar must therefore name both, e.g. ("DE", "DE-NW").
_REGION_RULES: Mapping[str, tuple[HolidayRule, ...]] = {
    "DE": (
        FixedHoliday(1, 1, "Neujahr"),
        EasterHoliday(-2, "Karfreitag"),
        EasterHoliday(1, "Ostermontag"),
        FixedHoliday(5, 1, "Tag der Arbeit"),
        EasterHoliday(39, "Christi Himmelfahrt"),
        EasterHoliday(50, "Pfingstmontag"),
        FixedHoliday(10, 3, "Tag der Deutschen Einheit", first_year=1990),
        # 500 years of the Reformation: a one-off nationwide holiday.
        FixedHoliday(10, 31, "Reformationstag", first_year=2017, last_year=2017),
        FixedHoliday(12, 25, "1. Weihnachtstag"),
        FixedHoliday(12, 26, "2. Weihnachtstag"),
    ),
    "DE-NW": (
        EasterHoliday(60, "Fronleichnam"),
        FixedHoliday(11, 1, "Allerheiligen"),
    ),
}

SUPPORTED_REGIONS: frozenset[str] = frozenset(_REGION_RULES)
GERMANY: tuple[str, ...] = ("DE",)
GERMANY_NRW: tuple[str, ...] = ("DE", "DE-NW")


@lru_cache(maxsize=1024)
def _region_holidays(region: str, year: int) -> tuple[tuple[date, str], ...]:
    # Cached: deadline computation asks for the same few years over and over.
    result: list[tuple[date, str]] = []
    for rule in _REGION_RULES[region]:
        day = rule.on(year)
        if day is not None:
            result.append((day, rule.name))
    return tuple(result)


@dataclass(frozen=True)
class HolidayCalendar:
    """Non-working days: weekends, the holidays of ``regions`` and any ``extra`` dates.

    Build it with :meth:`for_regions`. Construction validates the regions, so an invalid
    calendar cannot exist (a silently empty calendar would make deadlines too early).
    """

    regions: tuple[str, ...]
    extra: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.regions:
            raise ValueError("HolidayCalendar needs at least one region, e.g. ('DE', 'DE-NW')")
        unknown = [r for r in self.regions if r not in _REGION_RULES]
        if unknown:
            raise ValueError(
                f"unknown holiday region(s): {', '.join(map(repr, unknown))}; "
                f"supported: {', '.join(sorted(_REGION_RULES))}"
            )

    @classmethod
    def for_regions(cls, regions: Iterable[str], extra: Iterable[date] = ()) -> HolidayCalendar:
        """Calendar for ISO 3166-2 region codes (case-insensitive), plus extra fixed dates.

        Duplicates are dropped; order is kept. Raises ValueError naming any unknown region.
        """
        normalised = tuple(dict.fromkeys(r.strip().upper() for r in regions))
        return cls(regions=normalised, extra=frozenset(extra))

    def holidays_in(self, year: int) -> dict[date, str]:
        """All holidays of ``year`` (weekends not included), sorted by date, date -> name.

        Two holidays on one day (e.g. Christi Himmelfahrt on 1 May 2008) are joined with " / ".
        """
        names: dict[date, list[str]] = {}
        for region in self.regions:
            for day, name in _region_holidays(region, year):
                bucket = names.setdefault(day, [])
                if name not in bucket:
                    bucket.append(name)
        for day in self.extra:
            if day.year == year:
                names.setdefault(day, []).append("Zusätzlicher Feiertag (konfiguriert)")
        return {day: " / ".join(names[day]) for day in sorted(names)}

    def is_holiday(self, day: date) -> bool:
        """True for a public holiday (or configured extra date); weekends are not holidays."""
        if day in self.extra:
            return True
        return any(d == day for region in self.regions for d, _ in _region_holidays(region, day.year))

    def is_working_day(self, day: date) -> bool:
        """R1182 Art. 3(4): working days exclude Saturdays, Sundays and public holidays."""
        return day.weekday() < _SATURDAY and not self.is_holiday(day)

    def roll_forward(self, day: date) -> date:
        """``day`` if it is a working day, otherwise the next working day (R1182 Art. 3(4))."""
        current = day
        for _ in range(_MAX_ROLL_DAYS):
            if self.is_working_day(current):
                return current
            current += timedelta(days=1)
        raise ValueError(f"no working day within {_MAX_ROLL_DAYS} days after {day.isoformat()}")
