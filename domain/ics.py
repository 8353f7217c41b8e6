"""iCalendar (RFC 5545/5546) for meeting invitations: pure, shared by the notification
activity (the .ics attached to an invitation) and the family's API (the same meeting as a
calendar file to download, DESIGN §11), so both carry the same UID and SEQUENCE."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from models.messaging import MeetingInvite, Recipient


def build_ics(invite: MeetingInvite, organizer: str, attendee: Recipient | None, stamp: datetime) -> str:
    """An RFC 5546 iTIP message: METHOD REQUEST (new or moved) or CANCEL, stable UID."""
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
    _, _, org_addr = organizer.rpartition("<")
    org = icalendar.vCalAddress(f"mailto:{org_addr.strip('> ') or organizer}")
    org.params["CN"] = "OneFamily"
    event.add("organizer", org)
    if attendee is not None and attendee.email:
        att = icalendar.vCalAddress(f"mailto:{attendee.email}")
        if attendee.name:
            att.params["CN"] = attendee.name
        att.params["ROLE"] = "REQ-PARTICIPANT"
        att.params["PARTSTAT"] = "NEEDS-ACTION"
        att.params["RSVP"] = "TRUE"
        event.add("attendee", att)
    cal.add_component(event)
    cal.add_missing_timezones()
    return cal.to_ical().decode("utf-8")
