"""When is a case stuck, and why (DESIGN §6)? Pure functions, no I/O, no clock.

Two kinds of reasons, shown together in one list:

- business reasons, from the case state (the read model's document):
  `overdue:<deadline kind>`, `stage_too_long`, `no_family_contact`, `committee_waiting`;
- technical reasons, from what Temporal says about the case's workflow:
  `activity_failing`, `workflow_task_failing`, `workflow_not_running`, `workflow_not_started`
  (created, but no worker has run its first workflow task for a minute: api/backlog.py).

Every business reason becomes true at a known instant and stays true until the case changes
(a deadline is due at `due_at`, a stage is too long at `stage_since + expected days`, ...).
So `watch_points()` returns each *potential* reason with the instant it fires (`fires_at`);
the read model stores them once per case version and the dashboard asks only
`fires_at <= now`, with an index, instead of re-reading every case on every page load.

The thresholds are policy-like data (`StuckPolicy`): a municipality may change them without
touching code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from models.case import CaseState, DeadlineStatus, Stage

OVERDUE_PREFIX = "overdue:"
STAGE_TOO_LONG = "stage_too_long"
NO_FAMILY_CONTACT = "no_family_contact"
COMMITTEE_WAITING = "committee_waiting"
ACTIVITY_FAILING = "activity_failing"
WORKFLOW_TASK_FAILING = "workflow_task_failing"
WORKFLOW_NOT_RUNNING = "workflow_not_running"
WORKFLOW_NOT_STARTED = "workflow_not_started"

BUSINESS_KINDS = (STAGE_TOO_LONG, NO_FAMILY_CONTACT, COMMITTEE_WAITING)
TECHNICAL_KINDS = (ACTIVITY_FAILING, WORKFLOW_TASK_FAILING, WORKFLOW_NOT_RUNNING,
                   WORKFLOW_NOT_STARTED)

# Who owns a technical reason: whoever runs the system, not the coordinator.
TECHNICAL_OWNER = "admin"
# Who owns a reason on a case that has no coordinator yet.
UNASSIGNED_OWNER = "manager"


class StuckPolicy(BaseModel):
    """Thresholds for the business reasons (days), and for the technical ones (attempts)."""

    # How long a stage may take before a manager should look. `active` is missing on
    # purpose: an active case lives for years; its status meetings and follow-ups are
    # deadlines and show up as `overdue:*` when missed.
    stage_expected_days: dict[str, int] = Field(default_factory=lambda: {
        Stage.referred.value: 5,
        Stage.coordinator_assigned.value: 14,
        Stage.team_formed.value: 21,
        Stage.assessment.value: 120,
        Stage.planning.value: 60,
        Stage.escalated.value: 21,
    })
    # The family's chosen contact cadence (contact_preference) -> days without contact.
    contact_cadence_days: dict[str, int] = Field(default_factory=lambda: {
        "close": 14, "normal": 30, "space": 60,
    })
    # A committee item still waiting this many days after the meeting it was on.
    committee_meeting_grace_days: int = 2
    # Fallback when the case's policy does not say: days the committee has to decide.
    committee_decision_days: int = 21
    # A pending activity on its Nth attempt (N-1 failures) is "failing".
    activity_failing_attempts: int = 3
    # A workflow task on its Nth attempt: it failed (N-1) times, e.g. non-determinism.
    workflow_task_failing_attempts: int = 2
    # A workflow started this long ago whose first workflow task no worker has completed.
    workflow_not_started_seconds: float = 60


DEFAULT_POLICY = StuckPolicy()


@dataclass(frozen=True)
class Reason:
    """One reason a case needs a manager: what, since when, who owes the next step."""

    kind: str
    since: datetime
    owner: str
    detail: str
    # When the reason becomes true (business reasons); technical reasons are true when seen.
    fires_at: datetime

    @property
    def technical(self) -> bool:
        return self.kind in TECHNICAL_KINDS

    def as_dict(self) -> dict:
        return {"kind": self.kind, "since": self.since, "owner": self.owner, "detail": self.detail}


# ---------------------------------------------------------------- business reasons


def last_family_contact(state: CaseState) -> datetime | None:
    """The newest moment the family was in touch: a recorded contact, a status meeting, or
    the family's own answer on a plan."""
    moments = [c.at for c in state.contacts]
    moments += [m.at for m in state.status_meetings]
    moments += [h.at for h in state.history if h.event in ("family_approved", "family_rejected")]
    return max(moments) if moments else None


def _owner(state: CaseState) -> str:
    return state.coordinator_id or UNASSIGNED_OWNER


def _days(td: timedelta) -> int:
    return max(int(td.total_seconds() // 86400), 0)


def watch_points(state: CaseState, policy: StuckPolicy = DEFAULT_POLICY,
                 case_policy: object | None = None) -> list[Reason]:
    """Every business reason this case version may produce, each with the instant it fires.

    A closed case is never stuck. The list depends only on the state, so it can be stored
    with the case version and queried by `fires_at <= now`. `case_policy` (the case's
    `domain.policy.Policy`) supplies the committee's decision days and the family's check-in
    cadence when it has them; `policy` the rest.
    """
    if state.stage is Stage.closed:
        return []
    points: list[Reason] = []
    owner = _owner(state)

    # 1. overdue deadlines: every open (or already overdue) deadline fires at its due time.
    for d in state.deadlines:
        if d.status not in (DeadlineStatus.open, DeadlineStatus.overdue):
            continue
        paused_since = getattr(d, "paused_since", None)
        if paused_since is not None and d.due_at > paused_since:
            continue  # the clock stopped before the deadline passed (waiting for the family)
        who = d.owner or owner
        points.append(Reason(
            kind=f"{OVERDUE_PREFIX}{d.kind.value}", since=d.due_at, owner=who,
            detail=f"{d.kind.value.replace('_', ' ')} deadline was due {d.due_at:%Y-%m-%d %H:%M} UTC"
                   + (f" ({d.legal_basis})" if d.legal_basis else ""),
            fires_at=d.due_at,
        ))

    # 2. the stage takes longer than expected.
    limit = policy.stage_expected_days.get(state.stage.value)
    if limit is not None:
        blocked = state.blocked_on
        waiting = f"; waiting for {blocked.what}" if blocked else ""
        points.append(Reason(
            kind=STAGE_TOO_LONG, since=state.stage_since,
            owner=(blocked.owner if blocked and blocked.owner else owner),
            detail=f"in stage {state.stage.value} longer than the expected {limit} days{waiting}",
            fires_at=state.stage_since + timedelta(days=limit),
        ))

    # 3. no contact with the family beyond its chosen cadence (not while the family asked for
    # a break: `paused`).
    cadences = getattr(case_policy, "family_checkin_days", None) or policy.contact_cadence_days
    cadence = cadences.get(state.contact_preference.value)
    if cadence is not None and not state.paused:
        last = last_family_contact(state)
        base = last or state.referral.received_at
        since_text = f"last contact {last:%Y-%m-%d}" if last else "no contact recorded since the referral"
        points.append(Reason(
            kind=NO_FAMILY_CONTACT, since=base, owner=owner,
            detail=f"{since_text}; the family chose '{state.contact_preference.value}' "
                   f"contact (every {cadence} days)",
            fires_at=base + timedelta(days=cadence),
        ))

    # 4. a committee item waits past its decision deadline, or past the meeting it was on.
    days = getattr(case_policy, "committee_decision_days", None) or policy.committee_decision_days
    for item in state.escalations:
        if item.status != "waiting":
            continue
        due = item.escalated_at + timedelta(days=days)
        why = f"decision due within {days} days of escalation"
        if item.meeting_at is not None:
            after_meeting = item.meeting_at + timedelta(days=policy.committee_meeting_grace_days)
            if after_meeting < due:
                due, why = after_meeting, f"on the agenda of {item.meeting_at:%Y-%m-%d} without a decision"
        points.append(Reason(
            kind=COMMITTEE_WAITING, since=item.escalated_at, owner="committee",
            detail=f"item {item.id} (plan v{item.plan_version}: {', '.join(item.reasons) or 'escalated'}) "
                   f"waits: {why}",
            fires_at=due,
        ))
    return points


def business_reasons(state: CaseState, now: datetime, policy: StuckPolicy = DEFAULT_POLICY,
                     case_policy: object | None = None) -> list[Reason]:
    """The business reasons that hold at `now`, oldest first."""
    fired = [r for r in watch_points(state, policy, case_policy) if r.fires_at <= now]
    return sorted(fired, key=lambda r: (r.since, r.kind))


# ---------------------------------------------------------------- technical reasons


@dataclass(frozen=True)
class PendingActivity:
    activity_type: str
    attempt: int
    last_failure: str | None = None
    last_failed_at: datetime | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True)
class WorkflowFacts:
    """What Temporal says about a case's workflow (built from describe() and, when the
    workflow task is failing, the newest history events). `status` is the lower-case
    execution status (`running`, `completed`, `failed`, `terminated`, `canceled`,
    `timed_out`, `continued_as_new`) or `not_found`."""

    status: str
    pending_activities: list[PendingActivity] = field(default_factory=list)
    workflow_task_attempt: int = 0
    workflow_task_since: datetime | None = None
    workflow_task_failure: str | None = None
    close_time: datetime | None = None
    # False while no worker has completed the workflow's first task (its search attributes
    # are still the ones given at start); `started_at`: when the workflow was started.
    first_task_done: bool = True
    started_at: datetime | None = None


def technical_reasons(facts: WorkflowFacts, seen_at: datetime,
                      policy: StuckPolicy = DEFAULT_POLICY) -> list[Reason]:
    """Technical reasons from what Temporal says; `seen_at` is when the check ran (their age
    starts when first seen unless Temporal tells us better)."""
    reasons: list[Reason] = []
    if facts.status != "running":
        since = facts.close_time or seen_at
        what = "does not exist in Temporal" if facts.status == "not_found" else f"is {facts.status}"
        reasons.append(Reason(
            kind=WORKFLOW_NOT_RUNNING, since=since, owner=TECHNICAL_OWNER,
            detail=f"the read model says the case is open, but its workflow {what}",
            fires_at=since,
        ))
        return reasons
    if not facts.first_task_done and facts.started_at is not None:
        waited = (seen_at - facts.started_at).total_seconds()
        if waited >= policy.workflow_not_started_seconds:
            reasons.append(Reason(
                kind=WORKFLOW_NOT_STARTED, since=facts.started_at, owner=TECHNICAL_OWNER,
                detail=f"the case was created {int(waited)} s ago, but no case worker has run its "
                       "workflow yet (its clocks are not running): the case workers are behind "
                       "or down",
                fires_at=facts.started_at,
            ))
    for act in facts.pending_activities:
        if act.attempt >= policy.activity_failing_attempts:
            since = act.scheduled_at or act.last_failed_at or seen_at
            failure = f": {act.last_failure}" if act.last_failure else ""
            reasons.append(Reason(
                kind=ACTIVITY_FAILING, since=since, owner=TECHNICAL_OWNER,
                detail=f"activity {act.activity_type} on attempt {act.attempt}{failure}",
                fires_at=since,
            ))
    if facts.workflow_task_attempt >= policy.workflow_task_failing_attempts:
        since = facts.workflow_task_since or seen_at
        failure = f": {facts.workflow_task_failure}" if facts.workflow_task_failure else ""
        reasons.append(Reason(
            kind=WORKFLOW_TASK_FAILING, since=since, owner=TECHNICAL_OWNER,
            detail=f"workflow task on attempt {facts.workflow_task_attempt}{failure}",
            fires_at=since,
        ))
    return reasons


# ---------------------------------------------------------------- presentation helpers


def reason_family(kind: str) -> str:
    """`overdue:assessment` -> `overdue`; other kinds are their own family."""
    return "overdue" if kind.startswith(OVERDUE_PREFIX) else kind


def age_text(since: datetime, now: datetime) -> str:
    """A manager-friendly age: '3 h', '12 days', '5 months'."""
    delta = now - since
    seconds = delta.total_seconds()
    if seconds < 0:
        return "not yet"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    days = _days(delta)
    if days < 60:
        return f"{days} day" + ("" if days == 1 else "s")
    return f"{days // 30} months"
