"""The case: plain pydantic models (stdlib types only), shared by workflow, activities and API.

No default_factory here may call the clock or a random source: these models are built inside
the workflow sandbox with pass-through imports (DESIGN §8).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from models.outcomes import Measurements, OutcomeMeasurement
from models.policy import Policy
from models.text import (  # noqa: F401 - LABEL_CHARS ... re-exported for callers
    LABEL_CHARS,
    SHORT_CHARS,
    TEXT_CHARS,
    LabelItems,
    NonBlank,
    NonBlankLabel,
    NonBlankShort,
    OptionalLabel,
    OptionalLongText,
    OptionalShort,
    OptionalText,
    RequiredItem,
    ShortItems,
)

# Field limits (issue 8): far above what case work needs, far below what would hurt the
# engine. A too long field or list is a 422 naming it ("referral.reason: String should have at
# most 20000 characters") before anything reaches Temporal. These models are also the state
# the workflow keeps: raise a limit freely, lower one only with care (replay of old cases).
MAX_ITEMS = 200  # members, goals, actions, services, participants, ...
MAX_DIAGNOSES = 50
MAX_OUTCOMES = 50  # keys of a closing's `outcomes`

# Text fields follow one rule (models/text.py): required text is never blank; optional text
# that is blank is absent (a blank item of an optional list is left out).
Label = Annotated[str, Field(max_length=LABEL_CHARS)]
ShortText = OptionalShort
LongText = OptionalText


def _plausible(value: datetime) -> datetime:
    # Case work happens in this century: a year 0679 is a typo, and would break time zones.
    if not 1990 <= value.year <= 2100:
        raise ValueError("must be a date between 1990 and 2100")
    return value


When = Annotated[AwareDatetime, AfterValidator(_plausible)]


def _plausible_day(value: date) -> date:
    if not 1990 <= value.year <= 2100:
        raise ValueError("must be a date between 1990 and 2100")
    return value


Day = Annotated[date, AfterValidator(_plausible_day)]


class Stage(StrEnum):
    referred = "referred"
    coordinator_assigned = "coordinator_assigned"
    team_formed = "team_formed"
    assessment = "assessment"
    planning = "planning"
    escalated = "escalated"
    active = "active"
    closed = "closed"


OPEN_STAGES = [s for s in Stage if s is not Stage.closed]


class Source(StrEnum):
    school = "school"
    health = "health"
    parent = "parent"
    social_services = "social_services"
    other = "other"


class ReferralKind(StrEnum):
    application = "application"
    concern_report = "concern_report"
    referral = "referral"


class MemberRole(StrEnum):
    child = "child"
    parent = "parent"
    sibling = "sibling"
    other = "other"


class ContactPreference(StrEnum):
    close = "close"
    normal = "normal"
    space = "space"


class ContactKind(StrEnum):
    phone = "phone"
    home_visit = "home_visit"
    meeting = "meeting"
    message = "message"


class VoteValue(StrEnum):
    agree = "agree"
    disagree = "disagree"


class GoalStatus(StrEnum):
    not_started = "not_started"
    on_track = "on_track"
    at_risk = "at_risk"
    achieved = "achieved"
    dropped = "dropped"


class CloseReason(StrEnum):
    goals_reached = "goals_reached"
    family_withdrew = "family_withdrew"
    moved_away = "moved_away"
    transferred_to_adult_services = "transferred_to_adult_services"
    duplicate = "duplicate"
    other = "other"


class CommitteeDecisionKind(StrEnum):
    approved = "approved"
    approved_with_changes = "approved_with_changes"
    rejected = "rejected"


class DeadlineKind(StrEnum):
    first_contact = "first_contact"
    concern_triage = "concern_triage"
    reporter_receipt = "reporter_receipt"
    pre_meeting_contact = "pre_meeting_contact"
    assessment = "assessment"
    plan = "plan"
    family_approval = "family_approval"
    first_followup = "first_followup"
    followup = "followup"
    status_meeting = "status_meeting"
    family_checkin = "family_checkin"
    committee_decision = "committee_decision"
    consent_renewal = "consent_renewal"


class DeadlineStatus(StrEnum):
    open = "open"
    met = "met"
    overdue = "overdue"
    cancelled = "cancelled"  # the case closed, or the event it waited for no longer applies


class Strict(BaseModel):
    """Request bodies: unknown fields are a coordinator's typo, refuse them clearly."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- referral (POST /cases)


class Referral(Strict):
    source: Source
    kind: ReferralKind = ReferralKind.application
    received_at: When
    reason: NonBlank
    reporter_is_professional: bool | None = None


class FamilyMember(Strict):
    # Stable within the case (`m1`, `m2`, … in registration order), assigned when missing:
    # invitations, consents and the family's own sign-in name a member by it (DESIGN §11).
    id: Annotated[str, Field(pattern=r"^m[0-9]{1,4}$")] | None = None
    name: NonBlankLabel
    role: MemberRole
    birth_date: date | None = None
    diagnoses: LabelItems = Field([], max_length=MAX_DIAGNOSES)
    needs: ShortItems = Field([], max_length=MAX_ITEMS)
    phone: OptionalLabel = None
    email: OptionalLabel = None


class Family(Strict):
    name: NonBlankLabel
    language: Literal["da", "sv", "en"] | None = None
    members: list[FamilyMember] = Field(min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _member_ids(self) -> Family:
        """Ids for members that have none (new referrals, and states from before ids existed):
        the next free `m<n>`, so a given id is never reused for another person."""
        taken = {m.id for m in self.members if m.id}
        if len(taken) != sum(1 for m in self.members if m.id):
            raise ValueError("Two family members have the same id.")
        n = 0
        for member in self.members:
            if member.id is None:
                n += 1
                while f"m{n}" in taken:
                    n += 1
                member.id = f"m{n}"
                taken.add(member.id)
        return self


class ExistingContact(Strict):
    department: NonBlankLabel
    sector_area: OptionalLabel = None
    caseworker: OptionalLabel = None


class Consent(Strict):
    coordinated_handling: bool
    departments: LabelItems = Field([], max_length=MAX_ITEMS)
    valid_until: date | None = None


class CaseCreate(Strict):
    referral: Referral
    family: Family
    existing_contacts: list[ExistingContact] = Field([], max_length=MAX_ITEMS)
    consent: Consent
    contact_preference: ContactPreference = ContactPreference.normal
    concern_level: Literal["high", "medium", "low"] | None = None
    # The unit responsible before a coordinator is assigned (default: the registering unit).
    unit: str | None = Field(None, max_length=64)


# ---------------------------------------------------------------- command bodies


class AssignCoordinator(Strict):
    coordinator_id: NonBlankLabel
    override: bool = False


class TeamMemberIn(Strict):
    staff_id: NonBlankLabel
    discipline: NonBlankLabel
    department: NonBlankLabel


class FormTeam(Strict):
    members: list[TeamMemberIn] = Field(min_length=1, max_length=MAX_ITEMS)


class RecordContact(Strict):
    kind: ContactKind
    at: When
    notes: LongText = ""


class Triage(Strict):
    child_in_danger: bool = False
    urgent_action: bool = False
    receipt_sent_to_reporter: bool = False
    notes: LongText = ""


class ScheduleAssessmentMeeting(Strict):
    at: When
    location: NonBlankShort
    participants: list[RequiredItem] = Field(min_length=1, max_length=MAX_ITEMS)


class IcsEntry(Strict):
    dimension: NonBlankLabel
    strengths: LongText = ""
    concerns: LongText = ""
    family_view: LongText = ""


class AssessmentContent(Strict):
    ics: dict[Literal["child_development", "parenting_capacity", "family_and_network"],
              Annotated[list[IcsEntry], Field(max_length=MAX_ITEMS)]] = {}
    child_views: OptionalLongText = None
    child_views_waiver: OptionalLongText = None
    investigations: LabelItems = Field([], max_length=MAX_ITEMS)


class Goal(Strict):
    id: NonBlankLabel
    text: NonBlankShort
    owner: OptionalLabel = None


class Action(Strict):
    id: NonBlankLabel
    goal_id: OptionalLabel = None
    text: NonBlankShort
    owner: NonBlankLabel
    due: date | None = None
    status: Literal["open", "in_progress", "done"] = "open"
    member: OptionalLabel = None


class FundingShare(Strict):
    department: NonBlankLabel
    share: float = Field(gt=0, le=1)


class Service(Strict):
    name: NonBlankShort
    paragraph: NonBlankLabel
    department: NonBlankLabel
    monthly_cost: float = Field(ge=0)
    funding: list[FundingShare] = Field([], max_length=MAX_ITEMS)


class PlanDraft(Strict):
    family_goals: list[NonBlankShort] = Field(min_length=1, max_length=MAX_ITEMS)
    goals: list[Goal] = Field([], max_length=MAX_ITEMS)
    actions: list[Action] = Field([], max_length=MAX_ITEMS)
    services: list[Service] = Field([], max_length=MAX_ITEMS)


class CastVote(Strict):
    staff_id: NonBlankLabel
    vote: VoteValue
    reason: LongText = ""


class FamilyResponse(Strict):
    approved: bool
    comment: LongText = ""


class GoalProgress(Strict):
    goal_id: NonBlankLabel
    status: GoalStatus
    note: LongText = ""


class ScheduleStatusMeeting(Strict):
    at: When
    location: NonBlankShort
    participants: list[RequiredItem] = Field(min_length=1, max_length=MAX_ITEMS)


class RecordStatusMeeting(Strict):
    at: When
    participants: list[RequiredItem] = Field(min_length=1, max_length=MAX_ITEMS)
    minutes: LongText = ""
    goal_progress: list[GoalProgress] = Field([], max_length=MAX_ITEMS)
    plan_changes: PlanDraft | None = None
    concern_level: Literal["high", "medium", "low"] | None = None
    followup_months: int | None = Field(None, ge=1, le=24)
    followup_reason: OptionalLongText = None
    # Moving the case to a newer policy version is a recorded decision at a status meeting.
    policy_version: int | None = Field(None, ge=1)
    policy_reason: OptionalLongText = None
    # Outcome instruments filled in at the meeting (models/outcomes.py; occasion status_meeting).
    measurements: Measurements = []


class PauseCase(Strict):
    reason: NonBlank
    waiting_for_family: bool = True


class ProvisionalAssessmentIn(Strict):
    text: NonBlank


class ExtendAssessment(Strict):
    new_due_at: When
    decision_ref: NonBlankLabel
    reason: NonBlank


class CloseCase(Strict):
    reason: CloseReason
    note: LongText = ""
    outcomes: Annotated[dict, Field(max_length=MAX_OUTCOMES)] | None = None
    # Outcome instruments filled in at closing (occasion closing); `outcomes` above is the
    # older free-form object, still accepted (domain.outcomes.legacy_outcomes).
    measurements: Measurements = []


class CompleteAssessment(Strict):
    """`POST .../assessment/complete`: optionally with the instruments filled in at the
    assessment (occasion assessment); without a body as before."""

    measurements: Measurements = []


class CommitteeDecision(Strict):
    decision: CommitteeDecisionKind
    notes: LongText = ""
    funding: list[FundingShare] = Field([], max_length=MAX_ITEMS)


# ---------------------------------------------------------------- consent and the family (§11)

ConsentCover = Literal["case", "documents"]
ConsentCovers = Annotated[list[ConsentCover], Field(min_length=1, max_length=2)]


class GiveConsent(Strict):
    """A consent the family gives (in the portal), or gave on paper (the coordinator records
    it): which professionals (`staff_ids`) and departments may see what, until when. The
    consent is valid through `expires_at` (inclusive, the municipality's calendar day)."""

    member_id: NonBlankLabel
    staff_ids: list[NonBlankLabel] = Field([], max_length=MAX_ITEMS)
    departments: list[NonBlankLabel] = Field([], max_length=MAX_ITEMS)
    covers: ConsentCovers = ["case", "documents"]
    expires_at: Day
    # The whole core team as it is formed (like the referral's coordinated handling); only
    # without staff_ids and departments.
    core_team: bool = False


class ConsentChanges(Strict):
    """Narrow or extend a consent: every field given replaces the consent's (None: kept)."""

    staff_ids: list[NonBlankLabel] | None = Field(None, max_length=MAX_ITEMS)
    departments: list[NonBlankLabel] | None = Field(None, max_length=MAX_ITEMS)
    covers: ConsentCovers | None = None
    expires_at: Day | None = None


class ChangeConsent(ConsentChanges):
    consent_id: NonBlankLabel


class RevokeConsent(Strict):
    consent_id: NonBlankLabel
    reason: LongText = ""


class SetContactPreference(Strict):
    preference: ContactPreference


class FocusPoints(Strict):
    """What the family wants to talk about at the next meeting (before a status meeting)."""

    text: NonBlank
    # The planned status meeting it is for; None: the next meeting.
    meeting_number: int | None = Field(None, ge=1, le=100_000)


class ConfirmFocusPoints(Strict):
    """The coordinator has read the family's focus points: counts as the pre-meeting contact."""

    number: int = Field(ge=1, le=100_000)
    notes: LongText = ""


class PauseRequest(Strict):
    reason: NonBlank


# ---------------------------------------------------------------- state


class Actor(BaseModel):
    """Who issues a command: resolved by the API from the staff directory."""

    id: str
    roles: list[str] = []
    # The staff member's unit (managers see their unit's cases); None in old histories.
    unit: str | None = None
    # A family member signed in to the portal (roles ["family"]): their own case and member id
    # (DESIGN §11). Staff have neither.
    case_id: str | None = None
    member_id: str | None = None


class TeamMember(BaseModel):
    staff_id: str
    discipline: str
    department: str
    # pending_consent: on the team, but no active consent of the family covers them yet (or
    # any more): they see nothing, get no messages and cannot vote (DESIGN §11).
    status: Literal["active", "pending_consent"] = "active"
    pending_since: datetime | None = None


class Deadline(BaseModel):
    kind: DeadlineKind
    legal_basis: str = ""
    due_at: datetime
    status: DeadlineStatus = DeadlineStatus.open
    met_at: datetime | None = None
    occurrence: int = 1
    # Filled by the deadline engine: reminder instants, ladder steps and what was sent.
    remind_at: list[datetime] = []
    ladder: list[str] = []
    reminders_sent: list[dict] = []
    owner: str | None = None
    satisfied_by: str = ""
    # Set while the clock is paused waiting for the family; resuming moves due_at on.
    paused_since: datetime | None = None
    paused_seconds: float = 0
    # What the deadline is about, when a kind can have several at once (consent_renewal: the
    # consent's id).
    ref: str | None = None

    def is_open(self) -> bool:
        return self.status in (DeadlineStatus.open, DeadlineStatus.overdue)

    def status_at(self, now: datetime) -> DeadlineStatus:
        if self.status is DeadlineStatus.open and self.paused_since is None and self.due_at <= now:
            return DeadlineStatus.overdue
        return self.status


class HistoryEntry(BaseModel):
    at: datetime
    actor: str
    event: str
    detail: dict = {}


class Vote(BaseModel):
    staff_id: str
    vote: VoteValue
    reason: str = ""
    at: datetime


class PlanVersion(BaseModel):
    version: int
    family_goals: list[str]
    goals: list[Goal] = []
    actions: list[Action] = []
    services: list[Service] = []
    created_at: datetime
    created_by: str
    votes: list[Vote] = []
    # pending -> team / committee (decided) or rejected; escalated while the committee has it
    decision: Literal["pending", "escalated", "team", "committee", "rejected"] = "pending"
    decided_at: datetime | None = None
    escalation_reasons: list[str] = []
    family_approved: bool | None = None
    family_comment: str = ""
    status: Literal["draft", "active", "superseded", "rejected"] = "draft"
    committee_funding: list[FundingShare] = []


class EscalationItem(BaseModel):
    id: str
    case_id: str
    plan_version: int
    reasons: list[str]
    escalated_at: datetime
    meeting_at: datetime | None = None
    status: Literal["waiting", "decided", "withdrawn"] = "waiting"
    decision: CommitteeDecisionKind | None = None
    notes: str = ""
    funding: list[FundingShare] = []
    decided_at: datetime | None = None
    decided_by: str | None = None


class Contact(BaseModel):
    kind: ContactKind
    at: datetime
    notes: str = ""
    by: str


class AssessmentMeeting(BaseModel):
    at: datetime
    location: str
    participants: list[str]


class PlannedMeeting(BaseModel):
    """The next status meeting, planned ahead so the family is contacted and invited first."""

    number: int
    at: datetime
    location: str
    participants: list[str]
    sequence: int = 0  # bumped when it moves: the invitation's SEQUENCE


class StatusMeeting(BaseModel):
    number: int
    at: datetime
    participants: list[str]
    minutes: str = ""
    goal_progress: list[GoalProgress] = []
    new_plan_version: int | None = None
    recorded_by: str


class CoordinatorTerm(BaseModel):
    coordinator_id: str
    since: datetime
    until: datetime | None = None
    assigned_by: str
    override: bool = False


class Closure(BaseModel):
    reason: CloseReason
    note: str = ""
    outcomes: dict | None = None
    at: datetime
    by: str


class Pause(BaseModel):
    since: datetime
    until: datetime | None = None
    reason: str
    waiting_for_family: bool = True
    by: str


class ProvisionalAssessment(BaseModel):
    at: datetime
    by: str
    text: str


class AssessmentExtension(BaseModel):
    at: datetime
    by: str
    new_due_at: datetime
    decision_ref: str
    reason: str


class BlockedOn(BaseModel):
    """What the case waits for, who owes it and since when (DESIGN §3.10)."""

    what: str
    owner: str | None = None
    since: datetime
    next_due_at: datetime | None = None
    # When the case's next durable timer fires (a reminder, a due time or a ladder step).
    next_timer_at: datetime | None = None
    next_timer: str | None = None


class ConsentStatus(StrEnum):
    active = "active"
    expired = "expired"
    revoked = "revoked"


class ConsentRecord(BaseModel):
    """One consent of the family (DESIGN §11). Never deleted: revoked and expired ones stay."""

    id: str
    member_id: str | None = None  # the family member who gave it
    staff_ids: list[str] = []
    departments: list[str] = []
    covers: list[ConsentCover] = ["case", "documents"]
    given_at: datetime
    # Valid through this day (inclusive, in the municipality's time zone); None: no end.
    expires_at: date | None = None
    revoked_at: datetime | None = None
    expired_at: datetime | None = None
    status: ConsentStatus = ConsentStatus.active
    # Covers the whole core team as it is formed (the referral's coordinated handling
    # without departments).
    core_team: bool = False
    source: Literal["referral", "paper", "family"] = "paper"
    given_by: str = "system"


def referral_consent(consent: Consent, family: Family, given_at: datetime) -> ConsentRecord:
    """The case's first consent, from the referral (DESIGN §11): coordinated handling covers
    the coordinator and the core team as it is formed, narrowed to `departments` when there
    are any, until `valid_until`; without coordinated handling it covers the coordinator alone
    (who is always covered). Pure: also derived for states from before consents existed."""
    parent = next((m.id for m in family.members if m.role is MemberRole.parent), None)
    handled = consent.coordinated_handling
    departments = list(dict.fromkeys(consent.departments)) if handled else []
    return ConsentRecord(
        id="c1", member_id=parent, departments=departments, given_at=given_at,
        expires_at=consent.valid_until, core_team=handled and not departments,
        source="referral", given_by="referral",
    )


class Notice(BaseModel):
    """Something the coordinator must hear about (a consent revoked or expired, the family's
    focus points or request for a pause): one message each (domain/effects.py)."""

    number: int
    at: datetime
    event: str
    to: str  # the coordinator's staff id, or "manager" while the case has none
    detail: dict = {}


class FocusPointsEntry(BaseModel):
    number: int
    text: str
    meeting_number: int | None = None
    at: datetime
    by: str
    member_id: str | None = None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None


class PauseRequestEntry(BaseModel):
    number: int
    reason: str
    at: datetime
    by: str
    member_id: str | None = None
    # When the coordinator paused the case (the existing `pause` command) after it.
    handled_at: datetime | None = None


class CaseState(BaseModel):
    id: str
    version: int = 0
    stage: Stage = Stage.referred
    stage_since: datetime
    created_at: datetime
    created_by: str
    policy_key: str
    country: str
    policy: Policy
    referral: Referral
    family: Family
    existing_contacts: list[ExistingContact] = []
    consent: Consent
    contact_preference: ContactPreference = ContactPreference.normal
    concern_level: str = "medium"
    # The unit responsible before a coordinator is assigned (DESIGN §9: managers of the unit).
    unit: str | None = None
    paused: bool = False
    pauses: list[Pause] = []
    provisional_assessments: list[ProvisionalAssessment] = []
    assessment_extensions: list[AssessmentExtension] = []
    coordinator_id: str | None = None
    coordinator_history: list[CoordinatorTerm] = []
    team: list[TeamMember] = []
    contacts: list[Contact] = []
    assessment_meeting: AssessmentMeeting | None = None
    assessment: AssessmentContent | None = None
    assessment_completed_at: datetime | None = None
    plans: list[PlanVersion] = []
    escalations: list[EscalationItem] = []
    status_meetings: list[StatusMeeting] = []
    planned_meeting: PlannedMeeting | None = None
    measures_started_at: datetime | None = None
    followup_months: int | None = None
    deadlines: list[Deadline] = []
    history: list[HistoryEntry] = []
    closure: Closure | None = None
    flags: list[dict] = []
    blocked_on: BlockedOn | None = None
    # The family's consents (DESIGN §11); the first is the referral's (derived on load for
    # states from before consents existed).
    consents: list[ConsentRecord] = []
    # The workflow applies the consent rules (votes, invitations, blocked-on, renewal clocks):
    # set for cases started (or continued) by code that knows them, so old runs replay as
    # they ran. The access policy applies consents to every case regardless.
    consent_rules: bool = False
    notices: list[Notice] = []
    focus_points: list[FocusPointsEntry] = []
    pause_requests: list[PauseRequestEntry] = []
    # Outcome measurements (DESIGN §3.8, models/outcomes.py), in the order they were recorded.
    outcome_measurements: list[OutcomeMeasurement] = []
    # The workflow validates the close body's free-form `outcomes` against the instruments:
    # set for runs started by code that knows them (patch "outcome-instruments"), or by the
    # first command that records measurements, so old runs replay as they ran.
    outcome_rules: bool = False

    @model_validator(mode="after")
    def _first_consent(self) -> CaseState:
        if not self.consents:
            self.consents = [referral_consent(self.consent, self.family, self.created_at)]
        return self

    @property
    def plan(self) -> PlanVersion | None:
        """The plan a reader cares about: the newest draft if one is open, else the active one."""
        return self.plans[-1] if self.plans else None

    @property
    def active_plan(self) -> PlanVersion | None:
        return next((p for p in reversed(self.plans) if p.status == "active"), None)

    @property
    def team_ids(self) -> list[str]:
        ids = [self.coordinator_id] if self.coordinator_id else []
        return ids + [m.staff_id for m in self.team if m.staff_id not in ids]


class CaseAnswer(CaseState):
    """A case as a command's Update answers it: its policy by digest (domain.shared_policy),
    not its ~9.5 KB of content, equal in every case (issue 13: the answer is serialised,
    encrypted, stored in the history and decoded on every command). Only at that boundary:
    the API turns it into a CaseState at once (`case()`, api/gateway.py), so nothing writes
    one where a whole case belongs. An answer that carries its policy (a worker from before)
    is read as well."""

    policy: Policy | None = Field(None, exclude=True)  # type: ignore[assignment]
    policy_digest: str = ""

    def case(self, policy: Policy) -> CaseState:
        fields = {k: v for k, v in self.__dict__.items() if k != "policy_digest"}
        fields["policy"] = policy
        return CaseState.model_construct((self.model_fields_set - {"policy_digest"}) | {"policy"},
                                         **fields)
