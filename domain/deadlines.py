"""Deadlines as data on the case: computed from domain dates, satisfied by events."""

from __future__ import annotations

from datetime import datetime

from domain.calendar import (
    add_days,
    add_hours,
    add_months,
    add_working_days,
    due_after_days,
    due_after_months,
)
from models.case import CaseState, Deadline, DeadlineKind, DeadlineStatus, ReferralKind, Source
from models.policy import Policy

PROFESSIONAL_SOURCES = {Source.school, Source.health, Source.social_services}


def add_deadline(
    state: CaseState,
    policy: Policy,
    kind: DeadlineKind,
    due_at: datetime,
    owner: str | None,
    now: datetime | None = None,
) -> Deadline:
    occurrence = 1 + sum(1 for d in state.deadlines if d.kind is kind)
    rule = policy.clock(kind.value)
    deadline = Deadline(
        kind=kind,
        legal_basis=policy.legal_basis.get(kind.value, ""),
        due_at=due_at,
        occurrence=occurrence,
        owner=owner,
        remind_at=reminders(due_at, rule.remind_before_days, policy.timezone),
        ladder=list(rule.ladder),
    )
    # A family clock started while the case waits for the family starts paused.
    pause = state.pauses[-1] if state.paused and state.pauses else None
    if pause is not None and pause.waiting_for_family and rule.pauses_for_family:
        deadline.paused_since = max(pause.since, now) if now is not None else pause.since
    state.deadlines.append(deadline)
    return deadline


def _statutory(policy: Policy, kind: DeadlineKind) -> bool:
    rules = policy.deadline_rules
    return rules is not None and kind.value in rules.kinds


def due_in_months(policy: Policy, kind: DeadlineKind, start: datetime, months: int) -> datetime:
    """A deadline `months` calendar months after `start`. Kinds the policy's statute governs
    end at the end of their last day, moved off a non-working day; otherwise (and for a policy
    copy from before `deadline_rules`) the old arithmetic: the start's clock time."""
    if _statutory(policy, kind):
        return due_after_months(start, months, policy.country, policy.timezone,
                                policy.non_working_days)
    return add_months(start, months, policy.timezone)


def due_in_days(policy: Policy, kind: DeadlineKind, start: datetime, days: int) -> datetime:
    """Like `due_in_months`, in calendar days."""
    if _statutory(policy, kind):
        return due_after_days(start, days, policy.country, policy.timezone,
                              policy.non_working_days)
    return add_days(start, days, policy.timezone)


def reminders(due_at: datetime, days_before: list[int], tz: str) -> list[datetime]:
    return sorted(add_days(due_at, -d, tz) for d in days_before)


def open_deadlines(state: CaseState, kind: DeadlineKind | None = None) -> list[Deadline]:
    return [d for d in state.deadlines if d.is_open() and (kind is None or d.kind is kind)]


def satisfy(state: CaseState, kind: DeadlineKind, at: datetime, by: str) -> None:
    for d in open_deadlines(state, kind):
        d.status = DeadlineStatus.met
        d.met_at = at
        d.satisfied_by = by
        d.paused_since = None


def cancel(state: CaseState, kind: DeadlineKind | None = None) -> None:
    for d in open_deadlines(state, kind):
        d.status = DeadlineStatus.cancelled
        d.paused_since = None


def initial_deadlines(state: CaseState, policy: Policy) -> None:
    """The clocks that start with the referral; they count from received_at, never from
    when the workflow happened to start (a backdated referral is already late)."""
    received = state.referral.received_at
    tz = policy.timezone
    add_deadline(
        state,
        policy,
        DeadlineKind.first_contact,
        add_working_days(received, policy.first_contact_working_days, policy.country, tz,
                         policy.non_working_days),
        owner=None,
    )
    assessment = add_deadline(
        state,
        policy,
        DeadlineKind.assessment,
        due_in_months(policy, DeadlineKind.assessment, received, policy.assessment_months),
        owner=None,
    )
    # The statutory reminder: `assessment_reminder_months` after the municipality became aware,
    # at the referral's clock time (a reminder, not a time limit: nothing to count whole).
    assessment.remind_at = sorted(
        {add_months(received, policy.assessment_reminder_months, tz), *assessment.remind_at}
    )
    if state.referral.kind is ReferralKind.concern_report:
        add_deadline(
            state,
            policy,
            DeadlineKind.concern_triage,
            add_hours(received, policy.concern_triage_hours, tz),
            owner=None,
        )
        professional = state.referral.reporter_is_professional
        if professional is None:
            professional = state.referral.source in PROFESSIONAL_SOURCES
        if professional:
            add_deadline(
                state,
                policy,
                DeadlineKind.reporter_receipt,
                due_in_days(policy, DeadlineKind.reporter_receipt, received,
                            policy.reporter_receipt_days),
                owner=None,
            )


def next_due(state: CaseState) -> datetime | None:
    dues = [d.due_at for d in open_deadlines(state) if d.paused_since is None]
    return min(dues) if dues else None


def overdue_kinds(state: CaseState, now: datetime) -> list[str]:
    return sorted({d.kind.value for d in state.deadlines if d.status_at(now) is DeadlineStatus.overdue})
