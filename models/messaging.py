"""Notifications and documents: what the workflow asks the notification and document
activities to do, and what they answer. Plain pydantic v2 with stdlib types only.

The case workflow imports this module through pass-through (DESIGN §8): no sqlmodel import,
and no default_factory here calls the clock or a random source. The helpers at the bottom are
pure functions the workflow may call (`notification_key`, `family_recipients`,
`staff_recipient`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

if TYPE_CHECKING:  # only for type hints: the helpers take a CaseState
    from models.case import CaseState

Language = Literal["da", "sv", "en"]
LANGUAGES: tuple[str, ...] = ("da", "sv", "en")


class RecipientRole(StrEnum):
    coordinator = "coordinator"
    team = "team"
    manager = "manager"
    committee = "committee"
    family = "family"
    # A professional outside the case who reported a concern (receipt, DESIGN §3.1).
    reporter = "reporter"


STAFF_ROLES = frozenset({RecipientRole.coordinator, RecipientRole.team, RecipientRole.manager,
                         RecipientRole.committee})


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    in_app = "in_app"


class NotificationStatus(StrEnum):
    queued = "queued"
    sent = "sent"
    failed = "failed"
    deferred = "deferred"
    # Not sent, never to be: the family's consent no longer covers the recipient (DESIGN §11).
    cancelled = "cancelled"


class Recipient(BaseModel):
    """Who gets a message.

    `id` is a staff id for staff roles (email/phone are then looked up in the staff directory
    when not given) or `family:<member index>` for a family member (contact data from the
    case). `channel_preference` is the channel the person asked for; `contact_preference`
    (close/normal/space) is the family's wish for how much contact it wants: a family that
    asked for space gets optional messages in the in-app outbox only.
    """

    role: RecipientRole
    id: str = Field(min_length=1, max_length=200)
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    language: Language | None = None
    channel_preference: Channel | None = None
    contact_preference: Literal["close", "normal", "space"] | None = None


class MeetingInvite(BaseModel):
    """An iCalendar invitation (RFC 5545/5546). Keep `uid` stable for the meeting's whole
    life (e.g. f"{case_id}-status-3@onefamily"); a moved meeting is the same uid with a higher
    `sequence` and method REQUEST; a cancelled one is method CANCEL with a higher sequence."""

    uid: str = Field(min_length=1, max_length=255)
    start: AwareDatetime
    end: AwareDatetime
    location: str = ""
    summary: str = Field(min_length=1)
    description: str = ""
    method: Literal["REQUEST", "CANCEL"] = "REQUEST"
    sequence: int = Field(0, ge=0)
    tz: str = "Europe/Copenhagen"
    # Staff id of the ORGANIZER, the case's coordinator: the activity writes their name and
    # address from the staff directory, so replies reach a person (issue 11 point 3).
    organizer_id: str | None = None

    @model_validator(mode="after")
    def _end_after_start(self) -> MeetingInvite:
        if self.end <= self.start:
            raise ValueError("the meeting must end after it starts")
        return self


class NotificationRequest(BaseModel):
    """One message to one recipient, delivered exactly once per `key`.

    `key` is the idempotency key, `notification_key(case_id, purpose, target, occurrence)`.
    `template` names templates/messages/<language>/<template>.txt.j2; `context` is the
    template's variables (JSON-safe values: ISO strings for instants). `optional` marks
    courtesy messages (check-in nudges) that a family who asked for space gets in-app only;
    statutory reminders and invitations are never optional.
    """

    key: str = Field(min_length=1, max_length=400)
    case_id: str = Field(min_length=1)
    purpose: str = Field(min_length=1, max_length=100)
    recipient: Recipient
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)
    language: Language | None = None
    context: dict = {}
    invite: MeetingInvite | None = None
    optional: bool = False
    # Asked for by the recipient this minute (a family member's sign-in code): never held
    # back by the quiet hours.
    asked_for: bool = False
    # The case policy's quiet hours for SMS to the family ("HH:MM-HH:MM", "" = none); None:
    # the notification service's own setting (ONEFAMILY_SMS_QUIET_HOURS).
    quiet_hours: str | None = None


class NotificationResult(BaseModel):
    """`status` deferred means: not sent yet because of quiet hours; call `send_notification`
    again with the same request at or after `not_before` (see activities/notifications.py)."""

    id: str
    key: str
    status: NotificationStatus
    channel: Channel
    not_before: datetime | None = None
    sent_at: datetime | None = None


class RecipientQuery(BaseModel):
    """Ask the staff directory for everyone holding a role (e.g. all managers)."""

    role: Literal["coordinator", "team_member", "manager", "committee", "admin"]
    unit: str | None = None
    # Managers are asked about the case's unit only (need-to-know, DESIGN §9).
    case_id: str | None = None


# ---------------------------------------------------------------- documents


class DocumentKind(StrEnum):
    assessment_report = "assessment_report"
    joint_plan = "joint_plan"
    status_minutes = "status_minutes"
    committee_agenda = "committee_agenda"
    decision_letter = "decision_letter"
    closing_summary = "closing_summary"
    monthly_report = "monthly_report"


class DocumentRequest(BaseModel):
    """Render one immutable document version.

    `case_id` is the case's id; documents that belong to no single case use the id of what
    they belong to: the committee agenda `committee-<committee id>` (version = the meeting's
    number), the monthly report `report-<YYYY-MM>`. `context` comes from
    `activities.document_context.document_context(state, kind, version)` (or
    `agenda_context` / `monthly_report_context`).
    """

    case_id: str = Field(min_length=1, max_length=200)
    kind: DocumentKind
    version: int = Field(ge=1)
    language: Language
    context: dict
    created_by: str = Field(min_length=1)


class DocumentRef(BaseModel):
    id: str
    case_id: str
    kind: DocumentKind
    version: int
    language: Language
    content_hash: str
    pdf_bytes: int = 0


# ---------------------------------------------------------------- pure helpers


def notification_key(case_id: str, purpose: str, target: str, occurrence: object = 1) -> str:
    """The idempotency key: one delivery per (case, purpose, target, occurrence)."""
    return f"{case_id}:{purpose}:{target}:{occurrence}"


def family_recipients(state: CaseState, roles: tuple[str, ...] = ("parent",)) -> list[Recipient]:
    """Family members to write to (default: the parents), with their contact data from the
    case, the family's language and its contact preference. Index = position in
    `state.family.members`, so `family:<i>` stays stable."""
    out: list[Recipient] = []
    for i, m in enumerate(state.family.members):
        if m.role.value not in roles:
            continue
        out.append(Recipient(
            role=RecipientRole.family, id=f"family:{i}", name=m.name, email=m.email,
            phone=m.phone, language=state.family.language,
            contact_preference=str(state.contact_preference),
        ))
    return out


def staff_recipient(role: RecipientRole | str, staff_id: str, language: str | None = None) -> Recipient:
    """A staff member; the activity fills in email/phone/name from the staff directory."""
    return Recipient(role=RecipientRole(role), id=staff_id, language=language)
