"""Response deadlines for data-subject requests (requirements §1.3, §1.4, LC-15, LC-20..LC-23).

Rules implemented (Art. 12(3) GDPR read with Reg. 1182/71, "R1182"):

* The day of receipt does not count (R1182 Art. 3(1) 2nd subpara.). The day of receipt is
  the calendar date of ``received_at`` in the controller's time zone.
* A period in months ends on the day with the same number as the day of receipt; if that
  month is too short, on its last day (R1182 Art. 3(2)(c)) -> :func:`add_months`.
* An end falling on a Saturday, Sunday or public holiday moves to the next working day
  (R1182 Art. 3(4)) -> ``legal_end``.
* Target date (our [G] rule 4): the *unrolled* end minus a buffer (default 5 calendar days).
  SLA alarms use it.
* Extension by two further months (LC-22): the earlier of receipt + 3 months and the
  unrolled 1-month end + 2 months, then rolled. Only if declared on or before the 1-month
  legal end date (LC-21); otherwise :class:`ExtensionTooLate`.

``due_at`` convention: the period ends at the *end* of ``legal_end`` in the controller's time
zone. ``due_at`` is the first instant of the following local day, expressed in UTC, and is an
**exclusive** bound: the request is on time iff ``answered_at < due_at``.

LC-15 / AT-06: the deadline runs from receipt only. There is deliberately no "paused" input
here; any clock-paused interval while waiting for identity data is informational and must
never move the official dates computed by this module.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dsr.domain.holidays import GERMANY_NRW, HolidayCalendar

__all__ = [
    "DEFAULT_TARGET_BUFFER_DAYS",
    "DEFAULT_TIMEZONE",
    "Deadline",
    "DeadlinePolicy",
    "ExtensionTooLate",
    "add_months",
]

DEFAULT_TIMEZONE = "Europe/Berlin"
DEFAULT_TARGET_BUFFER_DAYS = 5

# Art. 12(3): one month, extendable by two further months.
_BASE_MONTHS = 1
_EXTENSION_MONTHS = 2


class ExtensionTooLate(ValueError):
    """LC-21: the extension was declared after the 1-month legal end date; it is invalid."""

    def __init__(self, legal_end: date, declared_on: date) -> None:
        self.legal_end = legal_end
        self.declared_on = declared_on
        super().__init__(
            f"extension declared on {declared_on.isoformat()} is too late: it must be declared "
            f"on or before the 1-month legal end date {legal_end.isoformat()} "
            "(Art. 12(3) GDPR, LC-21); the original deadline stays"
        )


def add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` calendar months, clamped to the end of a shorter month.

    R1182 Art. 3(2)(c): 31 Jan + 1 month = 28/29 Feb, never a roll-over into March.
    """
    month_index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(month_index, 12)
    month = month0 + 1
    last = monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


@dataclass(frozen=True)
class Deadline:
    """Official dates of one request.

    ``legal_end`` is the last day of the period (rolled over weekends/holidays), ``target`` the
    internal SLA date, ``due_at`` the exclusive end instant in UTC (see module docstring).
    For an extended deadline, ``original_legal_end`` keeps the 1-month legal end.
    """

    received_on: date
    legal_end: date
    target: date
    due_at: datetime
    extended: bool = False
    original_legal_end: date | None = None


def _require_aware(value: datetime, name: str) -> None:
    # A naive datetime has no defined day of receipt; guessing a zone could shift the deadline.
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value.isoformat()}")


def _default_calendar() -> HolidayCalendar:
    return HolidayCalendar.for_regions(GERMANY_NRW)


@dataclass(frozen=True)
class DeadlinePolicy:
    """Deadline rules for one controller: holiday calendar, time zone and SLA buffer."""

    calendar: HolidayCalendar = field(default_factory=_default_calendar)
    tz_name: str = DEFAULT_TIMEZONE
    target_buffer_days: int = DEFAULT_TARGET_BUFFER_DAYS

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz_name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {self.tz_name!r}") from exc
        if self.target_buffer_days < 0:
            raise ValueError(f"target_buffer_days must be >= 0, got {self.target_buffer_days}")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)  # ZoneInfo caches instances per key

    def local_date(self, moment: datetime) -> date:
        """Calendar date of an aware ``moment`` in the controller's time zone."""
        _require_aware(moment, "moment")
        return moment.astimezone(self.zone).date()

    def end_of_day_utc(self, day: date) -> datetime:
        """Exclusive end of local ``day``: first instant of the next local day, in UTC."""
        # Midnight never falls in a DST gap in Europe/Berlin; for zones where it might, the
        # fold=0 offset maps it to the transition instant, i.e. still the day's first instant.
        next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        return next_midnight.astimezone(UTC)

    def unrolled_end(self, received_on: date) -> date:
        """1-month end before weekend/holiday roll-over (R1182 Art. 3(1), 3(2)(c))."""
        return add_months(received_on, _BASE_MONTHS)

    def _target(self, unrolled: date) -> date:
        # [G] rule 4: the buffer is taken from the unrolled date, so it does not grow when
        # the legal end happens to roll over a weekend or holiday.
        return unrolled - timedelta(days=self.target_buffer_days)

    def compute(self, received_at: datetime) -> Deadline:
        """1-month deadline for a request received at the aware instant ``received_at``."""
        _require_aware(received_at, "received_at")
        received_on = self.local_date(received_at)
        unrolled = self.unrolled_end(received_on)
        legal_end = self.calendar.roll_forward(unrolled)  # R1182 Art. 3(4)
        return Deadline(
            received_on=received_on,
            legal_end=legal_end,
            target=self._target(unrolled),
            due_at=self.end_of_day_utc(legal_end),
        )

    def extension_allowed(self, received_at: datetime, declared_at: datetime) -> bool:
        """LC-21: True iff ``declared_at`` falls on or before the 1-month legal end date."""
        _require_aware(declared_at, "declared_at")
        return declared_at < self.compute(received_at).due_at

    def check_extension(self, received_at: datetime, declared_at: datetime) -> Deadline:
        """Validate an extension declaration; return the original 1-month deadline.

        Raises :class:`ExtensionTooLate` (a ValueError) naming the legal end date when
        ``declared_at`` is after it, and ValueError when it precedes receipt.
        """
        _require_aware(declared_at, "declared_at")
        base = self.compute(received_at)
        if declared_at < received_at:
            raise ValueError(
                f"extension declared at {declared_at.isoformat()} before the request was "
                f"received at {received_at.isoformat()}"
            )
        # Compare instants: equivalent to "local declaration date <= legal_end" (due_at is
        # the exclusive end of legal_end in the controller's zone).
        if declared_at >= base.due_at:
            raise ExtensionTooLate(legal_end=base.legal_end, declared_on=self.local_date(declared_at))
        return base

    def extend(self, received_at: datetime, declared_at: datetime) -> Deadline:
        """Deadline extended by two further months (Art. 12(3) 2nd sentence, LC-22).

        Official end = the earlier of receipt + 3 months and the unrolled 1-month end
        + 2 months (both clamped per R1182 Art. 3(2)(c)), then rolled (Art. 3(4)).
        ``target`` is that unrolled extended end minus the buffer.
        Raises :class:`ExtensionTooLate` if declared after the 1-month legal end (LC-21).
        """
        base = self.check_extension(received_at, declared_at)
        from_receipt = add_months(base.received_on, _BASE_MONTHS + _EXTENSION_MONTHS)
        from_original = add_months(self.unrolled_end(base.received_on), _EXTENSION_MONTHS)
        # LC-22: month-end clamping can make the strict reading earlier (31 Jan -> 28 Feb ->
        # 28 Apr vs 30 Apr); the earlier date is the safe official one.
        unrolled = min(from_receipt, from_original)
        legal_end = self.calendar.roll_forward(unrolled)
        return Deadline(
            received_on=base.received_on,
            legal_end=legal_end,
            target=self._target(unrolled),
            due_at=self.end_of_day_utc(legal_end),
            extended=True,
            original_legal_end=base.legal_end,
        )
