"""The family's consent (DESIGN §3.11, §11): who it covers, when it ends, and the commands that
give, narrow, extend and revoke it. Pure functions over CaseState: no I/O, no clock (the
caller passes `now`), used by the workflow, the access policy and the read model alike.

Coverage. The coordinator is always covered (the family's own contact); managers, admin and
the committee are decided by the access policy as before. A core-team member is covered for
`what` ("case" or "documents") when an ACTIVE consent covers `what` (documents also need the
case) and
- is the referral's coordinated-handling consent without departments (`core_team`: the
  whole core team as it is formed), or
- names them in `staff_ids`, or names their department (the team entry's) in `departments`.

An active consent past its expiry instant (the end of `expires_at`, the municipality's
calendar day) covers nobody even before the workflow's timer marks it expired: readers pass
`now` so a read is never a second late. Without `now` only the recorded status counts (what
the workflow sees between its timers, deterministic on replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain import deadlines as dl
from domain.calendar import add_days
from models.case import (
    CaseState,
    ConsentRecord,
    ConsentStatus,
    DeadlineKind,
    DeadlineStatus,
    HistoryEntry,
    Notice,
    TeamMember,
)

CASE, DOCUMENTS = "case", "documents"
PENDING = "pending_consent"


# ---------------------------------------------------------------- time


def expiry_instant(expires_at: date | None, tz: str) -> datetime | None:
    """The first instant a consent valid through `expires_at` no longer holds: midnight
    starting the next day in the municipality's zone."""
    if expires_at is None:
        return None
    return datetime.combine(expires_at + timedelta(days=1), time(0), tzinfo=ZoneInfo(tz))


def local_today(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def is_active(consent: ConsentRecord, tz: str, now: datetime | None = None) -> bool:
    if consent.status is not ConsentStatus.active:
        return False
    if now is None or consent.expires_at is None:
        return True
    return now < expiry_instant(consent.expires_at, tz)


# ---------------------------------------------------------------- coverage


def covers(consent: ConsentRecord, member: TeamMember, what: str = CASE, *, tz: str,
           now: datetime | None = None) -> bool:
    """Does this one consent cover this team member for `what`?"""
    if not is_active(consent, tz, now) or what not in consent.covers:
        return False
    if consent.core_team:
        return True
    return member.staff_id in consent.staff_ids or member.department in consent.departments


def is_covered(state: CaseState, member: TeamMember, what: str = CASE,
               now: datetime | None = None) -> bool:
    if member.staff_id == state.coordinator_id:
        return True
    tz = state.policy.timezone
    wanted = (CASE,) if what == CASE else (CASE, DOCUMENTS)
    return all(any(covers(c, member, w, tz=tz, now=now) for c in state.consents) for w in wanted)


def uncovered(state: CaseState, what: str = CASE, now: datetime | None = None) -> frozenset[str]:
    """Staff ids on the core team whom no active consent covers for `what`."""
    return frozenset(m.staff_id for m in state.team if not is_covered(state, m, what, now))


def covered_team(state: CaseState, consent: ConsentRecord, now: datetime | None = None) -> list[str]:
    """The team members this consent covers for the case (for the consents list)."""
    tz = state.policy.timezone
    return [m.staff_id for m in state.team if covers(consent, m, CASE, tz=tz, now=now)]


def next_expiry(state: CaseState, now: datetime | None = None) -> datetime | None:
    """The earliest instant an active consent ends (after `now`, if given): until then,
    coverage can change only by a command (which rewrites the read model at once)."""
    tz = state.policy.timezone
    ends = [end for c in state.consents
            if c.status is ConsentStatus.active
            and (end := expiry_instant(c.expires_at, tz)) is not None
            and (now is None or end > now)]
    return min(ends) if ends else None


def describe(member: TeamMember) -> str:
    return f"{member.staff_id} ({member.department})"


def pending_members(state: CaseState) -> list[TeamMember]:
    return [m for m in state.team if m.status == PENDING]


def refresh(state: CaseState, now: datetime) -> None:
    """Mark each team member pending_consent or active, as the recorded consents say."""
    missing = uncovered(state)
    for i, member in enumerate(state.team):
        pending = member.staff_id in missing
        if pending and member.status != PENDING:
            state.team[i] = member.model_copy(update={"status": PENDING, "pending_since": now})
        elif not pending and member.status != "active":
            state.team[i] = member.model_copy(update={"status": "active", "pending_since": None})


# ---------------------------------------------------------------- clocks


def _find(state: CaseState, consent_id: str) -> ConsentRecord | None:
    return next((c for c in state.consents if c.id == consent_id), None)


def cancel_renewal(state: CaseState, consent_id: str) -> None:
    for d in state.deadlines:
        if d.kind is DeadlineKind.consent_renewal and d.ref == consent_id and d.is_open():
            d.status = DeadlineStatus.cancelled
            d.paused_since = None


def start_renewal(state: CaseState, consent: ConsentRecord, now: datetime) -> None:
    """The consent_renewal deadline of one active consent with an end: due when it expires,
    the family reminded `consent_renewal_days` before."""
    cancel_renewal(state, consent.id)
    policy = state.policy
    due = expiry_instant(consent.expires_at, policy.timezone)
    if consent.status is not ConsentStatus.active or due is None or due <= now:
        return
    deadline = dl.add_deadline(state, policy, DeadlineKind.consent_renewal, due, "family", now=now)
    deadline.ref = consent.id
    deadline.remind_at = [add_days(due, -policy.consent_renewal_days, policy.timezone)]


def notify(state: CaseState, now: datetime, event: str, **detail: object) -> Notice:
    """Tell the coordinator (the managers while there is none) — one message per notice."""
    notice = Notice(number=len(state.notices) + 1, at=now, event=event,
                    to=state.coordinator_id or "manager", detail=detail)
    state.notices.append(notice)
    return notice


def expire_due(state: CaseState, now: datetime, tell: bool = True) -> list[str]:
    """Active consents whose end has come become expired (their renewal clock stops), and the
    coordinator is told (`tell`). Returns their ids."""
    tz = state.policy.timezone
    expired = []
    for i, consent in enumerate(state.consents):
        end = expiry_instant(consent.expires_at, tz)
        if consent.status is not ConsentStatus.active or end is None or now < end:
            continue
        state.consents[i] = consent.model_copy(update={"status": ConsentStatus.expired,
                                                       "expired_at": now})
        cancel_renewal(state, consent.id)
        state.history.append(HistoryEntry(at=now, actor="system", event="consent_expired",
                                          detail={"consent_id": consent.id}))
        if tell and state.closure is None:
            notify(state, now, "consent_expired", consent_id=consent.id,
                   valid_until=consent.expires_at.isoformat(),
                   no_longer_covered=sorted(uncovered(state) - _before(state, consent)))
        expired.append(consent.id)
    return expired


def _before(state: CaseState, gone: ConsentRecord) -> frozenset[str]:
    """Who was uncovered while `gone` still held (to name who lost access)."""
    probe = state.model_copy(update={"consents": [
        gone.model_copy(update={"status": ConsentStatus.active}) if c.id == gone.id else c
        for c in state.consents]})
    return uncovered(probe)


def enable(state: CaseState, now: datetime, tell: bool = True) -> None:
    """Switch the workflow's consent rules on for this case (a new run, or the first consent
    command of an old one): consents already past their end expire (the coordinator told, if
    `tell`), the others get their renewal clock."""
    if state.consent_rules:
        return
    state.consent_rules = True
    expire_due(state, now, tell)
    for consent in state.consents:
        if consent.status is ConsentStatus.active and consent.expires_at is not None and not any(
                d.kind is DeadlineKind.consent_renewal and d.ref == consent.id and d.is_open()
                for d in state.deadlines):
            start_renewal(state, consent, now)


def unknown_departments(state: CaseState, departments: Iterable[str],
                        directory: Iterable[str] | None) -> list[str]:
    """Departments neither of the staff directory (as the API knows it) nor of the team; while
    the caller did not say what the directory holds, the departments of the existing
    contacts count as known too."""
    known = {m.department for m in state.team}
    if directory is None:
        known |= {c.department for c in state.existing_contacts}
    else:
        known |= set(directory)
    return [d for d in dict.fromkeys(departments) if d not in known]
