"""Messages that the family's consent and requests cause (DESIGN §11), derived from the case
state like every other effect (domain/effects.py calls these): pure and deterministic.

- `consent_renewal`: the family is asked to renew a consent `consent_renewal_days` before it
  expires (the consent_renewal deadline's reminder);
- `family_update#<n>`: the coordinator (the unit's managers while the case has none) is told
  of a notice: a consent revoked, narrowed or expired, focus points, a request for a pause;
- `silenced`: team members the family's consent does not cover hear nothing of the case;
- `meeting_reminder:<meeting>#<sequence>`: the family's SMS reminder the day before each
  meeting (patch "family-sms-reminder"), out of the policy's quiet hours.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from domain import consent as cs
from domain.calendar import add_days
from domain.quiet_hours import parse_quiet, quiet_until
from models.case import CaseState, Deadline
from models.messaging import (
    Channel,
    MeetingInvite,
    NotificationRequest,
    Recipient,
    RecipientQuery,
    RecipientRole,
    family_recipients,
    notification_key,
    staff_recipient,
)

if TYPE_CHECKING:
    from domain.effects import Effect


def silenced(state: CaseState) -> frozenset[str]:
    """Staff who get no message about the case: team members no active consent covers. (Rows
    already in the outbox are cancelled there: models/projection.py.)"""
    return cs.uncovered(state) if state.consent_rules else frozenset()


def renewal_effects(state: CaseState, d: Deadline, done: set[str], language: str) -> list[Effect]:
    """A consent about to expire: the parents are asked to renew it. Its end reaches the
    coordinator as a notice, never as an overdue deadline."""
    from domain.effects import Effect

    consent = next((c for c in state.consents if c.id == d.ref), None)
    out: list[Effect] = []
    if consent is None or consent.expires_at is None:
        return out
    for sent in d.reminders_sent:
        if sent.get("skipped") or sent["kind"] != "reminder":
            continue
        purpose = f"consent_renewal:{consent.id}#{d.occurrence}:{sent['step']}"
        for recipient in family_recipients(state):
            key = notification_key(state.id, purpose, recipient.id)
            if key in done:
                continue
            request = NotificationRequest(
                key=key, case_id=state.id, purpose=purpose, recipient=recipient,
                template="consent_renewal", language=language,
                context={"valid_until": consent.expires_at.isoformat(), "consent_id": consent.id},
            )
            out.append(Effect(key=request.key, notification=request))
    return out


def notice_effects(state: CaseState, done: set[str]) -> list[Effect]:
    from domain.effects import Effect

    out: list[Effect] = []
    for notice in state.notices:
        purpose = f"family_update#{notice.number}"
        to_managers = notice.to == "manager"
        recipient = (Recipient(role=RecipientRole.manager, id="role:manager") if to_managers
                     else staff_recipient(RecipientRole.coordinator, notice.to))
        key = notification_key(state.id, purpose, recipient.id)
        if key in done:
            continue
        request = NotificationRequest(
            key=key, case_id=state.id, purpose=purpose, recipient=recipient,
            template="family_update", context={"event": notice.event, **notice.detail},
        )
        out.append(Effect(key=request.key, notification=request,
                          fan_out=RecipientQuery(role="manager", case_id=state.id)
                          if to_managers else None))
    return out


# ---------------------------------------------------------------- the SMS reminder


REMINDER_PURPOSE = "meeting_reminder"


def _reminder_at(state: CaseState, start: datetime, now: datetime) -> datetime | None:
    """When the SMS reminder of a meeting starting at `start` goes out, seen at `now`: the
    policy's days before at the meeting's local clock time (or now, for a meeting planned
    later than that), out of the quiet hours; None when that is not before the meeting."""
    policy = state.policy
    if policy.family_sms_reminder_days_before <= 0:
        return None
    at = max(add_days(start, -policy.family_sms_reminder_days_before, policy.timezone), now)
    at = quiet_until(at, policy.timezone, parse_quiet(policy.family_sms_quiet_hours)) or at
    return at if at < start else None


def _reminders(state: CaseState, now: datetime) -> list[tuple[str, str, MeetingInvite, datetime]]:
    """(purpose, meeting kind, meeting, send time) for each coming meeting the family is in."""
    from domain.effects import meeting_invites

    out = []
    for name, invite, participants in meeting_invites(state):
        if "family" not in participants or invite.start <= now:
            continue
        at = _reminder_at(state, invite.start, now)
        if at is not None:
            # Keyed by the meeting and its SEQUENCE: a moved meeting is a new reminder, and the
            # old one, not sent yet, is no longer asked for.
            purpose = f"{REMINDER_PURPOSE}:{name}#{invite.sequence}"
            out.append((purpose, "assessment" if name == "assessment" else "status", invite, at))
    return out


def _sms_recipients(state: CaseState) -> list[Recipient]:
    """The parents with a mobile number, by SMS. (A family that asked for space gets the
    reminder in its in-app outbox only: it is a courtesy, `optional`.)"""
    return [r.model_copy(update={"channel_preference": Channel.sms})
            for r in family_recipients(state) if r.phone]


def next_reminder(state: CaseState, done: set[str], now: datetime) -> datetime | None:
    """The next instant a reminder falls due (after `now`), for the workflow's timer."""
    people = _sms_recipients(state)
    times = [at for purpose, _, _, at in _reminders(state, now) if at > now
             and any(notification_key(state.id, purpose, r.id) not in done for r in people)]
    return min(times) if times else None


def reminder_effects(state: CaseState, done: set[str], now: datetime) -> list[Effect]:
    """The family's SMS reminders due by `now` (DESIGN §3.7): time, place and kind of meeting
    only — no names, no case content, nothing about health (docs/notifications.md)."""
    from domain.effects import Effect

    out: list[Effect] = []
    people = _sms_recipients(state)
    for purpose, kind, invite, at in _reminders(state, now):
        if at > now:
            continue
        for recipient in people:
            key = notification_key(state.id, purpose, recipient.id)
            if key in done:
                continue
            request = NotificationRequest(
                key=key, case_id=state.id, purpose=purpose, recipient=recipient,
                template="meeting_reminder", language=state.family.language
                or state.policy.default_language, optional=True,
                quiet_hours=state.policy.family_sms_quiet_hours,
                context={"meeting": kind, "at": invite.start.isoformat(),
                         "location": invite.location},
            )
            out.append(Effect(key=key, notification=request))
    return out


def reminder_still_wanted(state: CaseState, purpose: str) -> bool:
    """A reminder waiting in the effects loop: is its meeting still coming at that SEQUENCE?"""
    from domain.effects import meeting_invites

    name, _, sequence = purpose.removeprefix(f"{REMINDER_PURPOSE}:").partition("#")
    return any(n == name and str(i.sequence) == sequence and "family" in p
               for n, i, p in meeting_invites(state))
