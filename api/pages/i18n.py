"""The pages' languages (DESIGN §10): Danish, Swedish and English.

Which language a page speaks: the one the user chose (stored on the staff row, and in a cookie
for the login page and the family), else the browser's `Accept-Language`, else the
municipality's own (Denmark da, Sweden sv). Texts live in `templates/pages/i18n/<area>.<lang>.json`
— one file per area of the pages (common, case, plan, committee …) so each area's texts sit
next to nothing but that area's; English is the fallback key by key, and a test checks that
every English key exists in Danish and Swedish.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import pass_context

LANGUAGES = ("da", "sv", "en")
COOKIE = "onefamily_lang"
COUNTRY_LANGUAGE = {"DK": "da", "SE": "sv"}
CATALOGUES = Path(__file__).resolve().parent.parent.parent / "templates" / "pages" / "i18n"


@lru_cache(maxsize=8)
def catalogue(language: str) -> dict[str, str]:
    """Every area's texts of one language, English underneath key by key."""
    merged: dict[str, str] = {}
    for lang in ("en", language) if language != "en" else ("en",):
        for path in sorted(CATALOGUES.glob(f"*.{lang}.json")):
            merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def translate(language: str, key: str, **values: object) -> str:
    text = catalogue(language).get(key)
    if text is None:
        return key  # a missing key shows itself (and the completeness test fails)
    try:
        return text.format(**values) if values else text
    except (KeyError, IndexError, ValueError):
        return text


def from_accept_language(header: str | None) -> str | None:
    """The first of our languages the browser asks for, by its q-values."""
    if not header:
        return None
    wanted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary == "nb" or primary == "no":  # Norwegian readers read Danish best
            primary = "da"
        if primary in LANGUAGES and q > 0:
            wanted.append((-q, index, primary))
    return min(wanted)[2] if wanted else None


def choose(stored: str | None, cookie: str | None, accept: str | None, country: str) -> str:
    for candidate in (stored, cookie, from_accept_language(accept)):
        if candidate in LANGUAGES:
            return candidate
    return COUNTRY_LANGUAGE.get(country.upper(), "da")


# ---------------------------------------------------------------- jinja helpers


def _parse(value: object) -> datetime | date | None:
    if value is None or value == "":
        return None
    if isinstance(value, (datetime, date)):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        try:
            return date.fromisoformat(str(value)[:10])
        except ValueError:
            return None


def format_date(language: str, value: object, timezone: str) -> str:
    parsed = _parse(value)
    if parsed is None:
        return "—"
    if isinstance(parsed, datetime):
        parsed = parsed.astimezone(ZoneInfo(timezone)).date()
    month = translate(language, f"month.{parsed.month}")
    return translate(language, "format.date", day=parsed.day, month=month, year=parsed.year)


def format_datetime(language: str, value: object, timezone: str) -> str:
    parsed = _parse(value)
    if parsed is None:
        return "—"
    if not isinstance(parsed, datetime):
        return format_date(language, parsed, timezone)
    local = parsed.astimezone(ZoneInfo(timezone))
    month = translate(language, f"month.{local.month}")
    return translate(language, "format.datetime", day=local.day, month=month, year=local.year,
                     time=local.strftime("%H:%M"))


def install(env) -> None:
    """`t(<key>, name=…)`, `|date`, `|datetime` in the context's language and time zone."""

    @pass_context
    def t(ctx, key: str, **values: object) -> str:
        return translate(ctx.get("lang") or "en", key, **values)

    @pass_context
    def local_date(ctx, value: object) -> str:
        return format_date(ctx.get("lang") or "en", value, ctx.get("timezone") or "Europe/Copenhagen")

    @pass_context
    def local_datetime(ctx, value: object) -> str:
        return format_datetime(ctx.get("lang") or "en", value,
                               ctx.get("timezone") or "Europe/Copenhagen")

    @pass_context
    def input_datetime(ctx, value: object) -> str:
        """The value of an `<input type="datetime-local">`: local time, no zone."""
        parsed = _parse(value)
        if not isinstance(parsed, datetime) or parsed.tzinfo is None:
            return ""
        zone = ZoneInfo(ctx.get("timezone") or "Europe/Copenhagen")
        return parsed.astimezone(zone).strftime("%Y-%m-%dT%H:%M")

    env.globals["t"] = t
    env.filters["date"] = local_date
    env.filters["datetime"] = local_datetime
    env.filters["input_datetime"] = input_datetime
