"""What travels between the API and the case workflow."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from models.case import (
    Actor,
    AssessmentContent,
    AssignCoordinator,
    CaseCreate,
    CaseState,
    CastVote,
    ChangeConsent,
    CloseCase,
    CommitteeDecision,
    CompleteAssessment,
    ConfirmFocusPoints,
    ExtendAssessment,
    FamilyResponse,
    FocusPoints,
    FormTeam,
    GiveConsent,
    PauseCase,
    PauseRequest,
    PlanDraft,
    ProvisionalAssessmentIn,
    RecordContact,
    RecordStatusMeeting,
    RevokeConsent,
    ScheduleAssessmentMeeting,
    ScheduleStatusMeeting,
    SetContactPreference,
    Triage,
)
from models.outcomes import RecordOutcomes
from models.policy import Policy

# The rules generation the API starts new cases with (FamilyCaseWorkflow, docs/decisions.md).
# 1: every patch up to "family-sms-reminder" is in force without a marker, and search
# attributes follow the projection (a burst of commands is one visibility write).
# 2: an idle cached case keeps no task but its run (workflows/case.py LEAN_LOOP).
CASE_RULES = 2


class CaseWorkflowInput(BaseModel):
    case_id: str
    # The policy in force when the case starts: the case keeps this copy (version pinning).
    policy: Policy
    actor: Actor
    create: CaseCreate | None = None
    # Set when the workflow continues as new: the state carries over whole.
    state: CaseState | None = None
    projected_version: int = 0
    possible_duplicates: list[str] = []
    # When the API registered the referral: the workflow builds the state with this instant,
    # so the API can answer with the same state without waiting for the workflow.
    created_at: datetime | None = None
    committee_announced: dict[str, str] = {}
    effects_done: list[str] = []
    # Continue-as-new after this many history events (Temporal suggests it at ~4k/10k too).
    max_history_events: int = 5_000
    # The API's seal over this input (domain.command_seal): a new case starts only when it
    # is right. A continued run carries its first run's (stale) seal; it is not checked there.
    seal: str | None = None
    # The rules generation this case started with (CASE_RULES); 0, its absence, is a case
    # started before generations: it asks Temporal about each patch, as it always did. Carried
    # over by continue-as-new, so a case keeps its generation for life.
    rules: int = 0


class CommandInput(BaseModel):
    """One command: who, the body as the API validated it, and facts only the API can know."""

    actor: Actor
    body: dict | None = None
    coordinator_load: int = 0
    suggestion: str | None = None
    item_id: str | None = None
    # A newer policy version, when a status meeting moves the case to it.
    policy: Policy | None = None
    # The API's seal over this command, its case and its update id (domain.command_seal):
    # the workflow refuses a command without a valid one.
    seal: str | None = None
    # The case version the sender's page showed: a command sent from a page that is out of
    # date is refused (409) and applies nothing. None: no such check (the JSON API).
    expected_version: int | None = None
    # give_consent / change_consent: the departments of the staff directory (a consent naming
    # a department neither there nor on the team is refused). None: the API did not say; the
    # departments of the team and of the existing contacts are known then.
    known_departments: list[str] | None = None


BODY_MODELS: dict[str, type[BaseModel] | None] = {
    "assign_coordinator": AssignCoordinator,
    "form_team": FormTeam,
    "record_contact": RecordContact,
    "triage": Triage,
    "schedule_assessment_meeting": ScheduleAssessmentMeeting,
    "put_assessment": AssessmentContent,
    "complete_assessment": CompleteAssessment,
    "put_plan": PlanDraft,
    "vote": CastVote,
    "family_response": FamilyResponse,
    "committee_decision": CommitteeDecision,
    "status_meeting": RecordStatusMeeting,
    "close": CloseCase,
    "pause": PauseCase,
    "resume": None,
    "provisional_assessment": ProvisionalAssessmentIn,
    "schedule_status_meeting": ScheduleStatusMeeting,
    "extend_assessment": ExtendAssessment,
    # The family's commands (DESIGN §11; the family may give exactly these and
    # family_response, see domain.lifecycle.FAMILY_COMMANDS) and the coordinator's answer.
    "give_consent": GiveConsent,
    "change_consent": ChangeConsent,
    "revoke_consent": RevokeConsent,
    "set_contact_preference": SetContactPreference,
    "family_focus_points": FocusPoints,
    "confirm_focus_points": ConfirmFocusPoints,
    "request_pause": PauseRequest,
    # Outcome measurements outside a meeting or the closing (models/outcomes.py).
    "record_outcomes": RecordOutcomes,
}
