"""Deadline arithmetic: working days with national holidays, calendar months clamped, and the
statute on computing time (the last day counts whole; a last day that is not a working day
moves to the next working day) -- docs/deadlines.md.

The non-working days are policy data (`models.deadline_rules.NonWorkingDays`); without it
(`None`, a policy copy from before that field) the old holiday list applies, so a running case
keeps its arithmetic. Every result is a real local time: a wall-clock time in the spring DST gap
is moved forward through UTC (`_real`)."""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from models.deadline_rules import HOLIDAY_CATEGORIES, HOLIDAY_COUNTRIES, NonWorkingDays

# The old holiday list (policies without `non_working_days`). Sweden: Midsummer Eve, Christmas
# Eve and New Year's Eve -- the `holidays` package's "de_facto" category (lag (1930:173) 2 §).
_EXTRA_HOLIDAY_CATEGORIES: dict[str, tuple[str, ...]] = {"SE": ("de_facto",)}


# Computed once at import, outside any workflow sandbox: `holidays` reads the locale and the
# local time lazily, which a workflow may not. Years outside the range count weekends only.
HOLIDAY_YEARS = range(2000, 2076)


@lru_cache(maxsize=16)
def _holiday_category(country: str, category: str) -> frozenset[date]:
    supported = holidays.country_holidays(country).supported_categories
    if category not in supported:  # e.g. DK has no "de_facto": nothing to add
        return frozenset()
    return frozenset(
        holidays.country_holidays(country, years=HOLIDAY_YEARS, categories=(category,)).keys()
    )


@lru_cache(maxsize=8)
def _holidays_all(country: str) -> frozenset[date]:
    categories = ("public", *_EXTRA_HOLIDAY_CATEGORIES.get(country, ()))
    return frozenset().union(*(_holiday_category(country, c) for c in categories))


def _holidays(country: str, year: int) -> frozenset[date]:
    return _holidays_all(country)


for _country in HOLIDAY_COUNTRIES:
    _holidays_all(_country)
    for _category in HOLIDAY_CATEGORIES:
        _holiday_category(_country, _category)


def is_working_day(day: date, country: str, non_working: NonWorkingDays | None = None) -> bool:
    if non_working is None:
        return day.weekday() < 5 and day not in _holidays(country, day.year)
    return not (
        day.weekday() in non_working.weekdays
        or f"{day.month:02d}-{day.day:02d}" in non_working.extra_fixed
        or day in non_working.extra_dates
        or any(day in _holiday_category(non_working.holiday_country, c)
               for c in non_working.holiday_categories)
    )


def next_working_day(day: date, country: str, non_working: NonWorkingDays | None = None) -> date:
    """`day` itself if it is a working day, else the first working day after it (DK § 27 stk. 2
    "den følgende hverdag", SE 2 § "nästa vardag")."""
    candidate = day
    for _ in range(366):
        if is_working_day(candidate, country, non_working):
            return candidate
        candidate += timedelta(days=1)
    # Only an absurd policy gets here (a whole year of extra dates). Never raise inside a
    # workflow (a failing task would hang the case): keep the unmoved day.
    return day


def add_working_days(start: datetime, days: int, country: str, tz: str,
                     non_working: NonWorkingDays | None = None) -> datetime:
    """`days` working days after `start`, at the end of that working day (local time).

    Counting starts the day after `start`: a referral received on Friday with 5 working
    days is due at the end of the following Friday (holidays skipped).
    """
    local = start.astimezone(ZoneInfo(tz))
    day = local.date()
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if is_working_day(day, country, non_working):
            remaining -= 1
    return end_of_day(day, tz)


def _real(local: datetime, tz: str) -> datetime:
    """The same instant as a local time that exists. A wall-clock time in the spring gap
    (02:30 on 28 Mar 2027 in Copenhagen) reads with the offset before the change (fold=0); the
    round trip through UTC names it as the clock shows it (03:30+02:00)."""
    return local.astimezone(UTC).astimezone(ZoneInfo(tz))


def end_of_day(day: date, tz: str) -> datetime:
    return _real(datetime.combine(day, time(23, 59, 59), tzinfo=ZoneInfo(tz)), tz)


def _add_months_to_date(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    return date(year, month, min(day.day, _cal.monthrange(year, month)[1]))


def add_months(start: datetime, months: int, tz: str) -> datetime:
    """Calendar months in the municipality's time zone, clamped to the month's end
    (31 Jan + 1 month = 28/29 Feb), keeping the local wall-clock time (the old arithmetic;
    statutory deadlines use `due_after_months`)."""
    local = start.astimezone(ZoneInfo(tz))
    day = _add_months_to_date(local.date(), months)
    # replace() keeps the wall-clock time; ZoneInfo picks the right offset (DST) for the new date.
    return _real(local.replace(year=day.year, month=day.month, day=day.day), tz)


def end_of_last_day(day: date, country: str, tz: str,
                    non_working: NonWorkingDays | None = None) -> datetime:
    """A time limit whose last day is `day`: moved to the next working day if `day` is not one,
    due at the end of that day, local time (the last day counts whole)."""
    return end_of_day(next_working_day(day, country, non_working), tz)


def due_after_months(start: datetime, months: int, country: str, tz: str,
                     non_working: NonWorkingDays | None = None) -> datetime:
    """`months` calendar months after `start` (local date, clamped to the month's end), to the
    end of the last day, moved off a non-working day (DK § 27, SE lag (1930:173) 1-2 §§)."""
    day = _add_months_to_date(start.astimezone(ZoneInfo(tz)).date(), months)
    return end_of_last_day(day, country, tz, non_working)


def due_after_days(start: datetime, days: int, country: str, tz: str,
                   non_working: NonWorkingDays | None = None) -> datetime:
    """`days` calendar days after `start`'s local date, to the end of the last day, moved off a
    non-working day."""
    day = start.astimezone(ZoneInfo(tz)).date() + timedelta(days=days)
    return end_of_last_day(day, country, tz, non_working)


def add_days(start: datetime, days: int, tz: str) -> datetime:
    local = start.astimezone(ZoneInfo(tz))
    return _real((local.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=ZoneInfo(tz)), tz)


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
    return _real(meeting, tz)
