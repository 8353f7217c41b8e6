"""How a deadline counted in days or months ends, as policy data (docs/deadlines.md).

Two pieces, both optional on `Policy` so that a case whose policy copy predates them (a running
case, or a stored municipality override from before them) keeps the arithmetic it started with:

- `NonWorkingDays`: which days are not working days in the municipality's country. Used to count
  working days and to move a deadline that ends on such a day to the next working day.
- `DeadlineRules`: which deadline kinds the country's statute on computing time governs (the last
  day counts whole; a last day that is not a working day moves to the next working day).
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The `holidays` package is read once at import (domain/calendar.py), never inside a workflow:
# only these countries and categories are precomputed, so a policy may name only these.
HOLIDAY_COUNTRIES = ("DK", "SE")
HOLIDAY_CATEGORIES = ("public", "de_facto")


class NonWorkingDays(BaseModel):
    """The days that are not working days: weekends, the country's public holidays from the
    pinned `holidays` package (movable feasts such as Easter), and dates of our own."""

    model_config = ConfigDict(extra="forbid")

    # 0 = Monday ... 6 = Sunday.
    weekdays: list[int] = Field(default_factory=lambda: [5, 6])
    # The `holidays` package's holidays of this country, in these categories (SE "de_facto"
    # holds Midsummer Eve, Christmas Eve and New Year's Eve).
    holiday_country: str
    holiday_categories: list[str] = Field(default_factory=lambda: ["public"])
    # Every year on this day, "MM-DD" (DK: Grundlovsdag 06-05, 12-24, 12-31).
    extra_fixed: list[str] = Field(default_factory=list)
    # Single dates, "YYYY-MM-DD": e.g. a municipality's own closing day, added by override.
    extra_dates: list[date] = Field(default_factory=list)
    # Where the list comes from (shown, never computed with).
    legal_basis: str = ""

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        for day in value:
            if not 0 <= day <= 6:
                raise ValueError(f"{day} is not a weekday (0 = Monday ... 6 = Sunday)")
        if len(set(value)) == 7:
            raise ValueError("at least one weekday must be a working day")
        return value

    @field_validator("holiday_country")
    @classmethod
    def _country(cls, value: str) -> str:
        if value not in HOLIDAY_COUNTRIES:
            raise ValueError(f"holidays are known for {', '.join(HOLIDAY_COUNTRIES)}, not {value!r}")
        return value

    @field_validator("holiday_categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        for category in value:
            if category not in HOLIDAY_CATEGORIES:
                raise ValueError(f"{category!r} is not a holiday category "
                                 f"({', '.join(HOLIDAY_CATEGORIES)})")
        return value

    @field_validator("extra_fixed")
    @classmethod
    def _fixed(cls, value: list[str]) -> list[str]:
        days = []
        for item in value:
            try:
                month, day = (int(x) for x in item.split("-"))
                date(2000, month, day)  # a leap year: "02-29" is a day
            except (ValueError, TypeError):
                raise ValueError(f"{item!r} is not a day of the year (write MM-DD, e.g. 12-24)") \
                    from None
            days.append(f"{month:02d}-{day:02d}")  # the calendar compares "MM-DD" as text
        return days

    @field_validator("extra_dates", mode="before")
    @classmethod
    def _dates(cls, value: object) -> object:
        # One sentence a coordinator understands instead of pydantic's parser wording.
        if isinstance(value, list):
            for item in value:
                if isinstance(item, date):
                    continue
                try:
                    date.fromisoformat(str(item))
                except ValueError:
                    raise ValueError(f"{item!r} is not a date (write YYYY-MM-DD, e.g. 2027-05-07)") \
                        from None
        return value


class DeadlineRules(BaseModel):
    """The statute on computing time (DK Forældelsesloven § 27, SE lag (1930:173)): for the
    listed kinds the last day counts whole (due at its end, 23:59:59 local) and a last day that
    is not a working day moves to the next working day. Hour clocks are never listed."""

    model_config = ConfigDict(extra="forbid")

    legal_basis: str
    kinds: list[str]
