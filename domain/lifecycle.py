"""The stage machine and the decision rule (DESIGN §3, §5), as plain functions over CaseState.

Every command is `apply_<command>(state, body, ctx)`: it either raises `Refusal` having changed
nothing the caller keeps (the workflow validator runs it on a copy) or mutates `state`.
Refusals are checked in the contract's order: 403 (who) before 409 (stage / closed / cap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from domain import access, clocks
from domain import consent as cs
from domain import deadlines as dl
from domain import outcomes as oc
from domain.calendar import next_weekly_meeting
from models.case import (
    Actor,
    AssessmentContent,
    AssessmentExtension,
    AssessmentMeeting,
    AssignCoordinator,
    BlockedOn,
    CaseCreate,
    CaseState,
    CastVote,
    ChangeConsent,
    CloseCase,
    Closure,
    CommitteeDecision,
    CommitteeDecisionKind,
    CompleteAssessment,
    ConfirmFocusPoints,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactKind,
    CoordinatorTerm,
    DeadlineKind,
    EscalationItem,
    ExtendAssessment,
    FamilyMember,
    FamilyResponse,
    FocusPoints,
    FocusPointsEntry,
    FormTeam,
    GiveConsent,
    HistoryEntry,
    Pause,
    PauseCase,
    PauseRequest,
    PauseRequestEntry,
    PlanDraft,
    PlannedMeeting,
    PlanVersion,
    ProvisionalAssessment,
    ProvisionalAssessmentIn,
    RecordContact,
    RecordStatusMeeting,
    RevokeConsent,
    ScheduleAssessmentMeeting,
    ScheduleStatusMeeting,
    SetContactPreference,
    Stage,
    StatusMeeting,
    TeamMember,
    Triage,
    Vote,
    VoteValue,
)
from models.commands import BODY_MODELS, CommandInput
from models.outcomes import Occasion, OutcomeIn, RecordOutcomes
from models.policy import Policy

# The first words of a refusal of a command sent from a page that was out of date.
STALE = ("The case changed since this page was loaded; nothing was applied. "
         "Check what changed, then send it again.")


class Refusal(Exception):
    """A business refusal. `kind` maps to HTTP: forbidden 403, conflict 409, invalid 422."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def forbidden(message: str) -> Refusal:
    return Refusal("forbidden", message)


def conflict(message: str) -> Refusal:
    return Refusal("conflict", message)


def invalid(message: str) -> Refusal:
    return Refusal("invalid", message)


@dataclass(frozen=True)
class Ctx:
    actor: Actor
    now: datetime
    policy: Policy
    # The departments of the staff directory, as the API knows them (consent commands check
    # a named department against them); None: not told.
    departments: frozenset[str] | None = None


# ---------------------------------------------------------------- who may do what


def is_admin(actor: Actor) -> bool:
    return "admin" in actor.roles and not access.is_family(actor)


def is_manager(actor: Actor) -> bool:
    return is_admin(actor) or ("manager" in actor.roles and not access.is_family(actor))


# What a family member signed in to the portal may do on their own case (DESIGN §11).
FAMILY_COMMANDS = frozenset({
    "family_response", "give_consent", "change_consent", "revoke_consent",
    "set_contact_preference", "family_focus_points", "request_pause",
})
# ... of which these only a parent (a child's consent is given by the parents; the plan is
# approved by them).
PARENT_COMMANDS = frozenset({"family_response", "give_consent", "change_consent", "revoke_consent"})


def family_member(state: CaseState, actor: Actor) -> FamilyMember:
    """The signed-in family member of this case (403 for another case or an unknown member)."""
    if actor.case_id != state.id or actor.member_id is None:
        raise forbidden(access.NOT_YOUR_FAMILY)
    member = next((m for m in state.family.members if m.id == actor.member_id), None)
    if member is None:
        raise forbidden(access.NOT_YOUR_FAMILY)
    return member


def require_family_command(state: CaseState, name: str, actor: Actor) -> None:
    if name not in FAMILY_COMMANDS:
        raise forbidden("A family member cannot do this; the family coordinator does it.")
    member = family_member(state, actor)
    if name in PARENT_COMMANDS and member.role.value != "parent":
        raise forbidden("Only a parent of the family can do this.")


def require_worker_or_family(state: CaseState, actor: Actor) -> None:
    """The case's coordinator, a manager, an admin — or the family of this very case (whose
    rights `execute` has already checked)."""
    if access.is_family(actor):
        family_member(state, actor)
        return
    require_case_worker(state, actor)


def require_case_worker(state: CaseState, actor: Actor) -> None:
    """The case's coordinator, a manager or an admin."""
    if is_manager(actor) or actor.id == state.coordinator_id:
        return
    raise forbidden(f"Only the case's coordinator or a manager may do this (you are '{actor.id}').")


def require_team(state: CaseState, actor: Actor) -> None:
    if is_manager(actor) or actor.id in state.team_ids:
        return
    raise forbidden(f"'{actor.id}' is not on this case's core team.")


def require_open(state: CaseState) -> None:
    if state.stage is Stage.closed:
        closure = state.closure
        reason = f" ({closure.reason.value})" if closure else ""
        raise conflict(f"The case is closed{reason}; a closed case is read-only.")


def require_stage(state: CaseState, allowed: set[Stage], doing: str) -> None:
    require_open(state)
    if state.stage not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise conflict(
            f"Cannot {doing} while the case is in stage '{state.stage.value}' "
            f"(allowed in: {names})."
        )


def _not_in_future(at: datetime, now: datetime, what: str) -> None:
    if at > now + timedelta(minutes=5):
        raise invalid(f"The {what} time {at.isoformat()} is in the future; record it after it happened.")


# ---------------------------------------------------------------- helpers


def _record(state: CaseState, ctx: Ctx, event: str, **detail: object) -> None:
    state.history.append(HistoryEntry(at=ctx.now, actor=ctx.actor.id, event=event, detail=detail))


def _enter(state: CaseState, stage: Stage, ctx: Ctx) -> None:
    if state.stage is not stage:
        _record(state, ctx, "stage_changed", **{"from": state.stage.value, "to": stage.value})
        state.stage = stage
        state.stage_since = ctx.now


def pending_draft(state: CaseState) -> PlanVersion | None:
    plan = state.plan
    if plan and plan.status == "draft":
        return plan
    return None


def _waiting_item(state: CaseState) -> EscalationItem | None:
    return next((i for i in state.escalations if i.status == "waiting"), None)


def _stage_after_committee(state: CaseState) -> Stage:
    # An active case whose adjusted plan went to the committee keeps its plan in force.
    return Stage.active if state.active_plan else Stage.planning


def normalise_paragraph(paragraph: str) -> str:
    return re.sub(r"\s+", " ", paragraph).strip()


# ---------------------------------------------------------------- create


def new_case(
    case_id: str, body: CaseCreate, ctx: Ctx, possible_duplicates: list[str] | None = None,
    consent_rules: bool = True, outcome_rules: bool = False,
) -> CaseState:
    """`consent_rules`: False only for the replay of a case started before consents existed.
    `outcome_rules`: the close body's outcomes checked against the instruments; True for every
    case started now (the API passes it; the workflow turns it on behind its patch)."""
    policy = ctx.policy
    family = body.family
    if family.language is None:
        family = family.model_copy(update={"language": policy.default_language})
    state = CaseState(
        id=case_id,
        stage=Stage.referred,
        stage_since=ctx.now,
        created_at=ctx.now,
        created_by=ctx.actor.id,
        policy_key=policy.key,
        country=policy.country,
        policy=policy,
        referral=body.referral,
        family=family,
        existing_contacts=body.existing_contacts,
        consent=body.consent,
        contact_preference=body.contact_preference,
        concern_level=body.concern_level or policy.default_concern_level,
        unit=body.unit or ctx.actor.unit,
        outcome_rules=outcome_rules,
    )
    dl.initial_deadlines(state, policy)
    _record(
        state,
        ctx,
        "referral_registered",
        source=body.referral.source.value,
        kind=body.referral.kind.value,
        received_at=body.referral.received_at.isoformat(),
    )
    eligibility = check_eligibility(state, policy)
    if eligibility:
        state.flags.append({"kind": "eligibility", "detail": eligibility})
    if not body.consent.coordinated_handling:
        state.flags.append(
            {"kind": "no_consent", "detail": "The family has not consented to coordinated handling."}
        )
    if possible_duplicates:
        state.flags.append(
            {
                "kind": "possible_duplicate",
                "detail": "A family member is already on an open case: link it or confirm a new case.",
                "case_ids": possible_duplicates,
            }
        )
    if consent_rules:  # the referral's consent (derived by the model) and its renewal clock
        cs.enable(state, ctx.now, tell=False)
        if state.consents[0].status is ConsentStatus.expired:
            state.flags.append({
                "kind": "consent_expired",
                "detail": f"The referral's consent ended on {body.consent.valid_until}: it covers "
                          "nobody but the coordinator until the family gives a new one."})
    return finish(state, ctx)


def check_eligibility(state: CaseState, policy: Policy) -> list[str]:
    """Shown, not enforced (DESIGN §3.1): what the referral lacks against the policy."""
    problems: list[str] = []
    low, high = policy.child_age_band
    received = state.referral.received_at.date()
    children = [m for m in state.family.members if m.role.value == "child"]
    in_band = [
        m
        for m in children
        if m.birth_date is None
        or low <= (received.year - m.birth_date.year
                   - ((received.month, received.day) < (m.birth_date.month, m.birth_date.day)))
        <= high
    ]
    if not any(m.diagnoses for m in in_band):
        problems.append(f"No child aged {low}-{high} with a recorded disability or diagnosis.")
    departments = {c.sector_area or c.department for c in state.existing_contacts}
    if len(departments) < policy.min_sector_areas:
        problems.append(
            f"Support from {len(departments)} sector area(s); the model expects at least "
            f"{policy.min_sector_areas}."
        )
    return problems


# ---------------------------------------------------------------- commands


def apply_assign_coordinator(
    state: CaseState, body: AssignCoordinator, ctx: Ctx, load: int, suggestion: str | None
) -> None:
    actor = ctx.actor
    if not is_manager(actor):
        if "coordinator" not in actor.roles:
            raise forbidden(f"Only a coordinator or a manager can take a case ('{actor.id}' is neither).")
        if body.coordinator_id != actor.id:
            raise forbidden("Only a manager can assign another coordinator.")
        if state.coordinator_id is not None:
            raise forbidden("This case already has a coordinator; ask a manager to reassign it.")
        if body.override:
            raise forbidden("Only a manager can pass the caseload cap.")
    require_open(state)
    if body.coordinator_id == state.coordinator_id:
        raise conflict(f"'{body.coordinator_id}' is already the coordinator of this case.")
    cap = ctx.policy.caseload_cap
    if load >= cap and not body.override:
        hint = f" Least-loaded coordinator: '{suggestion}'." if suggestion else ""
        raise conflict(
            f"'{body.coordinator_id}' already has {load} open cases (cap {cap}). "
            f"A manager can override with \"override\": true.{hint}"
        )
    for term in state.coordinator_history:
        if term.until is None:
            term.until = ctx.now
    state.coordinator_history.append(
        CoordinatorTerm(
            coordinator_id=body.coordinator_id,
            since=ctx.now,
            assigned_by=actor.id,
            override=body.override and load >= cap,
        )
    )
    previous = state.coordinator_id
    state.coordinator_id = body.coordinator_id
    _record(
        state,
        ctx,
        "coordinator_assigned" if previous is None else "coordinator_reassigned",
        coordinator_id=body.coordinator_id,
        previous=previous,
        override=body.override and load >= cap,
    )
    if state.stage is Stage.referred:
        _enter(state, Stage.coordinator_assigned, ctx)


def apply_form_team(state: CaseState, body: FormTeam, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    require_stage(
        state,
        {Stage.coordinator_assigned, Stage.team_formed, Stage.assessment, Stage.planning,
         Stage.active},
        "form the core team",
    )
    ids = [m.staff_id for m in body.members]
    if len(set(ids)) != len(ids):
        raise invalid("A staff member is listed twice in the team.")
    state.team = [
        TeamMember(**m.model_dump()) for m in body.members if m.staff_id != state.coordinator_id
    ]
    _record(state, ctx, "team_formed", members=ids)
    if state.stage is Stage.coordinator_assigned:
        _enter(state, Stage.team_formed, ctx)
    plan = pending_draft(state)
    if state.consent_rules and plan is not None and plan.decision == "pending" and plan.votes:
        # A member whose vote the plan waited for (e.g. without the family's consent) left.
        _decide_when_all_voted(state, plan, ctx)


def apply_record_contact(state: CaseState, body: RecordContact, ctx: Ctx) -> None:
    require_team(state, ctx.actor)
    require_open(state)
    _not_in_future(body.at, ctx.now, "contact")
    _contact(state, body, ctx)


def _contact(state: CaseState, body: RecordContact, ctx: Ctx) -> None:
    state.contacts.append(Contact(kind=body.kind, at=body.at, notes=body.notes, by=ctx.actor.id))
    dl.satisfy(state, DeadlineKind.first_contact, body.at, "contact")
    meeting = state.planned_meeting or state.assessment_meeting
    window = timedelta(days=ctx.policy.pre_meeting_contact_window_days)
    if meeting and meeting.at - window <= body.at <= meeting.at:
        dl.satisfy(state, DeadlineKind.pre_meeting_contact, body.at, "contact")
    _next_checkin(state, body.at, ctx)
    _record(state, ctx, "contact_recorded", kind=body.kind.value, at=body.at.isoformat())


def _next_checkin(state: CaseState, after: datetime, ctx: Ctx) -> None:
    """The coordinator's next check-in, by the family's contact preference (never statutory)."""
    dl.satisfy(state, DeadlineKind.family_checkin, after, "contact")
    days = ctx.policy.family_checkin_days.get(state.contact_preference.value, 30)
    dl.add_deadline(state, ctx.policy, DeadlineKind.family_checkin,
                    dl.due_in_days(ctx.policy, DeadlineKind.family_checkin, after, days),
                    state.coordinator_id, now=ctx.now)


def apply_pause(state: CaseState, body: PauseCase, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    require_open(state)
    if state.paused:
        raise conflict("The case is already paused.")
    state.paused = True
    state.pauses.append(Pause(since=ctx.now, reason=body.reason,
                              waiting_for_family=body.waiting_for_family, by=ctx.actor.id))
    for i, request in enumerate(state.pause_requests):
        if request.handled_at is None:  # the family's request for a pause is answered
            state.pause_requests[i] = request.model_copy(update={"handled_at": ctx.now})
    stopped = clocks.pause(state, ctx.now) if body.waiting_for_family else []
    _record(state, ctx, "case_paused", waiting_for_family=body.waiting_for_family,
            clocks_paused=stopped)


def apply_resume(state: CaseState, body: None, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    require_open(state)
    if not state.paused:
        raise conflict("The case is not paused.")
    state.paused = False
    state.pauses[-1].until = ctx.now
    resumed = clocks.resume(state, ctx.now)
    _record(state, ctx, "case_resumed", clocks_resumed=resumed)


def apply_provisional_assessment(state: CaseState, body: ProvisionalAssessmentIn, ctx: Ctx) -> None:
    """When the statutory assessment deadline is missed the law asks for a recorded provisional
    assessment; the case stays overdue until the assessment is complete."""
    require_case_worker(state, ctx.actor)
    require_open(state)
    late = [d for d in dl.open_deadlines(state, DeadlineKind.assessment) if d.due_at <= ctx.now]
    if not late:
        raise conflict("The assessment deadline has not passed (or the assessment is complete); "
                       "a provisional assessment is recorded when the deadline is missed.")
    state.provisional_assessments.append(
        ProvisionalAssessment(at=ctx.now, by=ctx.actor.id, text=body.text))
    _record(state, ctx, "provisional_assessment_recorded")


def apply_extend_assessment(state: CaseState, body: ExtendAssessment, ctx: Ctx) -> None:
    if not (is_manager(ctx.actor) or "committee" in ctx.actor.roles):
        raise forbidden("Only the committee (or a manager on its behalf) extends the assessment deadline.")
    require_open(state)
    if not ctx.policy.assessment_extension_allowed:
        raise conflict(f"The {ctx.policy.country} policy has no extension of the assessment deadline.")
    deadline = next(iter(dl.open_deadlines(state, DeadlineKind.assessment)), None)
    if deadline is None:
        raise conflict("The assessment is already complete.")
    if body.new_due_at <= deadline.due_at:
        raise invalid("The new assessment deadline must be later than the current one.")
    state.assessment_extensions.append(AssessmentExtension(
        at=ctx.now, by=ctx.actor.id, new_due_at=body.new_due_at, decision_ref=body.decision_ref,
        reason=body.reason))
    rule = ctx.policy.clock(DeadlineKind.assessment.value)
    deadline.due_at = body.new_due_at
    deadline.status = deadline.status.open
    deadline.remind_at = dl.reminders(body.new_due_at, rule.remind_before_days, ctx.policy.timezone)
    deadline.reminders_sent = []  # the clock starts over; what fired before stays in history
    _record(state, ctx, "assessment_extended", new_due_at=body.new_due_at.isoformat(),
            decision_ref=body.decision_ref)


def apply_triage(state: CaseState, body: Triage, ctx: Ctx) -> None:
    """Concern report triage (Barnets Lov §§ 136-137) and the receipt to the reporter."""
    require_case_worker(state, ctx.actor)
    require_open(state)
    if not dl.open_deadlines(state, DeadlineKind.concern_triage) and not dl.open_deadlines(
        state, DeadlineKind.reporter_receipt
    ):
        raise conflict("This case has no concern report waiting for triage or a receipt.")
    dl.satisfy(state, DeadlineKind.concern_triage, ctx.now, "triage")
    if body.receipt_sent_to_reporter:
        dl.satisfy(state, DeadlineKind.reporter_receipt, ctx.now, "triage")
    _record(
        state,
        ctx,
        "concern_triaged",
        child_in_danger=body.child_in_danger,
        urgent_action=body.urgent_action,
    )


def apply_schedule_assessment_meeting(
    state: CaseState, body: ScheduleAssessmentMeeting, ctx: Ctx
) -> None:
    require_case_worker(state, ctx.actor)
    require_stage(state, {Stage.team_formed, Stage.assessment}, "schedule the assessment meeting")
    team = set(state.team_ids)
    if state.consent_rules:
        team -= cs.uncovered(state)  # they may not hear of the case, let alone meet the family
    present = [p for p in dict.fromkeys(body.participants) if p in team]
    if len(present) < 2:
        pending = sorted(set(state.team_ids) - team)
        waiting = (f"; the family has not consented to share the case with "
                   f"{', '.join(pending)}" if pending else "")
        raise invalid(
            "The assessment meeting needs at least two core-team members among the participants "
            f"(found {len(present)}; the core team is: {', '.join(sorted(team)) or 'nobody yet'}"
            f"{waiting})."
        )
    if body.at < ctx.now - timedelta(days=1):
        raise invalid("The assessment meeting must be scheduled in the future.")
    rescheduled = state.assessment_meeting is not None
    state.assessment_meeting = AssessmentMeeting(
        at=body.at, location=body.location, participants=body.participants
    )
    dl.cancel(state, DeadlineKind.pre_meeting_contact)
    deadline = dl.add_deadline(
        state, ctx.policy, DeadlineKind.pre_meeting_contact, body.at, state.coordinator_id,
        now=ctx.now,
    )
    window = timedelta(days=ctx.policy.pre_meeting_contact_window_days)
    earlier = [c for c in state.contacts if body.at - window <= c.at <= body.at]
    if earlier:
        deadline.status, deadline.met_at = deadline.status.met, earlier[-1].at
        deadline.satisfied_by = "contact"
    _record(
        state,
        ctx,
        "assessment_meeting_rescheduled" if rescheduled else "assessment_meeting_scheduled",
        at=body.at.isoformat(),
        participants=body.participants,
    )
    _enter(state, Stage.assessment, ctx)


def apply_schedule_status_meeting(state: CaseState, body: ScheduleStatusMeeting, ctx: Ctx) -> None:
    """Plan the next status meeting: the coordinator must talk with the family before it
    (pre-meeting contact), and the participants and the family are invited."""
    require_case_worker(state, ctx.actor)
    require_stage(state, {Stage.active}, "schedule a status meeting")
    if body.at <= ctx.now:
        raise invalid("A status meeting is scheduled in the future; record a held one with "
                      "POST .../status-meetings.")
    previous = state.planned_meeting
    state.planned_meeting = PlannedMeeting(
        number=len(state.status_meetings) + 1, at=body.at, location=body.location,
        participants=body.participants, sequence=previous.sequence + 1 if previous else 0,
    )
    dl.cancel(state, DeadlineKind.pre_meeting_contact)
    dl.add_deadline(state, ctx.policy, DeadlineKind.pre_meeting_contact, body.at,
                    state.coordinator_id, now=ctx.now)
    _record(state, ctx, "status_meeting_rescheduled" if previous else "status_meeting_scheduled",
            number=state.planned_meeting.number, at=body.at.isoformat())


def apply_put_assessment(state: CaseState, body: AssessmentContent, ctx: Ctx) -> None:
    require_team(state, ctx.actor)
    # Also while planning: the child's views (or a waiver) may be recorded after the assessment
    # was completed; without them no plan can be decided (require_child_voice).
    require_stage(state, {Stage.assessment, Stage.planning}, "record the ICS assessment")
    known = ctx.policy.ics_dimensions
    for side, entries in body.ics.items():
        allowed = set(known.get(side, []))
        unknown = [e.dimension for e in entries if allowed and e.dimension not in allowed]
        if unknown:
            raise invalid(
                f"Unknown {side} dimension(s) {unknown}; this municipality uses: {sorted(allowed)}."
            )
    state.assessment = body
    _record(state, ctx, "assessment_recorded", dimensions=sum(len(v) for v in body.ics.values()))


def apply_complete_assessment(state: CaseState, body: CompleteAssessment | None, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    require_stage(state, {Stage.assessment}, "complete the assessment")
    if state.assessment is None or not any(state.assessment.ics.values()):
        raise conflict("Record the ICS assessment (PUT .../assessment) before completing it.")
    if body is not None:
        _measure(state, body.measurements, "assessment", ctx)
    state.assessment_completed_at = ctx.now
    dl.satisfy(state, DeadlineKind.assessment, ctx.now, "assessment_completed")
    dl.cancel(state, DeadlineKind.pre_meeting_contact)
    dl.add_deadline(
        state,
        ctx.policy,
        DeadlineKind.plan,
        dl.due_in_months(ctx.policy, DeadlineKind.plan, ctx.now, ctx.policy.plan_months),
        state.coordinator_id,
        now=ctx.now,
    )
    _record(state, ctx, "assessment_completed")
    _enter(state, Stage.planning, ctx)


def _check_plan(body: PlanDraft) -> None:
    goal_ids = [g.id for g in body.goals]
    if len(set(goal_ids)) != len(goal_ids):
        raise invalid("Two goals share the same id.")
    for action in body.actions:
        if action.goal_id is not None and action.goal_id not in goal_ids:
            raise invalid(f"Action '{action.id}' refers to goal '{action.goal_id}', not in the plan.")
    for service in body.services:
        if service.funding:
            total = sum(f.share for f in service.funding)
            if abs(total - 1.0) > 0.001:
                raise invalid(
                    f"The funding shares of service '{service.name}' add up to {total:g}, not 1."
                )


def _new_plan_version(state: CaseState, body: PlanDraft, ctx: Ctx) -> PlanVersion:
    draft = pending_draft(state)
    if draft is not None:
        draft.status = "superseded"
    dl.cancel(state, DeadlineKind.family_approval)
    plan = PlanVersion(
        version=len(state.plans) + 1,
        family_goals=body.family_goals,
        goals=body.goals,
        actions=body.actions,
        services=body.services,
        created_at=ctx.now,
        created_by=ctx.actor.id,
    )
    state.plans.append(plan)
    dl.add_deadline(
        state,
        ctx.policy,
        DeadlineKind.family_approval,
        dl.due_in_days(ctx.policy, DeadlineKind.family_approval, ctx.now,
                       ctx.policy.family_approval_days),
        state.coordinator_id,
        now=ctx.now,
    )
    _record(state, ctx, "plan_drafted", version=plan.version, services=len(plan.services))
    return plan


def apply_put_plan(state: CaseState, body: PlanDraft, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    if state.stage is Stage.escalated:
        item = _waiting_item(state)
        raise conflict(
            f"Plan v{item.plan_version if item else '?'} is with the visitation committee; "
            "wait for its decision before drafting a new version."
        )
    require_stage(state, {Stage.planning, Stage.active}, "draft the joint plan")
    _check_plan(body)
    _new_plan_version(state, body, ctx)


def escalation_reasons(plan: PlanVersion, policy: Policy) -> list[str]:
    """The decision rule once every vote is in and all agree (DESIGN §5)."""
    reasons: list[str] = []
    committee_only = {normalise_paragraph(p) for p in policy.committee_only_paragraphs}
    for service in plan.services:
        if normalise_paragraph(service.paragraph) in committee_only:
            reasons.append(f"committee_only_paragraph: {normalise_paragraph(service.paragraph)}")
    joint = sum(
        s.monthly_cost for s in plan.services if len({f.department for f in s.funding}) > 1
    )
    if joint > policy.team_funding_limit:
        reasons.append(f"joint_funding_over_limit: {joint:g} > {policy.team_funding_limit:g}")
    return reasons


def _escalate(state: CaseState, plan: PlanVersion, reasons: list[str], ctx: Ctx) -> None:
    plan.decision = "escalated"
    plan.escalation_reasons = reasons
    item = EscalationItem(
        id=f"{state.id}-{len(state.escalations) + 1}",
        case_id=state.id,
        plan_version=plan.version,
        reasons=reasons,
        escalated_at=ctx.now,
        meeting_at=next_weekly_meeting(
            ctx.now, ctx.policy.committee_weekday, ctx.policy.committee_time, ctx.policy.timezone
        ),
    )
    state.escalations.append(item)
    dl.add_deadline(
        state,
        ctx.policy,
        DeadlineKind.committee_decision,
        dl.due_in_days(ctx.policy, DeadlineKind.committee_decision, ctx.now,
                       ctx.policy.committee_decision_days),
        "committee",
        now=ctx.now,
    )
    _record(state, ctx, "escalated", item_id=item.id, plan_version=plan.version, reasons=reasons)
    _enter(state, Stage.escalated, ctx)


def _maybe_activate(state: CaseState, plan: PlanVersion, ctx: Ctx) -> None:
    """A version becomes the active plan when decided AND approved by the family, either order."""
    if plan.decision not in ("team", "committee") or plan.family_approved is not True:
        return
    for other in state.plans:
        if other.status == "active":
            other.status = "superseded"
    plan.status = "active"
    dl.satisfy(state, DeadlineKind.plan, ctx.now, f"plan_v{plan.version}")
    _record(state, ctx, "plan_activated", version=plan.version, decided_by=plan.decision)
    if state.measures_started_at is None:
        state.measures_started_at = ctx.now
        dl.add_deadline(
            state,
            ctx.policy,
            DeadlineKind.first_followup,
            dl.due_in_months(ctx.policy, DeadlineKind.first_followup, ctx.now,
                             ctx.policy.first_followup_months),
            state.coordinator_id,
            now=ctx.now,
        )
        _schedule_next_status_meeting(state, ctx.now, ctx)
    _enter(state, Stage.active, ctx)


def _schedule_next_status_meeting(state: CaseState, after: datetime, ctx: Ctx) -> None:
    weeks = ctx.policy.status_meeting_weeks.get(state.concern_level, 4)
    dl.add_deadline(
        state,
        ctx.policy,
        DeadlineKind.status_meeting,
        dl.due_in_days(ctx.policy, DeadlineKind.status_meeting, after, 7 * weeks),
        state.coordinator_id,
        now=ctx.now,
    )


def require_child_voice(state: CaseState) -> None:
    a = state.assessment
    if a is None or not ((a.child_views or "").strip() or (a.child_views_waiver or "").strip()):
        raise conflict(
            "The child's views (or a reasoned waiver) must be recorded before the plan is "
            "decided (Barnets Lov § 5)."
        )


def apply_vote(state: CaseState, body: CastVote, ctx: Ctx) -> None:
    actor = ctx.actor
    if actor.id != body.staff_id and not is_admin(actor):
        raise forbidden(f"A vote is cast by the voter: '{actor.id}' cannot vote as '{body.staff_id}'.")
    if body.staff_id not in state.team_ids:
        raise forbidden(f"'{body.staff_id}' is not on this case's core team and cannot vote.")
    if state.consent_rules and body.staff_id in cs.uncovered(state):
        raise forbidden(
            f"The family has not consented to share this case with '{body.staff_id}', who "
            "therefore cannot vote; the plan waits for the family's consent or for their "
            "removal from the core team.")
    require_stage(state, {Stage.planning, Stage.active, Stage.escalated}, "vote on the plan")
    plan = pending_draft(state)
    if plan is None or plan.decision != "pending":
        if plan is not None and plan.decision == "escalated":
            raise conflict(f"Plan v{plan.version} is with the visitation committee; votes are closed.")
        raise conflict("There is no plan draft waiting for the team's votes.")
    if any(v.staff_id == body.staff_id for v in plan.votes):
        raise conflict(f"'{body.staff_id}' has already voted on plan v{plan.version}.")
    if body.vote is VoteValue.disagree and not body.reason.strip():
        raise invalid("A 'disagree' vote needs a reason, so the committee knows what to decide.")
    require_child_voice(state)
    plan.votes.append(Vote(staff_id=body.staff_id, vote=body.vote, reason=body.reason, at=ctx.now))
    _record(state, ctx, "vote_cast", version=plan.version, staff_id=body.staff_id,
            vote=body.vote.value)
    if body.vote is VoteValue.disagree:
        _escalate(state, plan, [f"disagreement: {body.staff_id}"], ctx)
        return
    _decide_when_all_voted(state, plan, ctx)


def _decide_when_all_voted(state: CaseState, plan: PlanVersion, ctx: Ctx) -> None:
    """The decision rule once every member of the core team has voted (all agreed: a
    disagreement escalates at once). A member the family's consent does not cover cannot vote:
    the plan waits for their consent or for their removal from the team."""
    voted = {v.staff_id for v in plan.votes}
    if not set(state.team_ids) <= voted:
        return
    reasons = escalation_reasons(plan, ctx.policy)
    if reasons:
        _escalate(state, plan, reasons, ctx)
        return
    plan.decision = "team"
    plan.decided_at = ctx.now
    _record(state, ctx, "plan_decided", version=plan.version, by="team")
    _maybe_activate(state, plan, ctx)


def apply_family_response(state: CaseState, body: FamilyResponse, ctx: Ctx) -> None:
    require_worker_or_family(state, ctx.actor)
    require_stage(
        state, {Stage.planning, Stage.escalated, Stage.active}, "record the family's response"
    )
    plan = pending_draft(state)
    if plan is None:
        raise conflict("There is no plan draft waiting for the family's response.")
    if plan.family_approved is True:
        raise conflict(f"The family has already approved plan v{plan.version}.")
    dl.satisfy(state, DeadlineKind.family_approval, ctx.now, "family_response")
    plan.family_comment = body.comment
    if body.approved:
        plan.family_approved = True
        _record(state, ctx, "family_approved", version=plan.version)
        _maybe_activate(state, plan, ctx)
        return
    plan.family_approved = False
    plan.status = "rejected"
    _record(state, ctx, "family_rejected", version=plan.version)
    item = _waiting_item(state)
    if item is not None and item.plan_version == plan.version:
        item.status = "withdrawn"
        dl.cancel(state, DeadlineKind.committee_decision)
        _record(state, ctx, "escalation_withdrawn", item_id=item.id)
    _enter(state, _stage_after_committee(state), ctx)


def apply_committee_decision(
    state: CaseState, item_id: str, body: CommitteeDecision, ctx: Ctx
) -> None:
    actor = ctx.actor
    if not (is_manager(actor) or "committee" in actor.roles):
        raise forbidden("Only the visitation committee (or a manager) records its decisions.")
    require_open(state)
    item = next((i for i in state.escalations if i.id == item_id), None)
    if item is None:
        raise Refusal("not_found", f"No committee item '{item_id}' on this case.")
    if item.status != "waiting":
        raise conflict(f"Committee item '{item_id}' is already {item.status}.")
    plan = next(p for p in state.plans if p.version == item.plan_version)
    if body.funding:
        total = sum(f.share for f in body.funding)
        if abs(total - 1.0) > 0.001:
            raise invalid(f"The decided funding shares add up to {total:g}, not 1.")
    if body.decision is not CommitteeDecisionKind.rejected:
        require_child_voice(state)
    item.status = "decided"
    item.decision = body.decision
    item.notes = body.notes
    item.funding = body.funding
    item.decided_at = ctx.now
    item.decided_by = actor.id
    dl.satisfy(state, DeadlineKind.committee_decision, ctx.now, "committee_decision")
    _record(state, ctx, "committee_decided", item_id=item.id, decision=body.decision.value)
    if body.decision is CommitteeDecisionKind.rejected:
        plan.decision = "rejected"
        plan.status = "rejected"
        dl.cancel(state, DeadlineKind.family_approval)
        _enter(state, _stage_after_committee(state), ctx)
        return
    plan.decision = "committee"
    plan.decided_at = ctx.now
    plan.committee_funding = body.funding
    if body.decision is CommitteeDecisionKind.approved_with_changes and plan.family_approved:
        # Changed by the committee: the family must see and approve what was decided.
        plan.family_approved = None
        dl.add_deadline(
            state,
            ctx.policy,
            DeadlineKind.family_approval,
            dl.due_in_days(ctx.policy, DeadlineKind.family_approval, ctx.now,
                           ctx.policy.family_approval_days),
            state.coordinator_id,
            now=ctx.now,
        )
    _maybe_activate(state, plan, ctx)
    if state.stage is Stage.escalated:
        _enter(state, _stage_after_committee(state), ctx)


def apply_status_meeting(state: CaseState, body: RecordStatusMeeting, ctx: Ctx) -> None:
    require_team(state, ctx.actor)
    require_stage(state, {Stage.active}, "record a status meeting")
    _not_in_future(body.at, ctx.now, "meeting")
    plan = state.active_plan
    goal_ids = {g.id for g in plan.goals} if plan else set()
    unknown = [g.goal_id for g in body.goal_progress if g.goal_id not in goal_ids]
    if unknown:
        raise invalid(f"Progress for goal(s) {unknown}, which are not in the active plan.")
    if body.plan_changes is not None:
        _check_plan(body.plan_changes)
    _measure(state, body.measurements, "status_meeting", ctx)
    if body.concern_level:
        state.concern_level = body.concern_level
    meeting = StatusMeeting(
        number=len(state.status_meetings) + 1,
        at=body.at,
        participants=body.participants,
        minutes=body.minutes,
        goal_progress=body.goal_progress,
        recorded_by=ctx.actor.id,
    )
    state.status_meetings.append(meeting)
    state.planned_meeting = None  # held
    dl.cancel(state, DeadlineKind.pre_meeting_contact)
    policy = ctx.policy
    if dl.open_deadlines(state, DeadlineKind.first_followup):
        dl.satisfy(state, DeadlineKind.first_followup, body.at, f"status_meeting_{meeting.number}")
        state.followup_months = body.followup_months or policy.followup_months
        dl.add_deadline(state, policy, DeadlineKind.followup,
                        dl.due_in_months(policy, DeadlineKind.followup, body.at, state.followup_months),
                        state.coordinator_id, now=ctx.now)
        _record(state, ctx, "followup_cadence_set", months=state.followup_months,
                reason=body.followup_reason or "policy default")
    elif dl.open_deadlines(state, DeadlineKind.followup):
        dl.satisfy(state, DeadlineKind.followup, body.at, f"status_meeting_{meeting.number}")
        if body.followup_months:
            state.followup_months = body.followup_months
        dl.add_deadline(state, policy, DeadlineKind.followup,
                        dl.due_in_months(policy, DeadlineKind.followup, body.at,
                                         state.followup_months or policy.followup_months),
                        state.coordinator_id, now=ctx.now)
    dl.satisfy(state, DeadlineKind.status_meeting, body.at, f"status_meeting_{meeting.number}")
    _next_checkin(state, body.at, ctx)
    _schedule_next_status_meeting(state, body.at, ctx)
    _record(state, ctx, "status_meeting_recorded", number=meeting.number, at=body.at.isoformat())
    if body.plan_changes is not None:
        meeting.new_plan_version = _new_plan_version(state, body.plan_changes, ctx).version


def apply_close(state: CaseState, body: CloseCase, ctx: Ctx) -> None:
    require_case_worker(state, ctx.actor)
    require_open(state)
    _measure(state, body.measurements, "closing", ctx)
    if body.outcomes and state.outcome_rules:
        # The older free-form object: checked, and mapped to measurements where it can be.
        try:
            mapped = oc.legacy_outcomes(ctx.policy.outcome_instruments, body.outcomes,
                                        ctx.now, ctx.actor.id, _goal_ids(state))
        except oc.OutcomeRefusal as refusal:
            raise invalid(refusal.message) from None
        _keep_measurements(state, mapped, "closing", ctx)
    state.closure = Closure(
        reason=body.reason, note=body.note, outcomes=body.outcomes, at=ctx.now, by=ctx.actor.id
    )
    dl.cancel(state)
    for item in state.escalations:
        if item.status == "waiting":
            item.status = "withdrawn"
    for term in state.coordinator_history:
        if term.until is None:
            term.until = ctx.now
    _record(state, ctx, "case_closed", reason=body.reason.value)
    _enter(state, Stage.closed, ctx)


# ---------------------------------------------------------------- outcome measures (§3.8)


def _goal_ids(state: CaseState) -> set[str]:
    plan = state.active_plan or state.plan
    return {g.id for g in plan.goals} if plan else set()


def _measure(state: CaseState, items: list[OutcomeIn], occasion: Occasion, ctx: Ctx) -> None:
    """Validate every measurement against the case's instruments (all or nothing: a refusal
    is a 422 and the command applies nothing) and keep them with their computed totals."""
    if not items:
        return
    try:
        new = oc.measure(ctx.policy.outcome_instruments, items, occasion, ctx.now, ctx.actor.id,
                         _goal_ids(state))
    except oc.OutcomeRefusal as refusal:
        raise invalid(refusal.message) from None
    _keep_measurements(state, new, occasion, ctx)


def _keep_measurements(state: CaseState, new: list, occasion: str, ctx: Ctx) -> None:
    if not new:
        return
    # A new list: the working copy shares the old one with the state a refusal keeps.
    state.outcome_measurements = [*state.outcome_measurements, *new]
    state.outcome_rules = True
    # Which instruments and informants, never the scores (personal data).
    _record(state, ctx, "outcomes_recorded", occasion=occasion,
            measurements=[f"{m.instrument}:{m.informant}" for m in new])


OUTCOME_STAGES = {Stage.assessment, Stage.planning, Stage.escalated, Stage.active}


def apply_record_outcomes(state: CaseState, body: RecordOutcomes, ctx: Ctx) -> None:
    """Measurements between the meetings (e.g. the teacher's SDQ that came back after the
    assessment meeting): occasion assessment until the plan is active, then status_meeting."""
    require_team(state, ctx.actor)
    require_stage(state, OUTCOME_STAGES, "record outcome measures")
    occasion = body.occasion or ("status_meeting" if state.stage is Stage.active else "assessment")
    if occasion == "status_meeting" and state.stage is not Stage.active:
        raise conflict("Outcome measures of a status meeting are recorded once the plan is active.")
    _measure(state, body.measurements, occasion, ctx)


# ---------------------------------------------------------------- consent and the family (§11)


def _consent_giver(state: CaseState, ctx: Ctx) -> FamilyMember | None:
    """The coordinator, a manager or admin (a consent given on paper), or a parent of this
    family (`execute` checked the family's rights). Returns the family member, if it is one."""
    require_worker_or_family(state, ctx.actor)
    return family_member(state, ctx.actor) if access.is_family(ctx.actor) else None


def _member(state: CaseState, member_id: str) -> FamilyMember:
    member = next((m for m in state.family.members if m.id == member_id), None)
    if member is None:
        ids = ", ".join(m.id or "?" for m in state.family.members)
        raise invalid(f"Family member '{member_id}' is not on this case (its members are {ids}).")
    return member


def _consent(state: CaseState, consent_id: str) -> ConsentRecord:
    consent = next((c for c in state.consents if c.id == consent_id), None)
    if consent is None:
        raise Refusal("not_found", f"No consent '{consent_id}' on this case.")
    return consent


def _still_active(consent: ConsentRecord, doing: str) -> None:
    if consent.status is ConsentStatus.revoked:
        when = consent.revoked_at.date().isoformat() if consent.revoked_at else "earlier"
        raise conflict(f"Consent {consent.id} was already revoked ({when}); "
                       f"record a new consent instead of trying to {doing} it.")
    if consent.status is ConsentStatus.expired:
        raise conflict(f"Consent {consent.id} has expired; record a new consent instead of "
                       f"trying to {doing} it.")


def _check_scope(state: CaseState, ctx: Ctx, staff_ids: list[str], departments: list[str],
                 covers: list[str], expires_at) -> None:
    if "case" not in covers:
        raise invalid("A consent covers the case (\"case\"), and may cover its documents too "
                      "(\"documents\").")
    unknown = cs.unknown_departments(state, departments, ctx.departments)
    if unknown:
        raise invalid(f"Unknown department(s) {', '.join(unknown)}: not a department of the "
                      "staff directory nor of the case's team.")
    if expires_at is not None and expires_at < cs.local_today(ctx.now, ctx.policy.timezone):
        raise invalid(f"The consent's expiry date {expires_at.isoformat()} is in the past.")


def apply_give_consent(state: CaseState, body: GiveConsent, ctx: Ctx) -> None:
    member = _consent_giver(state, ctx)
    require_open(state)
    giver = _member(state, body.member_id)
    if member is not None and giver.id != member.id:
        raise forbidden(f"You give a consent in your own name ('{member.id}'), not for "
                        f"'{giver.id}'.")
    staff_ids = list(dict.fromkeys(body.staff_ids))
    departments = list(dict.fromkeys(body.departments))
    covers = [c for c in ("case", "documents") if c in body.covers]
    if body.core_team and (staff_ids or departments):
        raise invalid("A consent for the whole core team names no staff or departments.")
    if not (body.core_team or staff_ids or departments):
        raise invalid("Name the professionals (staff_ids) or departments the family consents "
                      "to share the case with, or the whole core team (core_team).")
    _check_scope(state, ctx, staff_ids, departments, covers, body.expires_at)
    cs.enable(state, ctx.now)
    consent = ConsentRecord(
        id=f"c{len(state.consents) + 1}", member_id=giver.id, staff_ids=staff_ids,
        departments=departments, covers=covers, given_at=ctx.now, expires_at=body.expires_at,
        core_team=body.core_team, source="family" if member is not None else "paper",
        given_by=ctx.actor.id,
    )
    state.consents.append(consent)
    cs.start_renewal(state, consent, ctx.now)
    _record(state, ctx, "consent_given", consent_id=consent.id, member_id=giver.id,
            staff_ids=staff_ids, departments=departments, covers=covers,
            expires_at=body.expires_at.isoformat(), core_team=body.core_team)
    if member is not None:
        cs.notify(state, ctx.now, "consent_given", consent_id=consent.id, member_id=giver.id)


def apply_change_consent(state: CaseState, body: ChangeConsent, ctx: Ctx) -> None:
    member = _consent_giver(state, ctx)
    require_open(state)
    index = state.consents.index(_consent(state, body.consent_id))
    consent = state.consents[index]
    _still_active(consent, "change")
    changes = body.model_dump(exclude={"consent_id"}, exclude_none=True)
    if not changes:
        raise invalid("Nothing to change: give staff_ids, departments, covers or expires_at.")
    staff_ids = list(dict.fromkeys(body.staff_ids if body.staff_ids is not None else consent.staff_ids))
    departments = list(dict.fromkeys(
        body.departments if body.departments is not None else consent.departments))
    covers = [c for c in ("case", "documents") if c in (body.covers or consent.covers)]
    core_team = consent.core_team and not staff_ids and not departments
    if not (core_team or staff_ids or departments):
        raise invalid(f"Consent {consent.id} would cover nobody; revoke it instead.")
    _check_scope(state, ctx, staff_ids, departments if body.departments is not None else [],
                 covers, body.expires_at)
    cs.enable(state, ctx.now)
    before = cs.uncovered(state)
    changed = consent.model_copy(update={
        "staff_ids": staff_ids, "departments": departments, "covers": covers,
        "core_team": core_team,
        "expires_at": body.expires_at if body.expires_at is not None else consent.expires_at})
    state.consents[index] = changed
    if changed.expires_at != consent.expires_at:
        cs.start_renewal(state, changed, ctx.now)
    lost = sorted(cs.uncovered(state) - before)
    _record(state, ctx, "consent_changed", consent_id=consent.id,
            changed=sorted(changes), no_longer_covered=lost,
            expires_at=changed.expires_at.isoformat() if changed.expires_at else None)
    if member is not None or lost:
        cs.notify(state, ctx.now, "consent_changed", consent_id=consent.id,
                  no_longer_covered=lost, by=ctx.actor.id)


def apply_revoke_consent(state: CaseState, body: RevokeConsent, ctx: Ctx) -> None:
    _consent_giver(state, ctx)
    require_open(state)
    index = state.consents.index(_consent(state, body.consent_id))
    consent = state.consents[index]
    _still_active(consent, "revoke")
    cs.enable(state, ctx.now)
    before = cs.uncovered(state)
    state.consents[index] = consent.model_copy(update={
        "status": ConsentStatus.revoked, "revoked_at": ctx.now})
    cs.cancel_renewal(state, consent.id)
    lost = sorted(cs.uncovered(state) - before)
    _record(state, ctx, "consent_revoked", consent_id=consent.id, no_longer_covered=lost)
    if ctx.actor.id != state.coordinator_id:
        cs.notify(state, ctx.now, "consent_revoked", consent_id=consent.id,
                  no_longer_covered=lost, by=ctx.actor.id)


def apply_set_contact_preference(state: CaseState, body: SetContactPreference, ctx: Ctx) -> None:
    """The family's wish for how much contact it wants: changes the coordinator's check-in
    cadence (never a statutory deadline)."""
    require_worker_or_family(state, ctx.actor)
    require_open(state)
    if body.preference is state.contact_preference:
        raise conflict(f"The contact preference is already '{body.preference.value}'.")
    previous = state.contact_preference
    state.contact_preference = body.preference
    checkin = next(iter(dl.open_deadlines(state, DeadlineKind.family_checkin)), None)
    if checkin is not None:
        # The next check-in counts from the last contact with the new cadence.
        last = max((c.at for c in state.contacts), default=ctx.now)
        days = ctx.policy.family_checkin_days.get(body.preference.value, 30)
        dl.cancel(state, DeadlineKind.family_checkin)
        dl.add_deadline(state, ctx.policy, DeadlineKind.family_checkin,
                        dl.due_in_days(ctx.policy, DeadlineKind.family_checkin, last, days),
                        state.coordinator_id, now=ctx.now)
    _record(state, ctx, "contact_preference_changed",
            **{"from": previous.value, "to": body.preference.value})


def apply_family_focus_points(state: CaseState, body: FocusPoints, ctx: Ctx) -> None:
    require_worker_or_family(state, ctx.actor)
    require_open(state)
    if body.meeting_number is not None:
        planned = state.planned_meeting
        if planned is None or planned.number != body.meeting_number:
            which = f"status meeting {planned.number} is" if planned else "no status meeting is"
            raise invalid(f"Status meeting {body.meeting_number} is not planned ({which} planned).")
    member = family_member(state, ctx.actor) if access.is_family(ctx.actor) else None
    entry = FocusPointsEntry(
        number=len(state.focus_points) + 1, text=body.text,
        meeting_number=body.meeting_number if body.meeting_number is not None
        else (state.planned_meeting.number if state.planned_meeting else None),
        at=ctx.now, by=ctx.actor.id, member_id=member.id if member else None)
    state.focus_points.append(entry)
    _record(state, ctx, "family_focus_points", number=entry.number,
            meeting_number=entry.meeting_number)
    if ctx.actor.id != state.coordinator_id:
        cs.notify(state, ctx.now, "focus_points", number=entry.number,
                  meeting_number=entry.meeting_number)


def apply_confirm_focus_points(state: CaseState, body: ConfirmFocusPoints, ctx: Ctx) -> None:
    """The coordinator read the family's focus points: a recorded contact (kind message) at this
    moment, which counts as the pre-meeting contact of the meeting ahead."""
    require_case_worker(state, ctx.actor)
    require_open(state)
    index = next((i for i, f in enumerate(state.focus_points) if f.number == body.number), None)
    if index is None:
        raise Refusal("not_found", f"No focus points number {body.number} on this case.")
    entry = state.focus_points[index]
    if entry.confirmed_at is not None:
        raise conflict(f"Focus points {body.number} were already confirmed by "
                       f"'{entry.confirmed_by}'.")
    state.focus_points[index] = entry.model_copy(update={"confirmed_at": ctx.now,
                                                         "confirmed_by": ctx.actor.id})
    notes = body.notes or f"The family's focus points ({body.number}) read and confirmed."
    _contact(state, RecordContact(kind=ContactKind.message, at=ctx.now, notes=notes), ctx)
    _record(state, ctx, "focus_points_confirmed", number=body.number)


def apply_request_pause(state: CaseState, body: PauseRequest, ctx: Ctx) -> None:
    """The family asks for a break: recorded and the coordinator told; the coordinator then
    pauses the case (the `pause` command)."""
    require_worker_or_family(state, ctx.actor)
    require_open(state)
    if state.paused:
        raise conflict("The case is already paused.")
    member = family_member(state, ctx.actor) if access.is_family(ctx.actor) else None
    entry = PauseRequestEntry(number=len(state.pause_requests) + 1, reason=body.reason,
                              at=ctx.now, by=ctx.actor.id, member_id=member.id if member else None)
    state.pause_requests.append(entry)
    _record(state, ctx, "pause_requested", number=entry.number)
    cs.notify(state, ctx.now, "pause_requested", number=entry.number)


# ---------------------------------------------------------------- after every command


def blocked_on(state: CaseState) -> BlockedOn | None:
    """What the case waits for, who owes it, since when (DESIGN §3.10)."""
    since = state.stage_since
    nxt = dl.next_due(state)
    coordinator = state.coordinator_id
    pending = cs.pending_members(state) if state.consent_rules else []
    match state.stage:
        case Stage.closed:
            return None
        case stage if pending and stage is not Stage.escalated:
            what = ("the family's consent to share with "
                    + ", ".join(cs.describe(m) for m in pending))
            owner = "family"
            since = min((m.pending_since for m in pending if m.pending_since), default=since)
        case Stage.referred:
            what, owner = "coordinator assignment", "manager"
        case Stage.coordinator_assigned:
            what, owner = "core team", coordinator
        case Stage.team_formed:
            what, owner = "assessment meeting to be scheduled", coordinator
        case Stage.assessment:
            what, owner = "ICS assessment", coordinator
        case Stage.escalated:
            item = _waiting_item(state)
            what = f"committee decision on plan v{item.plan_version}" if item else "committee"
            owner, since = "committee", item.escalated_at if item else since
        case _:
            plan = pending_draft(state)
            if plan is None:
                if state.stage is Stage.active:
                    what, owner = "next status meeting", coordinator
                else:
                    what, owner = "joint plan draft", coordinator
            elif plan.decision == "pending":
                missing = [i for i in state.team_ids if i not in {v.staff_id for v in plan.votes}]
                what, owner, since = (f"team votes on plan v{plan.version}", ",".join(missing),
                                      plan.created_at)
            else:
                what, owner, since = (f"family approval of plan v{plan.version}", "family",
                                      plan.decided_at or plan.created_at)
    upcoming = clocks.pending(state)
    timer = upcoming[0] if upcoming else None
    return BlockedOn(
        what=what, owner=owner, since=since, next_due_at=nxt,
        next_timer_at=timer.at if timer else None,
        next_timer=f"{timer.kind} {timer.deadline.kind.value}" if timer else None,
    )


def finish(state: CaseState, ctx: Ctx) -> CaseState:
    state.version += 1
    cs.refresh(state, ctx.now)
    state.blocked_on = blocked_on(state)
    return state


def after_clocks(state: CaseState, now: datetime) -> list[str]:
    """After the workflow's clocks fired: consents whose end has come expire (with the
    consent rules on); the team's consent status and "blocked on" follow. Returns the ids of
    the consents that expired."""
    expired = cs.expire_due(state, now) if state.consent_rules else []
    cs.refresh(state, now)
    state.blocked_on = blocked_on(state)
    return expired


def working_copy(state: CaseState) -> CaseState:
    """A copy a command may change without touching `state`, at a fraction of a deep copy.

    Commands only append to the history, contacts, meetings and flags, and never change a
    deadline once it is met or cancelled: those are shared. Everything a command may change in
    place (open deadlines, plans, committee items, coordinator terms, pauses) is copied."""
    return state.model_copy(update={
        "deadlines": [d.model_copy(deep=True) if d.is_open() or d.paused_since else d
                      for d in state.deadlines],
        "plans": [p.model_copy(deep=True) for p in state.plans],
        "escalations": [i.model_copy(deep=True) for i in state.escalations],
        "coordinator_history": [t.model_copy() for t in state.coordinator_history],
        "pauses": [p.model_copy() for p in state.pauses],
        "history": list(state.history),
        "contacts": list(state.contacts),
        "status_meetings": list(state.status_meetings),
        "flags": list(state.flags),
        "provisional_assessments": list(state.provisional_assessments),
        "assessment_extensions": list(state.assessment_extensions),
        "team": list(state.team),
        "consents": list(state.consents),
        "notices": list(state.notices),
        "focus_points": list(state.focus_points),
        "pause_requests": list(state.pause_requests),
    })


def execute(state: CaseState, name: str, inp: CommandInput, ctx: Ctx) -> CaseState:
    """Apply one command to `state` in place; raises Refusal and then `state` must be dropped."""
    if inp.expected_version is not None and inp.expected_version != state.version:
        raise conflict(STALE)
    if access.is_family(ctx.actor):
        require_family_command(state, name, ctx.actor)
    model = BODY_MODELS[name]
    body = model.model_validate(inp.body or {}) if model is not None else None
    if inp.known_departments is not None:
        ctx = replace(ctx, departments=frozenset(inp.known_departments))
    if state.consent_rules:
        cs.expire_due(state, ctx.now)  # a command in the second before the timer: expired
    match name:
        case "assign_coordinator":
            apply_assign_coordinator(state, body, ctx, inp.coordinator_load, inp.suggestion)
        case "committee_decision":
            apply_committee_decision(state, inp.item_id or "", body, ctx)
        case "status_meeting":
            apply_status_meeting(state, body, ctx)
            if body.policy_version is not None:
                _move_policy(state, body, inp, ctx)
        case _:
            COMMANDS[name](state, body, ctx)
    return finish(state, ctx)


COMMANDS = {
    "form_team": apply_form_team,
    "record_contact": apply_record_contact,
    "triage": apply_triage,
    "schedule_assessment_meeting": apply_schedule_assessment_meeting,
    "put_assessment": apply_put_assessment,
    "complete_assessment": apply_complete_assessment,
    "put_plan": apply_put_plan,
    "vote": apply_vote,
    "family_response": apply_family_response,
    "close": apply_close,
    "pause": apply_pause,
    "resume": apply_resume,
    "provisional_assessment": apply_provisional_assessment,
    "schedule_status_meeting": apply_schedule_status_meeting,
    "extend_assessment": apply_extend_assessment,
    "give_consent": apply_give_consent,
    "change_consent": apply_change_consent,
    "revoke_consent": apply_revoke_consent,
    "set_contact_preference": apply_set_contact_preference,
    "family_focus_points": apply_family_focus_points,
    "confirm_focus_points": apply_confirm_focus_points,
    "request_pause": apply_request_pause,
    "record_outcomes": apply_record_outcomes,
}


def _move_policy(state: CaseState, body: RecordStatusMeeting, inp: CommandInput, ctx: Ctx) -> None:
    """A case keeps its policy version; moving on is a recorded decision at a status meeting."""
    new = inp.policy
    if new is None or new.version != body.policy_version or new.country != state.policy.country:
        raise invalid(f"Policy version {body.policy_version} for {state.policy.country} is unknown.")
    if new.version == state.policy.version:
        raise conflict(f"The case already follows policy version {new.version}.")
    if not (body.policy_reason or "").strip():
        raise invalid("Moving the case to another policy version needs a recorded reason.")
    old = state.policy_key
    state.policy, state.policy_key = new, new.key
    _record(state, ctx, "policy_changed", **{"from": old, "to": new.key,
                                            "reason": body.policy_reason})
