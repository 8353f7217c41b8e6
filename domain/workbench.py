"""Which command forms a staff member may use on a case NOW (the case page, My work).

Pure, no I/O: the same rules as the `require_*` calls and stage checks at the top of each
`apply_*` of `domain.lifecycle`, read from the role and the stage only. A command is offered
when the workflow would not refuse it as `forbidden` or `conflict` for a sensible body; what
depends on the body itself (a caseload cap, who is listed at a meeting, a policy move) is
left to the workflow, whose sentence the form then shows.

`committee_decision` is the committee page's and never offered here. Of the family's
commands (DESIGN §11) the staff record on the family's behalf a consent given on paper, a
narrowed / extended / revoked consent and a changed contact preference, and confirm the
family's focus points (the coordinator, a manager, admin; while the case is open); the
family's own focus points and pause requests come from the portal. `invite_family` (the
portal's sign-in link, api/family_auth.py) is a form of the case page but not an Update of
the case workflow: `FORM_ORDER` places it among the commands.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain import consent as cs
from domain import deadlines as dl
from domain.access import CaseFacts, command_refusal
from domain.lifecycle import OUTCOME_STAGES, is_manager, pending_draft
from models.case import Actor, CaseState, DeadlineKind, Stage

# The order the forms appear on the case page: the case's life from referral to closing.
COMMAND_ORDER: tuple[str, ...] = (
    "assign_coordinator",
    "triage",
    "form_team",
    "record_contact",
    "schedule_assessment_meeting",
    "put_assessment",
    "complete_assessment",
    "provisional_assessment",
    "extend_assessment",
    "put_plan",
    "vote",
    "family_response",
    "schedule_status_meeting",
    "status_meeting",
    "record_outcomes",
    "confirm_focus_points",
    "set_contact_preference",
    "give_consent",
    "change_consent",
    "revoke_consent",
    "pause",
    "resume",
    "close",
)

OPEN_FOR_TEAM = {Stage.coordinator_assigned, Stage.team_formed, Stage.assessment,
                 Stage.planning, Stage.active}


# The case page's forms that are no Update of the case workflow, and where they appear.
INVITE_FAMILY = "invite_family"
FORM_ORDER: tuple[str, ...] = tuple(
    n for name in COMMAND_ORDER
    for n in ((INVITE_FAMILY, name) if name == "confirm_focus_points" else (name,)))


def ordered(names: set[str] | frozenset[str]) -> list[str]:
    """`names` in lifecycle order (the order of the case page's forms)."""
    return [n for n in FORM_ORDER if n in names]


def _case_worker(state: CaseState, actor: Actor) -> bool:
    return is_manager(actor) or (actor.id is not None and actor.id == state.coordinator_id)


def _team(state: CaseState, actor: Actor) -> bool:
    return is_manager(actor) or actor.id in state.team_ids


def _child_voice(state: CaseState) -> bool:
    a = state.assessment
    return a is not None and bool((a.child_views or "").strip() or (a.child_views_waiver or "").strip())


def available_commands(state: CaseState, actor: Actor, *, now: datetime | None = None,
                       facts: CaseFacts | None = None) -> set[str]:
    """The Update names whose form `actor` may use on `state` now.

    `now` matters only for the provisional assessment (offered once the assessment deadline
    has passed); by default the clock. `facts`: the case as the read model knows it (its
    unit); when given, a reader the access policy refuses gets nothing."""
    if state.stage is Stage.closed or "family" in actor.roles:
        return set()
    if facts is not None and command_refusal(actor, facts) is not None:
        return set()
    now = now or datetime.now(UTC)
    stage = state.stage
    worker = _case_worker(state, actor)
    team = _team(state, actor)
    out: set[str] = set()

    # Take (a coordinator, an unassigned case) or assign / reassign (a manager).
    if is_manager(actor) or ("coordinator" in actor.roles and state.coordinator_id is None):
        out.add("assign_coordinator")
    if worker and (dl.open_deadlines(state, DeadlineKind.concern_triage)
                   or dl.open_deadlines(state, DeadlineKind.reporter_receipt)):
        out.add("triage")
    if worker and stage in OPEN_FOR_TEAM:
        out.add("form_team")
    if team:
        out.add("record_contact")
    if worker and stage in (Stage.team_formed, Stage.assessment):
        out.add("schedule_assessment_meeting")
    if team and stage in (Stage.assessment, Stage.planning):
        out.add("put_assessment")
    if (worker and stage is Stage.assessment and state.assessment is not None
            and any(state.assessment.ics.values())):
        out.add("complete_assessment")
    if worker and any(d.due_at <= now for d in dl.open_deadlines(state, DeadlineKind.assessment)):
        out.add("provisional_assessment")
    if ((is_manager(actor) or "committee" in actor.roles)
            and state.policy.assessment_extension_allowed
            and dl.open_deadlines(state, DeadlineKind.assessment)):
        out.add("extend_assessment")
    if worker and stage in (Stage.planning, Stage.active):
        out.add("put_plan")
    draft = pending_draft(state)
    if (actor.id in state.team_ids and stage in (Stage.planning, Stage.active, Stage.escalated)
            and draft is not None and draft.decision == "pending"
            and all(v.staff_id != actor.id for v in draft.votes) and _child_voice(state)
            and not (state.consent_rules and actor.id in cs.uncovered(state))):
        out.add("vote")
    if (worker and stage in (Stage.planning, Stage.escalated, Stage.active)
            and draft is not None and draft.family_approved is not True):
        out.add("family_response")
    if worker and stage is Stage.active:
        out.add("schedule_status_meeting")
    if team and stage is Stage.active:
        out.add("status_meeting")
    if team and stage in OUTCOME_STAGES:
        out.add("record_outcomes")  # outcome measures between the meetings (DESIGN §3.8)
    if worker:
        # The family's part (DESIGN §11), recorded or confirmed by the case's worker.
        out |= {INVITE_FAMILY, "confirm_focus_points", "set_contact_preference", "give_consent"}
        if any(cs.is_active(c, state.policy.timezone, now) for c in state.consents):
            out |= {"change_consent", "revoke_consent"}
        out.add("resume" if state.paused else "pause")
        out.add("close")
    return out
