"""What travels between the API and the case workflow."""

from __future__ import annotations

from pydantic import BaseModel

from models.case import (
    Actor,
    AssessmentContent,
    AssignCoordinator,
    CaseCreate,
    CaseState,
    CastVote,
    CloseCase,
    CommitteeDecision,
    FamilyResponse,
    FormTeam,
    PlanDraft,
    RecordContact,
    RecordStatusMeeting,
    ScheduleAssessmentMeeting,
    Triage,
)


class CaseWorkflowInput(BaseModel):
    case_id: str
    policy_key: str
    actor: Actor
    create: CaseCreate | None = None
    # Set when the workflow continues as new: the state carries over whole.
    state: CaseState | None = None
    projected_version: int = 0
    possible_duplicates: list[str] = []
    # Continue-as-new after this many history events (Temporal suggests it at ~4k/10k too).
    max_history_events: int = 5_000


class CommandInput(BaseModel):
    """One command: who, the body as the API validated it, and facts only the API can know."""

    actor: Actor
    body: dict | None = None
    coordinator_load: int = 0
    suggestion: str | None = None
    item_id: str | None = None


BODY_MODELS: dict[str, type[BaseModel] | None] = {
    "assign_coordinator": AssignCoordinator,
    "form_team": FormTeam,
    "record_contact": RecordContact,
    "triage": Triage,
    "schedule_assessment_meeting": ScheduleAssessmentMeeting,
    "put_assessment": AssessmentContent,
    "complete_assessment": None,
    "put_plan": PlanDraft,
    "vote": CastVote,
    "family_response": FamilyResponse,
    "committee_decision": CommitteeDecision,
    "status_meeting": RecordStatusMeeting,
    "close": CloseCase,
}
