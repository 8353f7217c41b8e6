"""Deadline arithmetic: working days with national holidays, calendar months clamped."""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

# Days that count as holidays for deadlines besides the public ones. Sweden: a deadline falling
# on Midsummer Eve, Christmas Eve or New Year's Eve moves to the next weekday (lag (1930:173) om
# beräkning av lagstadgad tid, 2 §) -- exactly the `holidays` package's "de_facto" category.
_EXTRA_HOLIDAY_CATEGORIES: dict[str, tuple[str, ...]] = {"SE": ("de_facto",)}


# Computed once at import, outside any workflow sandbox: `holidays` reads the locale and the
# local time lazily, which a workflow may not. Years outside the range count weekends only.
HOLIDAY_YEARS = range(2000, 2076)


@lru_cache(maxsize=8)
def _holidays_all(country: str) -> frozenset[date]:
    categories = ("public", *_EXTRA_HOLIDAY_CATEGORIES.get(country, ()))
    return frozenset(
        holidays.country_holidays(country, years=HOLIDAY_YEARS, categories=categories).keys()
    )


def _holidays(country: str, year: int) -> frozenset[date]:
    return _holidays_all(country)


for _country in ("DK", "SE"):
    _holidays_all(_country)


def is_working_day(day: date, country: str) -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


def add_working_days(start: datetime, days: int, country: str, tz: str) -> datetime:
    """`days` working days after `start`, at the end of that working day (local time).

    Counting starts the day after `start`: a referral received on Friday with 5 working
    days is due at the end of the following Friday (holidays skipped).
    """
    local = start.astimezone(ZoneInfo(tz))
    day = local.date()
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if is_working_day(day, country):
            remaining -= 1
    return end_of_day(day, tz)


def end_of_day(day: date, tz: str) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=ZoneInfo(tz))


def add_months(start: datetime, months: int, tz: str) -> datetime:
    """Calendar months in the municipality's time zone, clamped to the month's end
    (31 Jan + 1 month = 28/29 Feb), keeping the local wall-clock time."""
    local = start.astimezone(ZoneInfo(tz))
    month_index = local.month - 1 + months
    year = local.year + month_index // 12
    month = month_index % 12 + 1
    day = min(local.day, _cal.monthrange(year, month)[1])
    # replace() keeps the wall-clock time; ZoneInfo picks the right offset (DST) for the new date.
    return local.replace(year=year, month=month, day=day)


def add_days(start: datetime, days: int, tz: str) -> datetime:
    local = start.astimezone(ZoneInfo(tz))
    return (local.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=ZoneInfo(tz))


def add_hours(start: datetime, hours: int, tz: str) -> datetime:
    # Clock hours: add in UTC. Adding to a ZoneInfo datetime is wall-clock arithmetic, which
    # would make "24 hours" 23 or 25 real hours across a DST change.
    return (start.astimezone(UTC) + timedelta(hours=hours)).astimezone(ZoneInfo(tz))


def next_weekly_meeting(after: datetime, weekday: int, at: str, tz: str) -> datetime:
    """The first weekly meeting (weekday, local HH:MM) strictly after `after`."""
    local = after.astimezone(ZoneInfo(tz))
    hour, minute = (int(x) for x in at.split(":"))
    day = local.date() + timedelta(days=(weekday - local.weekday()) % 7)
    meeting = datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(tz))
    if meeting <= local:
        meeting = datetime.combine(day + timedelta(days=7), time(hour, minute), tzinfo=ZoneInfo(tz))
    return meeting
