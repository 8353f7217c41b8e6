"""Quiet hours: no SMS to a family at night (DESIGN §3.7). Pure, shared by the family's
meeting reminder (domain/family_effects.py, which picks a time outside them) and the
notification activity (which defers any family SMS that would fall in them)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def parse_quiet(text: str | None) -> tuple[time, time] | None:
    """ "21:00-08:00" -> (21:00, 08:00); "" or "none" -> no quiet hours."""
    text = (text or "").strip()
    if not text or text.lower() == "none":
        return None
    start, _, end = text.partition("-")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def quiet_until(now: datetime, tz: str, quiet: tuple[time, time] | None) -> datetime | None:
    """The end of the quiet hours (UTC) if `now` lies in them, else None."""
    if quiet is None:
        return None
    start, end = quiet
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    inside = (t >= start or t < end) if start > end else (start <= t < end)
    if not inside:
        return None
    day: date = local.date()
    candidate = datetime.combine(day, end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(day + timedelta(days=1), end, tzinfo=zone)
    return candidate.astimezone(UTC)
