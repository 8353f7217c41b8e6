"""domain/calendar.py: calendar months clamped to the month's end in local time, working days
that skip weekends and national holidays (DESIGN §5 "Precise rules"). Working days are counted
with the countries' policy data (non-working days); the statutory end of a time limit is in
tests/test_legal_deadlines.py."""

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from domain.calendar import (
    add_days,
    add_hours,
    add_months,
    add_working_days,
    end_of_day,
    is_working_day,
)
from domain.policy import DK, SE

CPH = "Europe/Copenhagen"
STO = "Europe/Stockholm"
DK_DAYS = DK.non_working_days
SE_DAYS = SE.non_working_days


def local(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))


def assert_aware(dt: datetime) -> None:
    assert dt.tzinfo is not None and dt.utcoffset() is not None


# ---------------------------------------------------------------- calendar months


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        # 31 Jan + 1 month = 28 Feb (2027 is not a leap year) ...
        (local(CPH, 2027, 1, 31, 10), 1, "2027-02-28T10:00:00+01:00"),
        # ... and 29 Feb in a leap year.
        (local(CPH, 2028, 1, 31, 10), 1, "2028-02-29T10:00:00+01:00"),
        (local(CPH, 2028, 3, 31, 10), -1, "2028-02-29T10:00:00+01:00"),
        # A plain month keeps the day.
        (local(CPH, 2027, 1, 15, 10), 1, "2027-02-15T10:00:00+01:00"),
        # Across the year boundary, clamped.
        (local(CPH, 2026, 11, 30, 10), 3, "2027-02-28T10:00:00+01:00"),
        (local(CPH, 2026, 10, 31, 10), 12, "2027-10-31T10:00:00+01:00"),
    ],
)
def test_add_months_clamps_to_the_end_of_the_month(start: datetime, months: int, expected: str) -> None:
    assert add_months(start, months, CPH).isoformat() == expected


def test_add_months_clamp_across_spring_dst_keeps_wall_clock_time() -> None:
    # 31 Dec (CET, +01:00) + 4 months = 30 Apr (clamped), summer time (CEST, +02:00), still 10:00.
    result = add_months(local(CPH, 2026, 12, 31, 10), 4, CPH)
    assert result.isoformat() == "2027-04-30T10:00:00+02:00"
    assert result.astimezone(UTC) == datetime(2027, 4, 30, 8, 0, tzinfo=UTC)


def test_add_months_across_autumn_dst_keeps_wall_clock_time() -> None:
    # DST ends on Sunday 31 Oct 2027 at 03:00; 31 Aug (+02:00) + 2 months lands after it.
    result = add_months(local(CPH, 2027, 8, 31, 10), 2, CPH)
    assert result.isoformat() == "2027-10-31T10:00:00+01:00"
    assert result.astimezone(UTC) == datetime(2027, 10, 31, 9, 0, tzinfo=UTC)


def test_add_months_from_utc_counts_in_the_municipality_time_zone() -> None:
    # 31 Jan 23:30 UTC is already 1 Feb 00:30 in Copenhagen: + 1 month = 1 Mar 00:30 local.
    # Counted in UTC it would wrongly clamp to 28 Feb.
    result = add_months(datetime(2027, 1, 31, 23, 30, tzinfo=UTC), 1, CPH)
    assert result.isoformat() == "2027-03-01T00:30:00+01:00"


def test_add_months_of_an_utc_instant_into_summer_time() -> None:
    # Received 15 Jan 09:00 UTC = 10:00 CET; 4 months later it is 10:00 CEST = 08:00 UTC,
    # not 09:00 UTC: months keep the local wall clock, not the UTC one.
    result = add_months(datetime(2027, 1, 15, 9, 0, tzinfo=UTC), 4, CPH)
    assert result.isoformat() == "2027-05-15T10:00:00+02:00"


def test_add_months_result_is_in_the_municipality_zone() -> None:
    result = add_months(datetime(2027, 1, 31, 9, 0, tzinfo=timezone(timedelta(hours=-5))), 1, STO)
    assert_aware(result)
    assert result.tzinfo == ZoneInfo(STO)


# ---------------------------------------------------------------- working days


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2027, 3, 22), True),  # an ordinary Monday
        (date(2027, 3, 20), False),  # Saturday
        (date(2027, 3, 21), False),  # Sunday
        (date(2027, 3, 25), False),  # Maundy Thursday (DK)
        (date(2027, 3, 26), False),  # Good Friday
        (date(2027, 3, 29), False),  # Easter Monday 2027
        (date(2027, 5, 6), False),  # Ascension Day
        (date(2027, 5, 17), False),  # Whit Monday
        (date(2026, 12, 25), False),  # Christmas Day (a Friday in 2026)
        (date(2026, 12, 28), True),  # the Monday after Christmas
        (date(2027, 1, 1), False),  # New Year's Day
        # Forældelsesloven § 27 stk. 2: Grundlovsdag, Christmas Eve, New Year's Eve.
        (date(2026, 6, 5), False),  # Grundlovsdag (a Friday in 2026)
        (date(2026, 12, 24), False),  # Christmas Eve (Thursday)
        (date(2026, 12, 31), False),  # New Year's Eve (Thursday)
        (date(2026, 6, 4), True),
    ],
)
def test_dk_working_days(day: date, working: bool) -> None:
    assert is_working_day(day, "DK", DK_DAYS) is working


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2027, 6, 24), True),  # Thursday before Midsummer
        (date(2027, 6, 25), False),  # Midsummer Eve (Friday): treated as a holiday for deadlines
        (date(2028, 6, 6), False),  # National Day (a Tuesday in 2028)
        (date(2027, 1, 6), False),  # Epiphany
        (date(2027, 12, 24), False),  # Christmas Eve (Friday)
        (date(2027, 12, 31), False),  # New Year's Eve (Friday)
        (date(2027, 3, 25), True),  # Maundy Thursday is a working day in Sweden ...
    ],
)
def test_se_working_days(day: date, working: bool) -> None:
    assert is_working_day(day, "SE", SE_DAYS) is working


def test_maundy_thursday_differs_between_countries() -> None:
    assert not is_working_day(date(2027, 3, 25), "DK", DK_DAYS)
    assert is_working_day(date(2027, 3, 25), "SE", SE_DAYS)


def test_without_policy_data_the_old_holiday_list_applies() -> None:
    # A running case's policy copy from before `non_working_days`: in Denmark 24/31 Dec and
    # 5 June count as working days, as they did when the case started.
    assert is_working_day(date(2026, 12, 24), "DK")
    assert is_working_day(date(2026, 6, 5), "DK")
    assert not is_working_day(date(2026, 12, 25), "DK")
    assert not is_working_day(date(2027, 12, 24), "SE")  # Sweden's old list had the eves
    assert add_working_days(local(CPH, 2026, 12, 23, 9), 5, "DK", CPH).date() == date(2026, 12, 31)


def test_working_days_count_from_the_next_day_to_the_end_of_the_due_day() -> None:
    # Friday + 5 working days = the following Friday, 23:59:59 local.
    result = add_working_days(local(CPH, 2026, 11, 20, 10), 5, "DK", CPH, DK_DAYS)
    assert result.isoformat() == "2026-11-27T23:59:59+01:00"


def test_working_days_skip_easter_2027_in_denmark() -> None:
    # Wed 24 Mar: Thu 25, Fri 26, Mon 29 are holidays; Tue 30 .. Mon 5 Apr are days 1..5.
    # Also crosses the spring DST change (28 Mar), so the offset is +02:00.
    result = add_working_days(datetime(2027, 3, 24, 9, 0, tzinfo=UTC), 5, "DK", CPH, DK_DAYS)
    assert result.isoformat() == "2027-04-05T23:59:59+02:00"


def test_working_days_skip_christmas_in_denmark() -> None:
    # Wed 23 Dec 2026: [Thu 24 Christmas Eve, Fri 25 holiday, weekend], Mon 28 (1), Tue 29 (2),
    # Wed 30 (3), [Thu 31 New Year's Eve, Fri 1 Jan, weekend], Mon 4 (4), Tue 5 Jan (5).
    result = add_working_days(local(CPH, 2026, 12, 23, 9), 5, "DK", CPH, DK_DAYS)
    assert result.date() == date(2027, 1, 5)


def test_working_days_skip_midsummer_eve_in_sweden() -> None:
    # Wed 23 Jun 2027 + 3: Thu 24 (1), [Fri 25 Midsummer Eve, weekend], Mon 28 (2), Tue 29 (3).
    result = add_working_days(local(STO, 2027, 6, 23, 9), 3, "SE", STO, SE_DAYS)
    assert result.isoformat() == "2027-06-29T23:59:59+02:00"


def test_working_days_skip_national_day_in_sweden() -> None:
    # Fri 2 Jun 2028 + 3: Mon 5 (1), [Tue 6 National Day], Wed 7 (2), Thu 8 (3).
    result = add_working_days(local(STO, 2028, 6, 2, 9), 3, "SE", STO, SE_DAYS)
    assert result.date() == date(2028, 6, 8)


def test_working_days_start_from_the_local_date_not_the_utc_date() -> None:
    # Thu 4 Mar 2027 23:30 UTC is already Fri 5 Mar in Copenhagen: + 5 = Fri 12 Mar.
    # Counted from the UTC date it would be Thu 11 Mar.
    result = add_working_days(datetime(2027, 3, 4, 23, 30, tzinfo=UTC), 5, "DK", CPH, DK_DAYS)
    assert result.date() == date(2027, 3, 12)


def test_zero_working_days_is_the_end_of_the_same_day() -> None:
    result = add_working_days(local(CPH, 2027, 3, 20, 9), 0, "DK", CPH, DK_DAYS)
    assert result.isoformat() == "2027-03-20T23:59:59+01:00"


def test_working_days_across_a_year_boundary_use_the_new_years_holidays() -> None:
    # Wed 30 Dec 2026 + 2: [Thu 31 New Year's Eve, Fri 1 Jan 2027 holiday, weekend], Mon 4 Jan (1),
    # Tue 5 Jan (2).
    result = add_working_days(local(CPH, 2026, 12, 30, 9), 2, "DK", CPH, DK_DAYS)
    assert result.date() == date(2027, 1, 5)


# ---------------------------------------------------------------- days, hours, tz-awareness


def test_add_days_keeps_local_wall_clock_over_dst() -> None:
    result = add_days(local(CPH, 2027, 3, 20, 10), 14, CPH)
    assert result.isoformat() == "2027-04-03T10:00:00+02:00"


def test_add_hours_counts_clock_hours_over_dst() -> None:
    # 24 clock hours from Sat 27 Mar 12:00 CET is Sun 28 Mar 13:00 CEST (the night lost an hour).
    result = add_hours(local(CPH, 2027, 3, 27, 12), 24, CPH)
    assert result.isoformat() == "2027-03-28T13:00:00+02:00"
    # (Subtracting two datetimes with the same ZoneInfo is wall-clock arithmetic: compare in UTC.)
    assert result.astimezone(UTC) - local(CPH, 2027, 3, 27, 12).astimezone(UTC) == timedelta(hours=24)


def test_end_of_day_is_local() -> None:
    assert end_of_day(date(2027, 7, 1), STO).isoformat() == "2027-07-01T23:59:59+02:00"


@pytest.mark.parametrize("tz", [CPH, STO])
def test_all_results_are_tz_aware(tz: str) -> None:
    start = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
    for result in (
        add_months(start, 1, tz),
        add_working_days(start, 5, "DK", tz),
        add_days(start, 6, tz),
        add_hours(start, 24, tz),
        end_of_day(start.date(), tz),
    ):
        assert_aware(result)
        assert result.tzinfo == ZoneInfo(tz)
