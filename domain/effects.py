"""What the outside world must hear of a case: messages and documents, derived from its state.

Pure and deterministic. The workflow asks `pending(state, done)` after every change and hands
each effect to an activity; an effect's key is its business key (case + purpose + target +
occurrence), so a retried activity or a replayed workflow never sends or renders twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain import family_effects
from models.case import CaseState, DeadlineKind, Stage
from models.messaging import (
    DocumentKind,
    DocumentRequest,
    MeetingInvite,
    NotificationRequest,
    Recipient,
    RecipientQuery,
    RecipientRole,
    family_recipients,
    notification_key,
    staff_recipient,
)

ROLE_QUERY = {"manager": "manager", "committee": "committee"}


@dataclass(frozen=True)
class Effect:
    key: str
    notification: NotificationRequest | None = None
    # Send `notification` to everyone holding this role (resolved from the staff directory).
    fan_out: RecipientQuery | None = None
    document: tuple[DocumentKind, int] | None = None


def _language(state: CaseState) -> str:
    return state.family.language or state.policy.default_language


def _to_role(state: CaseState, role: str, owner: str | None) -> tuple[Recipient | None, str | None]:
    """A ladder role -> one staff member, or a role to fan out to."""
    if role == "owner":
        role = owner if owner in ROLE_QUERY else "coordinator"
        if owner and owner not in ROLE_QUERY:
            return staff_recipient(RecipientRole.coordinator, owner), None
    if role == "coordinator":
        if state.coordinator_id:
            return staff_recipient(RecipientRole.coordinator, state.coordinator_id), None
        role = "manager"  # no coordinator yet: the manager has the ball
    return None, ROLE_QUERY.get(role, "manager")


def _fixed_recipient(state: CaseState, to: str) -> tuple[Recipient | None, str | None]:
    """The recipient written on a fired reminder (`stamp_recipients`): a staff id or a role."""
    if to.startswith("role:"):
        return None, to.removeprefix("role:")
    return staff_recipient(RecipientRole.coordinator, to), None


def _events_told(case_id: str, done: set[str]) -> set[str]:
    """The deadline events anybody was told of: the purpose part of the done keys
    `<case>:deadline:<kind>#<n>:<event>#<step>:<target>:<occurrence>` (a case id has no colon)."""
    head = f"{case_id}:deadline:"
    return {":".join(k.split(":", 4)[1:4]) for k in done if k.startswith(head)}


def stamp_recipients(state: CaseState, now: datetime) -> None:
    """Fix the recipient of every clock event that fired at `now` (issue 13 point 5): who is
    told of a deadline is decided when its event happens, not when the message goes out, so
    an assignment or a reassignment afterwards changes neither the recipient nor the key."""
    fired = now.isoformat()
    for d in state.deadlines:
        if d.kind is DeadlineKind.consent_renewal:
            continue
        for sent in d.reminders_sent:
            if sent.get("at") == fired and "to" not in sent and not sent.get("skipped"):
                recipient, role = _to_role(state, sent["to_role"], d.owner)
                sent["to"] = recipient.id if recipient is not None else f"role:{role}"


def _deadline_effects(state: CaseState, done: set[str], by_event: bool = False) -> list[Effect]:
    """One notice per clock event. `by_event` (patch "notice-by-event"): the recipient is the
    one stamped when the event fired, an event already told to anybody is never told again,
    and a deadline that is met or cancelled before its notice left drops the notice."""
    out: list[Effect] = []
    silenced = family_effects.silenced(state)
    told: set[str] | None = None
    for d in state.deadlines:
        if d.kind is DeadlineKind.consent_renewal:  # to the family (DESIGN §11)
            out += family_effects.renewal_effects(state, d, done, _language(state))
            continue
        if by_event and not d.is_open():
            continue  # met or cancelled: what was sent stays sent, nothing more goes out
        for sent in d.reminders_sent:
            if sent.get("skipped"):
                continue
            purpose = f"deadline:{d.kind.value}#{d.occurrence}:{sent['kind']}#{sent['step']}"
            if by_event and "to" in sent:
                recipient, role = _fixed_recipient(state, sent["to"])
            else:
                recipient, role = _to_role(state, sent["to_role"], d.owner)
            if recipient is not None and recipient.id in silenced:
                continue
            key = notification_key(state.id, purpose, recipient.id if recipient else f"role:{role}")
            if key in done:
                continue
            if by_event and "to" not in sent:
                # Fired before the recipients were stamped (a run continued from an older
                # one): told to anybody already means told.
                if told is None:
                    told = _events_told(state.id, done)
                if purpose in told:
                    continue
            request = NotificationRequest(
                key=key,
                case_id=state.id,
                purpose=purpose,
                recipient=recipient or Recipient(role=RecipientRole(role), id=f"role:{role}"),
                template="deadline_reminder",
                context={"deadline": d.kind.value, "due_at": d.due_at.isoformat(),
                         "overdue": sent["kind"] != "reminder", "step": sent["to_role"],
                         "legal_basis": d.legal_basis},
            )
            out.append(Effect(key=request.key, notification=request,
                              fan_out=RecipientQuery(role=role, case_id=state.id) if role else None))
    return out


MEETING_LENGTH = timedelta(hours=1, minutes=30)


def meeting_invites(state: CaseState) -> list[tuple[str, MeetingInvite, list[str]]]:
    """The meetings a case has coming (name "assessment" or "status-<n>", the invitation,
    the participants): one source for the invitations sent and the family's calendar file."""
    if state.stage is Stage.closed:
        return []
    return _meetings(state)


def _meetings(state: CaseState) -> list[tuple[str, MeetingInvite, list[str]]]:
    """The meetings the case holds as planned (still there once it is closed)."""
    out = []
    meeting = state.assessment_meeting
    if meeting is not None:
        sequence = max(sum(1 for h in state.history
                           if h.event.startswith("assessment_meeting_")) - 1, 0)
        out.append(("assessment", _invite(state, "assessment", "ICS assessment meeting", meeting.at,
                                          meeting.location, sequence), meeting.participants))
    planned = state.planned_meeting
    if planned is not None:
        name = f"status-{planned.number}"
        out.append((name, _invite(state, name, f"Status meeting {planned.number}", planned.at,
                                  planned.location, planned.sequence), planned.participants))
    return out


def _invite(state: CaseState, name: str, summary: str, at: datetime, location: str,
            sequence: int) -> MeetingInvite:
    return MeetingInvite(uid=f"{state.id}-{name}@onefamily", start=at, end=at + MEETING_LENGTH,
                         location=location, summary=summary, sequence=sequence,
                         tz=state.policy.timezone, organizer_id=state.coordinator_id)


def _invitation_purpose(name: str) -> str:
    return "assessment_meeting_invitation" if name == "assessment" else f"{name}_invitation"


def _cancel_effects(state: CaseState, done: set[str]) -> list[Effect]:
    """METHOD:CANCEL (SEQUENCE one up, same UID) to everyone who holds an invitation they
    should not hold any more (patch "meeting-cancel"): every invitee when the case closes
    with the meeting still ahead, and a team member the family's consent no longer covers
    (or who left the team). Keyed by the last invitation that person got, so a person
    invited again and removed again is told again, and nobody twice of one removal."""
    out: list[Effect] = []
    closed = state.stage is Stage.closed
    team = set(state.team_ids) - family_effects.silenced(state)
    for name, invite, participants in _meetings(state):
        family = family_recipients(state) if "family" in participants else []
        if closed:
            if state.closure is None or invite.start <= state.closure.at:
                continue  # held, or due to be recorded: not cancelled
            keep: set[str] = set()
        else:
            if name == "assessment" and state.assessment_completed_at is not None:
                continue
            keep = team | {r.id for r in family}
        purpose = _invitation_purpose(name)
        cancel_purpose = purpose.removesuffix("_invitation") + "_cancelled"
        staff = [staff_recipient(RecipientRole.team, p) for p in dict.fromkeys(participants)
                 if p != "family"]
        for recipient in staff + family:
            if recipient.id in keep:
                continue
            invited = next((k for k in range(invite.sequence + 1, 0, -1)
                            if notification_key(state.id, purpose, recipient.id, k) in done), None)
            if invited is None:
                continue  # never invited: nothing to take back
            key = notification_key(state.id, cancel_purpose, recipient.id, invited)
            if key in done:
                continue
            cancel = invite.model_copy(update={"method": "CANCEL", "sequence": invite.sequence + 1})
            request = _meeting_message(state, key, cancel_purpose, recipient, name, cancel)
            out.append(Effect(key=request.key, notification=request))
    return out


def _invitation_effects(state: CaseState, done: set[str]) -> list[Effect]:
    out: list[Effect] = []
    for name, invite, participants in meeting_invites(state):
        out += _invitations(state, done, name, invite, participants)
    return out


def _invitations(state: CaseState, done: set[str], name: str, invite: MeetingInvite,
                 participants: list[str]) -> list[Effect]:
    purpose = _invitation_purpose(name)
    # Nobody the family's consent does not cover is invited (DESIGN §11).
    team = set(state.team_ids) - family_effects.silenced(state)
    if all(notification_key(state.id, purpose, p, invite.sequence + 1) in done
           for p in participants if p in team):
        return []  # the staff were invited: so was the family, in the same pass
    recipients = [staff_recipient(RecipientRole.team, p) for p in dict.fromkeys(participants)
                  if p in team]
    if "family" in participants:
        recipients += family_recipients(state)
    out = []
    for recipient in recipients:
        key = notification_key(state.id, purpose, recipient.id, invite.sequence + 1)
        request = _meeting_message(state, key, purpose, recipient, name, invite)
        out.append(Effect(key=request.key, notification=request))
    return out


def _meeting_message(state: CaseState, key: str, purpose: str, recipient: Recipient, name: str,
                     invite: MeetingInvite) -> NotificationRequest:
    """An invitation or its CANCEL: the same template, the family's language for the family."""
    return NotificationRequest(
        key=key, case_id=state.id, purpose=purpose, recipient=recipient,
        template="meeting_invitation",
        language=_language(state) if recipient.role is RecipientRole.family else None,
        context={"meeting": "assessment" if name == "assessment" else "status",
                 "coordinator_name": ""},
        invite=invite,
    )


def _plan_effects(state: CaseState, done: set[str]) -> list[Effect]:
    out = []
    # Every drafted version goes to the family (derived from the versions, not from the
    # current status: a fast approval must not swallow the message).
    for plan in state.plans:
        if not any(k.startswith(f"{state.id}:plan_for_approval:v{plan.version}:") for k in done):
            for recipient in family_recipients(state):
                purpose = f"plan_for_approval:v{plan.version}"
                request = NotificationRequest(
                    key=notification_key(state.id, purpose, recipient.id), case_id=state.id,
                    purpose=purpose, recipient=recipient, template="plan_for_approval",
                    language=_language(state),
                    context={"plan_version": plan.version, "coordinator_name": "",
                             "due_at": _approval_due(state, plan.version)},
                )
                out.append(Effect(key=request.key, notification=request))
    return out


def _approval_due(state: CaseState, version: int) -> str:
    occurrence = [p.version for p in state.plans].index(version) + 1
    due = next((d.due_at for d in state.deadlines
                if d.kind.value == "family_approval" and d.occurrence == occurrence), None)
    return due.isoformat() if due else ""


def _document_effects(state: CaseState) -> list[Effect]:
    docs: list[tuple[DocumentKind, int]] = []
    if state.assessment_completed_at is not None:
        docs.append((DocumentKind.assessment_report, 1))
    docs += [(DocumentKind.joint_plan, p.version) for p in state.plans
             if p.decision in ("team", "committee") and p.family_approved is True]
    docs += [(DocumentKind.status_minutes, m.number) for m in state.status_meetings]
    docs += [(DocumentKind.decision_letter, i.plan_version) for i in state.escalations
             if i.status == "decided"]
    if state.closure is not None:
        docs.append((DocumentKind.closing_summary, 1))
    return [Effect(key=f"{state.id}:document:{kind.value}:v{version}", document=(kind, version))
            for kind, version in docs]


def pending(state: CaseState, done: set[str], by_event: bool = False,
            cancels: bool = False, reminders_at: datetime | None = None) -> list[Effect]:
    """Effects not yet handed over. Keys are checked before requests are built: this runs
    after every change of a case that may have years of history. `by_event`: notices keyed
    by their event, recipients fixed when it happened (workflows/case.py, "notice-by-event");
    `cancels`: meeting cancellations ("meeting-cancel"); `reminders_at`: the family's SMS
    reminders due by then ("family-sms-reminder")."""
    effects = (_document_effects(state) + _deadline_effects(state, done, by_event)
               + _invitation_effects(state, done) + _plan_effects(state, done)
               + family_effects.notice_effects(state, done)
               + (_cancel_effects(state, done) if cancels else [])
               + (family_effects.reminder_effects(state, done, reminders_at)
                  if reminders_at is not None else []))
    return [e for e in effects if e.key not in done]


def still_wanted(state: CaseState, effect: Effect) -> bool:
    """Is an effect computed a while ago (the effects loop works through a list) still to be
    handed over? No for a deadline notice whose deadline was met or cancelled meanwhile."""
    request = effect.notification
    if request is not None and request.purpose.startswith(family_effects.REMINDER_PURPOSE + ":"):
        return family_effects.reminder_still_wanted(state, request.purpose)
    if request is not None and request.invite is not None and request.invite.method == "REQUEST":
        # A meeting moved (or cancelled) meanwhile: the stale invitation stays unsent.
        return any(i.uid == request.invite.uid and i.sequence == request.invite.sequence
                   for _, i, _ in meeting_invites(state))
    if request is None or not request.purpose.startswith("deadline:"):
        return True
    kind, _, occurrence = request.purpose.split(":")[1].partition("#")
    return any(d.kind.value == kind and str(d.occurrence) == occurrence and d.is_open()
               for d in state.deadlines)


def document_request(state: CaseState, kind: DocumentKind, version: int, context: dict) -> DocumentRequest:
    return DocumentRequest(case_id=state.id, kind=kind, version=version, language=_language(state),
                           context=context, created_by="system")
