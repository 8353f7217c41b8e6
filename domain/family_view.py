"""The family's view of its own case (DESIGN §11): pure, no I/O.

`family_view(state, member_id, now, staff=..., documents=..., messages=..., reads=...)` builds
what `GET /api/v1/family/case` answers and what the portal's pages (/family) render, in the
family's language (the family's, else the municipality's):

- who has the ball now and what happens next, in plain words (from `blocked_on`);
- their plan: their own goals first, the goals with their latest progress from the status
  meetings, the actions with owners and due dates, the services by name;
- the coming meetings (assessment meeting, planned status meeting), each with its calendar
  file (the same UID and SEQUENCE as the invitation the family got: `meeting_invite`);
- the documents meant for them (`FAMILY_DOCUMENT_KINDS`), the messages sent to them, their
  contact preference, their consents, their focus points and requests for a pause;
- who of the staff read their case and when (from the audit log; the family's own reads are
  not shown).

What is NEVER here, because the view is built field by field from a whitelist, never by
copying the state: votes and their reasons, contacts' notes, the assessment, flags (possible
duplicates name other families' cases), the history, the committee's notes, other cases.

The loaders (api/family.py) pass the rows in as the small records below, so this module
stays testable without a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from domain.effects import meeting_invites
from models.case import CaseState, Stage
from models.messaging import MeetingInvite

# Documents a family reads. Not the assessment report (professional internals) nor the
# committee's agenda. Not the joint plan document either: it records the team's votes and
# their reasons, which are never the family's to see; the family reads its plan in this view
# (`plan`) until the plan document has a family edition without them.
FAMILY_DOCUMENT_KINDS = ("status_minutes", "decision_letter", "closing_summary")
# Messages whose text opens the portal (a link, a code): shown without their text, ever.
SIGN_IN_PURPOSES = ("family_invitation", "family_sign_in_code")
LANGUAGES = ("da", "sv", "en")
MAX_READS = 50


@dataclass(frozen=True)
class StaffInfo:
    id: str
    name: str
    discipline: str = ""


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    kind: str
    version: int
    language: str
    created_at: datetime


@dataclass(frozen=True)
class MessageInfo:
    id: str
    recipient_id: str  # "family:<member index>" (the case's messages) or "family:<member id>"
    purpose: str
    channel: str
    status: str
    created_at: datetime
    sent_at: datetime | None = None
    subject: str = ""
    body: str = ""


@dataclass(frozen=True)
class ReadInfo:
    actor: str  # the audit's actor: a staff id, or "family:<member id>"
    at: datetime
    action: str


@dataclass(frozen=True)
class ReaderTotal:
    """One staff member's reads of the case, counted by the database."""

    actor: str
    last_at: datetime
    reads: int


# ---------------------------------------------------------------- words

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "you": "you", "your_coordinator": "your family coordinator", "municipality": "the municipality",
        "team": "the team around your family", "committee": "the municipality's committee",
        "coordinator_named": "your family coordinator, {name}",
        "ball.coordinator_assignment": "The municipality is finding a family coordinator for you.",
        "ball.core_team": "{who} is putting together the team of professionals around your family.",
        "ball.assessment_meeting": "{who} is planning the first meeting with you, where you and the "
                                   "professionals look at your family's situation together.",
        "ball.assessment": "{who} and the team are describing your family's situation and needs, "
                           "together with you.",
        "ball.plan_draft": "{who} is writing the draft of your family's plan.",
        "ball.team_votes": "The team is reviewing your plan (version {version}).",
        "ball.family_approval": "It is your turn: read your plan (version {version}) and tell us "
                                "whether you approve it.",
        "ball.committee": "The municipality's committee is deciding on your plan (version {version}).",
        "ball.status_meeting": "Your plan is under way. Next: the status meeting, where you look at "
                               "how it is going.",
        "ball.consent": "The case waits for you: do you consent to share it with {names}?",
        "ball.paused": "Your case is paused, as agreed.",
        "ball.closed": "Your case is closed.",
        "ball.other": "{who} is working on your case.",
        "next.meeting": "{title}: {when}",
        "next.approval": "Please answer about your plan by {when}.",
        "meeting.assessment": "Meeting about your family's situation",
        "meeting.status": "Status meeting {number}",
        "plan_status.draft": "draft, waiting for decisions", "plan_status.active": "in force",
        "plan_status.superseded": "replaced by a newer version", "plan_status.rejected": "not adopted",
        "decision.pending": "the team has not decided yet", "decision.escalated": "with the committee",
        "decision.team": "decided by the team", "decision.committee": "decided by the committee",
        "decision.rejected": "rejected",
        "goal_status.not_started": "not started", "goal_status.on_track": "on track",
        "goal_status.at_risk": "at risk", "goal_status.achieved": "achieved",
        "goal_status.dropped": "dropped",
        "action_status.open": "not started", "action_status.in_progress": "in progress",
        "action_status.done": "done",
        "doc.status_minutes": "Minutes of status meeting {version}",
        "doc.decision_letter": "The committee's decision on plan version {version}",
        "doc.closing_summary": "Summary at the close of your case",
        "contact.close": "close contact", "contact.normal": "normal contact",
        "contact.space": "more space: fewer messages",
        "consent.active": "in force", "consent.expired": "expired", "consent.revoked": "revoked",
        "consent.core_team": "the whole core team", "covers.case": "the case",
        "covers.documents": "the documents",
        "read.read case": "read your case", "read.read document": "read a document",
        "read.list documents": "looked at your documents",
        "read.list notifications": "looked at your messages",
        "read.read audit log": "looked at who read your case", "read.other": "read your case",
        "message.sign_in": "Sign-in message (its text is not shown here)",
        "stage.referred": "registered", "stage.coordinator_assigned": "coordinator found",
        "stage.team_formed": "team formed", "stage.assessment": "looking at your situation",
        "stage.planning": "making the plan", "stage.escalated": "with the committee",
        "stage.active": "plan under way", "stage.closed": "closed",
        "team.pending_consent": "waits for your consent",
    },
    "da": {
        "you": "jer", "your_coordinator": "jeres familiekoordinator", "municipality": "kommunen",
        "team": "teamet omkring jeres familie", "committee": "kommunens visitationsudvalg",
        "coordinator_named": "jeres familiekoordinator, {name}",
        "ball.coordinator_assignment": "Kommunen finder en familiekoordinator til jer.",
        "ball.core_team": "{who} samler teamet af fagfolk omkring jeres familie.",
        "ball.assessment_meeting": "{who} planlægger det første møde med jer, hvor I og fagfolkene "
                                   "sammen ser på jeres families situation.",
        "ball.assessment": "{who} og teamet beskriver jeres families situation og behov sammen med jer.",
        "ball.plan_draft": "{who} skriver udkastet til jeres families plan.",
        "ball.team_votes": "Teamet gennemgår jeres plan (version {version}).",
        "ball.family_approval": "Det er jeres tur: læs jeres plan (version {version}), og fortæl os, "
                                "om I godkender den.",
        "ball.committee": "Kommunens visitationsudvalg træffer afgørelse om jeres plan (version {version}).",
        "ball.status_meeting": "Jeres plan er i gang. Næste skridt: statusmødet, hvor I ser på, "
                               "hvordan det går.",
        "ball.consent": "Sagen venter på jer: giver I samtykke til at dele den med {names}?",
        "ball.paused": "Jeres sag er sat på pause, som aftalt.",
        "ball.closed": "Jeres sag er afsluttet.",
        "ball.other": "{who} arbejder med jeres sag.",
        "next.meeting": "{title}: {when}",
        "next.approval": "Giv os venligst svar på jeres plan senest {when}.",
        "meeting.assessment": "Møde om jeres families situation",
        "meeting.status": "Statusmøde {number}",
        "plan_status.draft": "udkast, venter på afgørelse", "plan_status.active": "gælder nu",
        "plan_status.superseded": "erstattet af en nyere version", "plan_status.rejected": "ikke vedtaget",
        "decision.pending": "teamet har ikke besluttet endnu", "decision.escalated": "hos udvalget",
        "decision.team": "besluttet af teamet", "decision.committee": "besluttet af udvalget",
        "decision.rejected": "afvist",
        "goal_status.not_started": "ikke startet", "goal_status.on_track": "på rette vej",
        "goal_status.at_risk": "i fare", "goal_status.achieved": "nået", "goal_status.dropped": "opgivet",
        "action_status.open": "ikke startet", "action_status.in_progress": "i gang",
        "action_status.done": "gjort",
        "doc.status_minutes": "Referat af statusmøde {version}",
        "doc.decision_letter": "Udvalgets afgørelse om plan version {version}",
        "doc.closing_summary": "Opsummering ved afslutningen af jeres sag",
        "contact.close": "tæt kontakt", "contact.normal": "almindelig kontakt",
        "contact.space": "mere ro: færre beskeder",
        "consent.active": "gælder", "consent.expired": "udløbet", "consent.revoked": "trukket tilbage",
        "consent.core_team": "hele kerneteamet", "covers.case": "sagen", "covers.documents": "dokumenterne",
        "read.read case": "læste jeres sag", "read.read document": "læste et dokument",
        "read.list documents": "så jeres dokumenter", "read.list notifications": "så jeres beskeder",
        "read.read audit log": "så, hvem der har læst jeres sag", "read.other": "læste jeres sag",
        "message.sign_in": "Besked til at logge ind (teksten vises ikke her)",
        "stage.referred": "registreret", "stage.coordinator_assigned": "koordinator fundet",
        "stage.team_formed": "team samlet", "stage.assessment": "vi ser på jeres situation",
        "stage.planning": "planen laves", "stage.escalated": "hos udvalget",
        "stage.active": "planen er i gang", "stage.closed": "afsluttet",
        "team.pending_consent": "venter på jeres samtykke",
    },
    "sv": {
        "you": "er", "your_coordinator": "ert familjeombud", "municipality": "kommunen",
        "team": "teamet runt er familj", "committee": "kommunens nämnd",
        "coordinator_named": "ert familjeombud, {name}",
        "ball.coordinator_assignment": "Kommunen utser ett familjeombud åt er.",
        "ball.core_team": "{who} sätter ihop teamet av yrkespersoner runt er familj.",
        "ball.assessment_meeting": "{who} planerar det första mötet med er, där ni och yrkespersonerna "
                                   "tillsammans ser på er familjs situation.",
        "ball.assessment": "{who} och teamet beskriver er familjs situation och behov tillsammans med er.",
        "ball.plan_draft": "{who} skriver utkastet till er familjs plan.",
        "ball.team_votes": "Teamet går igenom er plan (version {version}).",
        "ball.family_approval": "Det är er tur: läs er plan (version {version}) och berätta för oss om "
                                "ni godkänner den.",
        "ball.committee": "Kommunens nämnd fattar beslut om er plan (version {version}).",
        "ball.status_meeting": "Er plan är igång. Nästa steg: uppföljningsmötet, där ni ser hur det går.",
        "ball.consent": "Ärendet väntar på er: samtycker ni till att dela det med {names}?",
        "ball.paused": "Ert ärende är pausat, som överenskommet.",
        "ball.closed": "Ert ärende är avslutat.",
        "ball.other": "{who} arbetar med ert ärende.",
        "next.meeting": "{title}: {when}",
        "next.approval": "Ge oss svar om er plan senast {when}.",
        "meeting.assessment": "Möte om er familjs situation",
        "meeting.status": "Uppföljningsmöte {number}",
        "plan_status.draft": "utkast, väntar på beslut", "plan_status.active": "gäller nu",
        "plan_status.superseded": "ersatt av en nyare version", "plan_status.rejected": "inte antagen",
        "decision.pending": "teamet har inte beslutat än", "decision.escalated": "hos nämnden",
        "decision.team": "beslutad av teamet", "decision.committee": "beslutad av nämnden",
        "decision.rejected": "avslagen",
        "goal_status.not_started": "inte påbörjat", "goal_status.on_track": "på väg",
        "goal_status.at_risk": "i fara", "goal_status.achieved": "uppnått", "goal_status.dropped": "avbrutet",
        "action_status.open": "inte påbörjad", "action_status.in_progress": "pågår",
        "action_status.done": "klar",
        "doc.status_minutes": "Protokoll från uppföljningsmöte {version}",
        "doc.decision_letter": "Nämndens beslut om plan version {version}",
        "doc.closing_summary": "Sammanfattning när ert ärende avslutades",
        "contact.close": "tät kontakt", "contact.normal": "vanlig kontakt",
        "contact.space": "mer utrymme: färre meddelanden",
        "consent.active": "gäller", "consent.expired": "har gått ut", "consent.revoked": "återkallat",
        "consent.core_team": "hela kärnteamet", "covers.case": "ärendet", "covers.documents": "dokumenten",
        "read.read case": "läste ert ärende", "read.read document": "läste ett dokument",
        "read.list documents": "tittade på era dokument",
        "read.list notifications": "tittade på era meddelanden",
        "read.read audit log": "tittade på vem som läst ert ärende", "read.other": "läste ert ärende",
        "message.sign_in": "Inloggningsmeddelande (texten visas inte här)",
        "stage.referred": "registrerat", "stage.coordinator_assigned": "familjeombud utsett",
        "stage.team_formed": "team bildat", "stage.assessment": "vi ser på er situation",
        "stage.planning": "planen tas fram", "stage.escalated": "hos nämnden",
        "stage.active": "planen är igång", "stage.closed": "avslutat",
        "team.pending_consent": "väntar på ert samtycke",
    },
}


def language(state: CaseState) -> str:
    lang = state.family.language or state.policy.default_language
    return lang if lang in TEXTS else "en"


def texts(lang: str) -> dict[str, str]:
    """The view's words in one language (English for any word a translation lacks)."""
    return {**TEXTS["en"], **TEXTS.get(lang, {})}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _name(staff: Mapping[str, StaffInfo], staff_id: str | None) -> str | None:
    if not staff_id:
        return None
    info = staff.get(staff_id)
    return info.name if info is not None else staff_id


def _person(staff: Mapping[str, StaffInfo], staff_id: str) -> dict:
    info = staff.get(staff_id)
    return {"id": staff_id, "name": info.name if info else staff_id,
            "discipline": info.discipline if info else ""}


def _owner(staff: Mapping[str, StaffInfo], owner: str | None, t: dict[str, str]) -> str | None:
    """An action's or goal's owner in words: a staff member's name, "you" for the family, or
    the owner as the plan names it (e.g. "school")."""
    if not owner:
        return None
    if owner == "family":
        return t["you"]
    return _name(staff, owner)


# ---------------------------------------------------------------- who has the ball

_VERSION = re.compile(r"\bv(\d+)\b")
BALL_KEYS = (
    ("coordinator assignment", "coordinator_assignment"), ("core team", "core_team"),
    ("assessment meeting", "assessment_meeting"), ("ICS assessment", "assessment"),
    ("committee", "committee"), ("next status meeting", "status_meeting"),
    ("joint plan draft", "plan_draft"), ("team votes", "team_votes"),
    ("family approval", "family_approval"), ("the family's consent", "consent"),
)


def ball_key(state: CaseState) -> str:
    """What the case waits for, as one of the `ball.*` keys."""
    if state.stage is Stage.closed:
        return "closed"
    b = state.blocked_on
    if b is None:
        return "other"
    for prefix, key in BALL_KEYS:
        if b.what.startswith(prefix):
            return key
    return "other"


def who_has_the_ball(state: CaseState, now: datetime, staff: Mapping[str, StaffInfo] | None = None,
                     lang: str | None = None) -> dict:
    staff = staff or {}
    t = texts(lang or language(state))
    key = ball_key(state)
    b = state.blocked_on
    owner = b.owner if b is not None else None
    coordinator = state.coordinator_id
    if key in ("closed",):
        who, who_text = None, None
    elif owner == "family":
        who, who_text = "family", t["you"]
    elif owner == "manager" or (owner is None and coordinator is None):
        who, who_text = "municipality", t["municipality"]
    elif owner == "committee":
        who, who_text = "committee", t["committee"]
    elif owner and owner == coordinator:
        who = "coordinator"
        name = _name(staff, coordinator)
        who_text = t["coordinator_named"].format(name=name) if name else t["your_coordinator"]
    elif owner:
        who, who_text = "team", t["team"]
    else:
        who, who_text = "coordinator", t["your_coordinator"]
    version = _VERSION.search(b.what) if b is not None else None
    names = ", ".join(_name(staff, m.staff_id) or m.staff_id for m in state.team
                      if getattr(m, "status", "active") == "pending_consent")
    if state.paused and key not in ("closed", "consent"):
        key = "paused"
    text = t[f"ball.{key}"].format(who=who_text[:1].upper() + who_text[1:] if who_text else "",
                                   version=version.group(1) if version else "", names=names)
    return {
        "key": key,
        "who": who,
        "who_text": who_text,
        "your_turn": who == "family",
        "text": text,
        "since": _iso(b.since) if b is not None else None,
        "next_due_at": _iso(b.next_due_at) if b is not None else None,
    }


# ---------------------------------------------------------------- the plan


def _progress(state: CaseState, t: dict[str, str]) -> dict[str, dict]:
    """Each goal's latest progress from the status meetings held."""
    latest: dict[str, dict] = {}
    for meeting in sorted(state.status_meetings, key=lambda m: (m.at, m.number)):
        for g in meeting.goal_progress:
            latest[g.goal_id] = {"status": g.status.value, "status_text": t[f"goal_status.{g.status.value}"],
                                 "note": g.note, "at": _iso(meeting.at), "meeting_number": meeting.number}
    return latest


def family_can_respond(state: CaseState) -> bool:
    """Is there a plan version the family can approve or reject now (the workflow decides)?"""
    plan = state.plan
    return (state.stage in (Stage.planning, Stage.escalated, Stage.active) and plan is not None
            and plan.status == "draft" and plan.family_approved is not True)


def plan_view(state: CaseState, staff: Mapping[str, StaffInfo] | None = None,
              lang: str | None = None) -> dict | None:
    staff = staff or {}
    t = texts(lang or language(state))
    plan = state.plan
    if plan is None:
        return None
    progress = _progress(state, t)
    active = state.active_plan
    return {
        "version": plan.version,
        "status": plan.status,
        "status_text": t[f"plan_status.{plan.status}"],
        "decision": plan.decision,
        "decision_text": t[f"decision.{plan.decision}"],
        "created_at": _iso(plan.created_at),
        "decided_at": _iso(plan.decided_at),
        "family_approved": plan.family_approved,
        "family_comment": plan.family_comment,
        "waiting_for_your_answer": family_can_respond(state),
        "active_version": active.version if active else None,
        "family_goals": list(plan.family_goals),
        "goals": [{"id": g.id, "text": g.text, "owner": g.owner, "owner_name": _owner(staff, g.owner, t),
                   "progress": progress.get(g.id)} for g in plan.goals],
        "actions": [{"id": a.id, "goal_id": a.goal_id, "text": a.text, "owner": a.owner,
                     "owner_name": _owner(staff, a.owner, t), "due": a.due.isoformat() if a.due else None,
                     "status": a.status, "status_text": t[f"action_status.{a.status}"]}
                    for a in plan.actions],
        "services": [{"name": s.name, "paragraph": s.paragraph} for s in plan.services],
    }


# ---------------------------------------------------------------- meetings


def meeting_ref(name: str) -> str:
    """"assessment" -> "assessment"; "status-3" -> "3" (the address of its calendar file)."""
    return name.removeprefix("status-")


def meeting_invite(state: CaseState, ref: str) -> MeetingInvite | None:
    """The coming meeting `ref` ("assessment" or a status meeting's number) as the invitation
    the family got (same UID and SEQUENCE), for its calendar file; None if there is none."""
    for name, invite, _ in meeting_invites(state):
        if meeting_ref(name) == ref:
            return invite
    return None


def meetings_view(state: CaseState, now: datetime, staff: Mapping[str, StaffInfo] | None = None,
                  lang: str | None = None, ics_url: str = "/api/v1/family/meetings/{ref}.ics") -> list[dict]:
    staff = staff or {}
    t = texts(lang or language(state))
    out = []
    for name, invite, participants in meeting_invites(state):
        if invite.end < now:
            continue  # held (or overdue to be recorded): its minutes follow as a document
        ref = meeting_ref(name)
        kind = "assessment" if name == "assessment" else "status"
        out.append({
            "ref": ref, "kind": kind,
            "number": None if kind == "assessment" else int(ref),
            "title": t[f"meeting.{kind}"].format(number=ref),
            "at": _iso(invite.start), "ends_at": _iso(invite.end), "location": invite.location,
            "participants": [_person(staff, p) for p in dict.fromkeys(participants) if p != "family"],
            "you_are_invited": "family" in participants,
            "ics_url": ics_url.format(ref=ref),
        })
    return sorted(out, key=lambda m: m["at"])


# ---------------------------------------------------------------- documents, messages, reads


def family_documents(documents: Iterable[DocumentInfo], lang: str = "en",
                     url: str = "/api/v1/family/documents/{id}") -> list[dict]:
    t = texts(lang)
    docs = [d for d in documents if d.kind in FAMILY_DOCUMENT_KINDS]
    return [{"id": d.id, "kind": d.kind, "version": d.version, "language": d.language,
             "title": t[f"doc.{d.kind}"].format(version=d.version), "created_at": _iso(d.created_at),
             "url": url.format(id=d.id), "pdf_url": url.format(id=d.id) + "?format=pdf"}
            for d in sorted(docs, key=lambda d: (d.created_at, d.id), reverse=True)]


def member_of_recipient(state: CaseState, recipient_id: str) -> str | None:
    """The member id a family message went to: "family:<index>" (the case's messages, by the
    member's place in the family) or "family:<member id>" (sign-in messages)."""
    rest = recipient_id.removeprefix("family:")
    if rest == recipient_id:
        return None
    if rest.isdigit():
        i = int(rest)
        return state.family.members[i].id if i < len(state.family.members) else None
    return rest if any(m.id == rest for m in state.family.members) else None


def family_messages(state: CaseState, member_id: str, messages: Iterable[MessageInfo],
                    lang: str | None = None) -> list[dict]:
    """Messages sent to the family, newest first. The text only of the signed-in member's own
    messages, and never of a sign-in message (a link or a code opens the portal)."""
    t = texts(lang or language(state))
    out = []
    for m in sorted(messages, key=lambda m: (m.created_at, m.id), reverse=True):
        to = member_of_recipient(state, m.recipient_id)
        if to is None:
            continue
        sign_in = m.purpose in SIGN_IN_PURPOSES
        mine = to == member_id
        out.append({
            "id": m.id, "to_member_id": to, "to_you": mine, "purpose": m.purpose, "channel": m.channel,
            "status": m.status, "created_at": _iso(m.created_at), "sent_at": _iso(m.sent_at),
            "subject": t["message.sign_in"] if sign_in else m.subject,
            "body": m.body if mine and not sign_in else None,
        })
    return out


def _staff_reader(actor: str) -> bool:
    return bool(actor) and actor != "-" and not actor.startswith("family:")


def readers_view(reads: Iterable[ReadInfo], staff: Mapping[str, StaffInfo] | None = None,
                 lang: str = "en",
                 totals: Iterable[ReaderTotal] | None = None) -> tuple[list[dict], list[dict]]:
    """(readers: each staff member once, with their last read and how many — from `totals`
    when the database counted them, else from `reads`; reads: the most recent reads, newest
    first). The family's own reads and unauthenticated rows are left out."""
    staff = staff or {}
    t = texts(lang)
    rows = [r for r in reads if _staff_reader(r.actor)]
    rows.sort(key=lambda r: r.at, reverse=True)
    readers: dict[str, dict] = {}
    if totals is not None:
        for total in sorted((x for x in totals if _staff_reader(x.actor)), key=lambda x: x.last_at,
                            reverse=True):
            readers[total.actor] = {**_person(staff, total.actor), "last_read_at": _iso(total.last_at),
                                    "reads": total.reads}
    else:
        for r in rows:
            entry = readers.get(r.actor)
            if entry is None:
                readers[r.actor] = {**_person(staff, r.actor), "last_read_at": _iso(r.at), "reads": 1}
            else:
                entry["reads"] += 1
    recent = [{"at": _iso(r.at), **_person(staff, r.actor), "action": r.action,
               "text": t.get(f"read.{r.action}", t["read.other"])} for r in rows[:MAX_READS]]
    return list(readers.values()), recent


# ---------------------------------------------------------------- consents and the family's own


def consents_view(state: CaseState, member_id: str, staff: Mapping[str, StaffInfo] | None = None,
                  lang: str | None = None) -> list[dict]:
    staff = staff or {}
    t = texts(lang or language(state))
    out = []
    for c in getattr(state, "consents", []) or []:
        status = getattr(c.status, "value", c.status)
        out.append({
            "id": c.id, "member_id": c.member_id, "given_by_you": c.member_id == member_id,
            "staff": [_person(staff, s) for s in c.staff_ids], "departments": list(c.departments),
            "core_team": bool(getattr(c, "core_team", False)),
            "covers": list(c.covers), "covers_text": [t[f"covers.{w}"] for w in c.covers],
            "given_at": _iso(c.given_at), "expires_at": c.expires_at.isoformat() if c.expires_at else None,
            "revoked_at": _iso(c.revoked_at), "status": status,
            "status_text": t.get(f"consent.{status}", status),
            "source": getattr(c, "source", None),
        })
    return out


def focus_points_view(state: CaseState, member_id: str) -> list[dict]:
    return [{"number": e.number, "text": e.text, "meeting_number": e.meeting_number, "at": _iso(e.at),
             "by_you": e.member_id == member_id, "confirmed_at": _iso(e.confirmed_at)}
            for e in getattr(state, "focus_points", []) or []]


def pause_requests_view(state: CaseState, member_id: str) -> list[dict]:
    return [{"number": e.number, "reason": e.reason, "at": _iso(e.at), "by_you": e.member_id == member_id,
             "handled_at": _iso(e.handled_at)}
            for e in getattr(state, "pause_requests", []) or []]


# ---------------------------------------------------------------- the whole view


def family_view(state: CaseState, member_id: str, now: datetime, *,
                staff: Mapping[str, StaffInfo] | None = None,
                documents: Iterable[DocumentInfo] = (),
                messages: Iterable[MessageInfo] = (),
                reads: Iterable[ReadInfo] = (),
                readers: Iterable[ReaderTotal] | None = None) -> dict:
    """The family's view of its case for the signed-in member `member_id` (see the module
    docstring). `staff`: names of the staff ids the case names (unknown ids show as they are);
    `documents`, `messages`, `reads` (recent audit rows), `readers` (per staff member, counted):
    the case's rows — anything not meant for the family is filtered out here."""
    staff = staff or {}
    lang = language(state)
    t = texts(lang)
    me = next((m for m in state.family.members if m.id == member_id), None)
    who_read, recent = readers_view(reads, staff, lang, readers)
    pref = state.contact_preference.value
    ball = who_has_the_ball(state, now, staff, lang)
    meetings = meetings_view(state, now, staff, lang)
    next_steps = [{"kind": "meeting", "text": t["next.meeting"].format(title=m["title"], when=m["at"]),
                   "at": m["at"]} for m in meetings]
    approval_due = next((d.due_at for d in state.deadlines if d.kind.value == "family_approval"
                         and d.is_open()), None)
    if approval_due is not None and family_can_respond(state):
        next_steps.append({"kind": "plan_answer", "text": t["next.approval"].format(when=_iso(approval_due)),
                           "at": _iso(approval_due)})
    next_steps.sort(key=lambda s: s["at"] or "")
    coordinator = state.coordinator_id
    return {
        "case_id": state.id,
        "version": state.version,
        "language": lang,
        "family_name": state.family.name,
        "you": {"member_id": member_id, "name": me.name if me else None,
                "role": me.role.value if me else None},
        "members": [{"id": m.id, "name": m.name, "role": m.role.value} for m in state.family.members],
        "stage": state.stage.value,
        "stage_text": t[f"stage.{state.stage.value}"],
        "paused": state.paused,
        "ball": ball,
        "next_steps": next_steps,
        "coordinator": _person(staff, coordinator) if coordinator else None,
        "team": [{**_person(staff, m.staff_id), "department": m.department,
                  "waiting_for_consent": getattr(m, "status", "active") == "pending_consent",
                  "status_text": t["team.pending_consent"]
                  if getattr(m, "status", "active") == "pending_consent" else None}
                 for m in state.team if m.staff_id != coordinator],
        "plan": plan_view(state, staff, lang),
        "meetings": meetings,
        "documents": family_documents(documents, lang),
        "messages": family_messages(state, member_id, messages, lang),
        "contact_preference": {"value": pref, "text": t[f"contact.{pref}"]},
        "consents": consents_view(state, member_id, staff, lang),
        "focus_points": focus_points_view(state, member_id),
        "pause_requests": pause_requests_view(state, member_id),
        "readers": who_read,
        "reads": recent,
        "closed": ({"at": _iso(state.closure.at), "reason": state.closure.reason.value}
                   if state.closure else None),
    }


def staff_ids_of(state: CaseState) -> set[str]:
    """Every staff id the family view may name (for the loader's one directory query)."""
    ids = set(state.team_ids)
    for plan in state.plans[-1:]:
        ids.update(g.owner for g in plan.goals if g.owner)
        ids.update(a.owner for a in plan.actions if a.owner)
    for consent in getattr(state, "consents", []) or []:
        ids.update(consent.staff_ids)
    for _, _, participants in meeting_invites(state):
        ids.update(p for p in participants if p != "family")
    return ids
