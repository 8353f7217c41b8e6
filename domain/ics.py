"""iCalendar (RFC 5545/5546) for meeting invitations: pure, shared by the notification
activity (the .ics attached to an invitation) and the family's API (the same meeting as a
calendar file to download, DESIGN §11), so both carry the same UID and SEQUENCE.

The VTIMEZONE is rule based (issue 11 point 3): one STANDARD and one DAYLIGHT component with a
yearly RRULE (Europe/Copenhagen and Europe/Stockholm: the last Sunday of March and of
October), derived from the zone's own transitions. icalendar's `add_missing_timezones` writes
a list of dates instead, which an independent parser read one hour off in summer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from models.messaging import MeetingInvite, Recipient

# DTSTART of a rule's first onset: any year before the meetings works; 1970 is the custom.
RULE_EPOCH = 1970
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC) in `year` at which the zone's UTC offset changes, to the minute."""
    out: list[datetime] = []
    at = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    step = timedelta(days=1)
    while at < end:
        nxt = at + step
        if at.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = at, nxt  # bisect the day to the minute
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi.replace(second=0, microsecond=0))
        at = nxt
    return out


def _byday(day: date) -> str:
    """The RRULE BYDAY of a date: "-1SU" for the last Sunday of its month, "2SU" for the
    second Sunday, ..."""
    weekday = WEEKDAYS[day.weekday()]
    if (day + timedelta(days=7)).month != day.month:
        return f"-1{weekday}"
    return f"{(day.day - 1) // 7 + 1}{weekday}"


def _first_onset(month: int, byday: str, clock: datetime) -> datetime:
    """The rule's date in RULE_EPOCH at the transition's local wall-clock time."""
    weekday = WEEKDAYS.index(byday[-2:])
    nth = int(byday[:-2])
    if nth > 0:
        day = date(RULE_EPOCH, month, 1)
        day += timedelta(days=(weekday - day.weekday()) % 7 + 7 * (nth - 1))
    else:
        day = (date(RULE_EPOCH + (month == 12), month % 12 + 1, 1) - timedelta(days=1))
        day -= timedelta(days=(day.weekday() - weekday) % 7)
    return datetime.combine(day, clock.time())


def vtimezone(tz: str, year: int):
    """A rule-based VTIMEZONE for `tz` as the zone's rules stand in `year`; None when the
    transitions are not on a fixed weekday of a month (then the caller lists dates)."""
    import icalendar

    zone = ZoneInfo(tz)
    component = icalendar.Timezone()
    component.add("tzid", tz)
    moments = _transitions(zone, year)
    if not moments:  # no daylight saving time: one STANDARD component, no rule
        now = datetime(year, 1, 1, tzinfo=UTC).astimezone(zone)
        std = icalendar.TimezoneStandard()
        std.add("dtstart", datetime(RULE_EPOCH, 1, 1))
        std.add("tzoffsetfrom", now.utcoffset())
        std.add("tzoffsetto", now.utcoffset())
        std.add("tzname", now.tzname())
        component.add_component(std)
        return component
    if len(moments) != 2:
        return None
    for moment in moments:
        before = (moment - timedelta(minutes=1)).astimezone(zone)
        after = moment.astimezone(zone)
        # The onset is written in the local time that was in force before it (RFC 5545
        # §3.6.5): 02:00 for the spring change, 03:00 for the autumn one in Copenhagen.
        local = moment.replace(tzinfo=None) + before.utcoffset()
        byday = _byday(local.date())
        sub = (icalendar.TimezoneDaylight() if after.dst() else icalendar.TimezoneStandard())
        sub.add("dtstart", _first_onset(local.month, byday, local))
        sub.add("tzoffsetfrom", before.utcoffset())
        sub.add("tzoffsetto", after.utcoffset())
        sub.add("tzname", after.tzname())
        sub.add("rrule", {"freq": "yearly", "bymonth": local.month, "byday": byday})
        component.add_component(sub)
    return component


def build_ics(invite: MeetingInvite, organizer: str, attendee: Recipient | None, stamp: datetime) -> str:
    """An RFC 5546 iTIP message: METHOD REQUEST (new or moved) or CANCEL, stable UID.
    `organizer` is "Name <address>" (the case's coordinator, so replies reach a person)."""
    import icalendar

    zone = ZoneInfo(invite.tz)
    cal = icalendar.Calendar()
    cal.add("prodid", "-//OneFamily//Case orchestrator//EN")
    cal.add("version", "2.0")
    cal.add("method", invite.method)
    event = icalendar.Event()
    event.add("uid", invite.uid)
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", invite.start.astimezone(zone))
    event.add("dtend", invite.end.astimezone(zone))
    event.add("sequence", invite.sequence)
    event.add("summary", invite.summary)
    if invite.location:
        event.add("location", invite.location)
    if invite.description:
        event.add("description", invite.description)
    event.add("status", "CANCELLED" if invite.method == "CANCEL" else "CONFIRMED")
    name, address = parseaddr(organizer)
    org = icalendar.vCalAddress(f"mailto:{address or organizer}")
    org.params["CN"] = name or "OneFamily"
    event.add("organizer", org)
    if attendee is not None and attendee.email:
        att = icalendar.vCalAddress(f"mailto:{attendee.email}")
        if attendee.name:
            att.params["CN"] = attendee.name
        att.params["ROLE"] = "REQ-PARTICIPANT"
        att.params["PARTSTAT"] = "NEEDS-ACTION"
        att.params["RSVP"] = "TRUE"
        event.add("attendee", att)
    rules = vtimezone(invite.tz, invite.start.astimezone(zone).year)
    if rules is not None:
        cal.add_component(rules)
    cal.add_component(event)
    if rules is None:
        cal.add_missing_timezones()
    return cal.to_ical().decode("utf-8")
