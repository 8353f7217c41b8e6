"""The case's history, deadlines, reasons and messages in plain sentences (DESIGN §10).

Pure, no I/O: every function turns a piece of the case into a `Term` — a text key of
`templates/pages/i18n/timeline.<lang>.json` (or case.*) and its values. A value is a plain
string or number, a `When` (an instant, formatted in the page's language and the
municipality's time zone), another `Term` (a deadline kind, a stage … in words) or a list of
those. `render()` turns a Term into the sentence with the page's `translate` and formatters,
so machine keys ("deadline:first_contact#1:escalation#1", "overdue:first_contact") never
reach a reader. Staff are named from the directory (`names`: id → name), never by id where a
name is known.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from models.case import CaseState, Deadline, HistoryEntry, Stage

# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Term:
    """A text key and its values: a sentence, or words that go into one."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class When:
    at: datetime | str | None
    date_only: bool = False


def render(term: object, translate: Callable[..., str],
           when: Callable[[object], str], day: Callable[[object], str] | None = None) -> str:
    """`translate(key, **values)` in the page's language; `when(instant)` / `day(instant)`
    format an instant (date and time / date only). `term` may also be a `When`, a name or a
    list of those."""

    def value(v: object) -> object:
        if isinstance(v, Term):
            return render(v, translate, when, day)
        if isinstance(v, When):
            return (day or when)(v.at) if v.date_only else when(v.at)
        if isinstance(v, (list, tuple)):
            return ", ".join(str(value(x)) for x in v)
        return "" if v is None else v

    if not isinstance(term, Term):
        return str(value(term))
    return translate(term.key, **{k: value(v) for k, v in term.values.items()})


# ---------------------------------------------------------------- names


FAMILY_ACTOR = "family:"


def person(actor_id: str | None, names: Mapping[str, str], state: CaseState | None = None) -> object:
    """Who did it, in words: a staff member's name, a family member's name, the system."""
    if not actor_id:
        return Term("timeline.who.nobody")
    if actor_id == "system":
        return Term("timeline.who.system")
    if actor_id == "referral":
        return Term("timeline.who.referral")
    if actor_id.startswith(FAMILY_ACTOR):
        member_id = actor_id[len(FAMILY_ACTOR):]
        if state is not None:
            member = next((m for m in state.family.members if m.id == member_id), None)
            if member is not None:
                return member.name
        return Term("timeline.who.family_member")
    return names.get(actor_id, actor_id)


def people(ids: Iterable[str], names: Mapping[str, str], state: CaseState | None = None) -> list:
    out = [person(i, names, state) for i in ids if i]
    return out or [Term("timeline.who.nobody")]


def owner(owner_id: str | None, names: Mapping[str, str], state: CaseState | None = None) -> object:
    """`BlockedOn.owner` / a deadline's owner in words: a role, a name, or several names."""
    if not owner_id:
        return Term("timeline.who.nobody")
    if owner_id in ("manager", "committee", "family", "coordinator", "admin", "team"):
        return Term(f"timeline.owner.{owner_id}")
    return people(owner_id.split(","), names, state)


# ---------------------------------------------------------------- words for enum values


def stage(value: str) -> Term:
    return Term(f"case.stage.{value}")


def deadline_kind(kind: str) -> Term:
    return Term(f"timeline.deadline.{kind}")


def role(value: str) -> Term:
    return Term(f"timeline.role.{value}" if value in ROLES else "timeline.role.other")


ROLES = ("owner", "coordinator", "manager", "committee", "team", "admin", "family")


def _word(prefix: str, value: object, known: Iterable[str]) -> Term:
    text = str(value)
    return Term(f"{prefix}.{text}" if text in set(known) else f"{prefix}.other")


CONTACT_KINDS = ("phone", "home_visit", "meeting", "message")
CLOSE_REASONS = ("goals_reached", "family_withdrew", "moved_away",
                 "transferred_to_adult_services", "duplicate", "other")
DECISIONS = ("approved", "approved_with_changes", "rejected")
SOURCES = ("school", "health", "parent", "social_services", "other")
REFERRAL_KINDS = ("application", "concern_report", "referral")
PREFERENCES = ("close", "normal", "space")
OCCASIONS = ("assessment", "status_meeting", "closing")


def escalation_reason(reason: str) -> Term:
    """One of a plan's escalation reasons ("disagreement: ole", "committee_only_paragraph: BL
    § 52", "joint_funding_over_limit: 12000 > 10000") in words."""
    kind, _, rest = reason.partition(":")
    rest = rest.strip()
    if kind == "disagreement":
        return Term("timeline.escalation.disagreement", {"who": rest})
    if kind == "committee_only_paragraph":
        return Term("timeline.escalation.committee_only_paragraph", {"paragraph": rest})
    if kind == "joint_funding_over_limit":
        cost, _, limit = rest.partition(">")
        return Term("timeline.escalation.joint_funding_over_limit",
                    {"cost": cost.strip(), "limit": limit.strip()})
    return Term("timeline.escalation.other")


def _reasons(reasons: Iterable[str], names: Mapping[str, str]) -> list[Term]:
    out = []
    for r in reasons:
        term = escalation_reason(r)
        if term.key.endswith("disagreement"):
            term = Term(term.key, {"who": person(term.values["who"], names)})
        out.append(term)
    return out


# ---------------------------------------------------------------- the history


# Every event the domain records (domain/lifecycle.py `_record`, domain/clocks.py,
# domain/consent.py): tests/test_timeline.py checks each has a sentence in every language.
EVENTS = (
    "referral_registered", "coordinator_assigned", "coordinator_reassigned", "stage_changed",
    "team_formed", "contact_recorded", "case_paused", "case_resumed",
    "provisional_assessment_recorded", "assessment_extended", "concern_triaged",
    "assessment_meeting_scheduled", "assessment_meeting_rescheduled",
    "status_meeting_scheduled", "status_meeting_rescheduled", "assessment_recorded",
    "assessment_completed", "plan_drafted", "vote_cast", "escalated", "plan_decided",
    "family_approved", "family_rejected", "escalation_withdrawn", "committee_decided",
    "plan_activated", "followup_cadence_set", "status_meeting_recorded", "case_closed",
    "policy_changed", "deadline_reminder", "deadline_overdue", "deadline_escalation",
    "consent_given", "consent_changed", "consent_revoked", "consent_expired",
    "contact_preference_changed", "family_focus_points", "focus_points_confirmed",
    "pause_requested", "outcomes_recorded",
)


def _recipient(state: CaseState | None, to_role: str, kind: str, occurrence: object,
               names: Mapping[str, str]) -> object:
    """Whom a deadline's reminder or escalation step went to: the deadline's owner (or the
    coordinator) by name where the case knows them, else the role in words."""
    if state is not None and to_role in ("owner", "coordinator"):
        who = state.coordinator_id
        if to_role == "owner":
            d = next((d for d in state.deadlines
                      if d.kind.value == kind and d.occurrence == occurrence), None)
            who = (d.owner if d is not None and d.owner else None) or state.coordinator_id
        if who in ("manager", "committee", "family"):
            return owner(who, names, state)
        if who:
            return person(who, names, state)
        return Term("timeline.owner.manager")  # no coordinator yet: the manager has the ball
    return role(to_role)


def _plan_of_item(state: CaseState | None, item_id: object) -> object:
    if state is not None:
        item = next((i for i in state.escalations if i.id == item_id), None)
        if item is not None:
            return item.plan_version
    return "?"


def entry(h: HistoryEntry | Mapping, names: Mapping[str, str],
          state: CaseState | None = None) -> Term:
    """One history entry as a sentence."""
    if isinstance(h, Mapping):
        h = HistoryEntry.model_validate(h)
    d = h.detail or {}
    who = person(h.actor, names, state)
    event = h.event
    k = f"timeline.event.{event}"
    v: dict[str, object] = {"who": who}
    match event:
        case "referral_registered":
            v |= {"kind": _word("timeline.referral_kind", d.get("kind"), REFERRAL_KINDS),
                  "source": _word("timeline.source", d.get("source"), SOURCES),
                  "received": When(d.get("received_at"))}
        case "coordinator_assigned" | "coordinator_reassigned":
            coordinator = d.get("coordinator_id")
            v |= {"coordinator": person(coordinator, names, state),
                  "previous": person(d.get("previous"), names, state)}
            if event == "coordinator_assigned" and coordinator == h.actor:
                k = "timeline.event.coordinator_taken"
            if d.get("override"):
                k += "_override"
        case "stage_changed":
            v |= {"from": stage(str(d.get("from"))), "to": stage(str(d.get("to")))}
        case "team_formed":
            v |= {"members": people(d.get("members") or [], names, state)}
        case "contact_recorded":
            v |= {"kind": _word("timeline.contact_kind", d.get("kind"), CONTACT_KINDS),
                  "at": When(d.get("at"))}
        case "case_paused":
            if d.get("waiting_for_family"):
                k += "_for_family"
        case "assessment_extended":
            v |= {"due": When(d.get("new_due_at"), date_only=True), "ref": d.get("decision_ref", "")}
        case "concern_triaged":
            if d.get("child_in_danger"):
                k += "_danger"
        case ("assessment_meeting_scheduled" | "assessment_meeting_rescheduled"
              | "status_meeting_scheduled" | "status_meeting_rescheduled"
              | "status_meeting_recorded"):
            v |= {"at": When(d.get("at")), "number": d.get("number", "")}
        case "assessment_recorded":
            v |= {"n": d.get("dimensions", 0)}
        case "plan_drafted":
            v |= {"version": d.get("version", "?"), "n": d.get("services", 0)}
        case "vote_cast":
            k += "_disagree" if d.get("vote") == "disagree" else "_agree"
            v |= {"voter": person(d.get("staff_id"), names, state), "version": d.get("version", "?")}
        case "escalated":
            v |= {"version": d.get("plan_version", "?"),
                  "reasons": _reasons(d.get("reasons") or [], names)}
        case "plan_decided" | "family_approved" | "family_rejected":
            v |= {"version": d.get("version", "?")}
        case "plan_activated":
            v |= {"version": d.get("version", "?")}
            if d.get("decided_by") == "committee":
                k += "_committee"
        case "escalation_withdrawn":
            v |= {"version": _plan_of_item(state, d.get("item_id"))}
        case "committee_decided":
            v |= {"version": _plan_of_item(state, d.get("item_id")),
                  "decision": _word("timeline.decision", d.get("decision"), DECISIONS)}
        case "followup_cadence_set":
            v |= {"n": d.get("months", "?")}
        case "case_closed":
            v |= {"reason": _word("timeline.close_reason", d.get("reason"), CLOSE_REASONS)}
        case "policy_changed":
            v |= {"from": d.get("from", ""), "to": d.get("to", "")}
        case "deadline_reminder" | "deadline_overdue" | "deadline_escalation":
            v |= {"deadline": deadline_kind(str(d.get("kind"))),
                  "due": When(d.get("due_at")), "step": d.get("step", ""),
                  "to": _recipient(state, str(d.get("to_role")), str(d.get("kind")),
                                   d.get("occurrence"), names)}
            if d.get("skipped"):
                k += "_skipped"
        case "consent_changed" | "consent_revoked" | "consent_expired" | "consent_given":
            if event == "consent_given":
                covered = people(d.get("staff_ids") or [], names, state) if d.get("staff_ids") else []
                covered += [str(x).replace("_", " ") for x in d.get("departments") or []]
                v |= {"covered": covered or Term("timeline.owner.team")}
            lost = d.get("no_longer_covered") or []
            if lost:
                k += "_lost"
                v |= {"lost": people(lost, names, state)}
        case "contact_preference_changed":
            v |= {"from": _word("timeline.preference", d.get("from"), PREFERENCES),
                  "to": _word("timeline.preference", d.get("to"), PREFERENCES)}
        case "family_focus_points" | "focus_points_confirmed" | "pause_requested":
            pass
        case "outcomes_recorded":
            v |= {"n": len(d.get("measurements") or []),
                  "occasion": _word("outcomes.occasion", d.get("occasion"), OCCASIONS)}
        case _ if event not in EVENTS:
            k = "timeline.event.other"
    return Term(k, v)


def changes_since(state: CaseState, since: datetime | None, names: Mapping[str, str]) -> list[Term]:
    """What happened on the case after `since` (a stale page's "what changed"), oldest first;
    the whole recent history when `since` is unknown."""
    entries = [h for h in state.history if since is None or h.at > since]
    if since is None:
        entries = entries[-5:]
    return [entry(h, names, state) for h in entries if h.event != "stage_changed"] or (
        [entry(h, names, state) for h in entries])


# ---------------------------------------------------------------- deadlines


def deadline_status(d: Deadline, now: datetime) -> str:
    """open / overdue / met / cancelled, and `paused` while its clock waits for the family."""
    if d.is_open() and d.paused_since is not None:
        return "paused"
    return d.status_at(now).value


def deadline_line(d: Deadline, now: datetime) -> Term:
    """"First contact with the family — due 3 December 2026, 10:00 — overdue"."""
    status = deadline_status(d, now)
    values: dict[str, object] = {"deadline": deadline_kind(d.kind.value), "due": When(d.due_at),
                                 "status": Term(f"timeline.deadline_status.{status}")}
    if status == "met" and d.met_at is not None:
        values["met"] = When(d.met_at)
        return Term("timeline.deadline_line_met", values)
    return Term("timeline.deadline_line", values)


def deadlines(state: CaseState, now: datetime) -> list[tuple[Deadline, str, Term]]:
    """The case's deadlines for the page: running ones soonest first (overdue ones first of
    all), then those met or cancelled, newest first."""
    running = sorted((d for d in state.deadlines if d.is_open()),
                     key=lambda d: (d.status_at(now).value != "overdue", d.due_at))
    done = sorted((d for d in state.deadlines if not d.is_open()),
                  key=lambda d: d.met_at or d.due_at, reverse=True)
    return [(d, deadline_status(d, now), deadline_line(d, now)) for d in running + done]


# ---------------------------------------------------------------- messages and reasons


# The purposes a message can have (domain/effects.py, domain/family_effects.py, api/pages,
# activities/report.py); patterns for the numbered ones. tests/test_timeline.py samples each.
PURPOSE_SAMPLES = (
    "deadline:first_contact#1:reminder#0", "deadline:first_contact#1:overdue#0",
    "deadline:first_contact#1:escalation#1", "assessment_meeting_invitation",
    "status-2_invitation", "plan_for_approval:v2", "consent_renewal:c1#1:0",
    "family_update#3", "manager_nudge", "monthly_report", "family_invitation",
    "family_sign_in_code", "something_new",
)
_DEADLINE_PURPOSE = re.compile(r"^deadline:([a-z_]+)#(\d+):(reminder|overdue|escalation)#(\d+)$")
_STATUS_INVITATION = re.compile(r"^status-(\d+)_invitation$")
_PLAN = re.compile(r"^plan_for_approval:v(\d+)$")
_SIMPLE_PURPOSES = ("assessment_meeting_invitation", "manager_nudge", "monthly_report",
                    "family_invitation", "family_sign_in_code")


def purpose(text: str) -> Term:
    """A message's purpose (the outbox's `purpose`) in words."""
    m = _DEADLINE_PURPOSE.match(text or "")
    if m:
        kind, _occurrence, clock, step = m.groups()
        return Term(f"timeline.purpose.deadline_{clock}",
                    {"deadline": deadline_kind(kind), "step": step})
    m = _STATUS_INVITATION.match(text or "")
    if m:
        return Term("timeline.purpose.status_meeting_invitation", {"number": m.group(1)})
    m = _PLAN.match(text or "")
    if m:
        return Term("timeline.purpose.plan_for_approval", {"version": m.group(1)})
    if (text or "").startswith("consent_renewal:"):
        return Term("timeline.purpose.consent_renewal")
    if (text or "").startswith("family_update#"):
        return Term("timeline.purpose.family_update")
    if text in _SIMPLE_PURPOSES:
        return Term(f"timeline.purpose.{text}")
    return Term("timeline.purpose.other")


CHANNELS = ("email", "sms", "in_app")  # models.messaging.Channel
STATUSES = ("queued", "sent", "failed", "deferred", "cancelled")  # NotificationStatus


def channel(value: str | None) -> Term:
    return _word("timeline.channel", value, CHANNELS)


def message_status(value: str | None) -> Term:
    return _word("timeline.message_status", value, STATUSES)


# Why a case needs a manager (domain/stuck.py): `overdue:<deadline kind>` and the rest.
REASON_KINDS = ("overdue", "stage_too_long", "no_family_contact", "committee_waiting",
                "activity_failing", "workflow_task_failing", "workflow_not_running",
                "workflow_not_started")


def reason(kind: str) -> Term:
    if kind.startswith("overdue:"):
        return Term("timeline.reason.overdue_kind", {"deadline": deadline_kind(kind[len("overdue:"):])})
    return _word("timeline.reason", kind, REASON_KINDS)


# ---------------------------------------------------------------- who has the ball


@dataclass(frozen=True)
class Ball:
    what: Term
    owner: object
    since: When
    next: Term | None
    overdue: bool


def ball(state: CaseState, names: Mapping[str, str], now: datetime) -> Ball | None:
    """`state.blocked_on` in words: what the case waits for, who owes it, since when and
    what fires next (the case's next durable timer)."""
    from domain import clocks
    from domain.lifecycle import pending_draft

    b = state.blocked_on
    if b is None or state.stage is Stage.closed:
        return None
    what = Term("timeline.ball.other")
    plan = pending_draft(state)
    pending_consent = []
    if getattr(state, "consent_rules", False):
        pending_consent = [m for m in state.team if getattr(m, "status", None) == "pending_consent"]
    if b.what.startswith("the family's consent") or (pending_consent and b.owner == "family"
                                                       and "consent" in b.what):
        what = Term("timeline.ball.consent",
                    {"members": people([m.staff_id for m in pending_consent], names, state)})
    elif b.what.startswith("committee"):
        what = Term("timeline.ball.committee", {"version": plan.version if plan else "?"})
    elif b.what.startswith("team votes") and plan is not None:
        what = Term("timeline.ball.votes", {"version": plan.version})
    elif b.what.startswith("family approval") and plan is not None:
        what = Term("timeline.ball.family_approval", {"version": plan.version})
    else:
        simple = {"coordinator assignment": "assignment", "core team": "team",
                  "assessment meeting to be scheduled": "meeting", "ICS assessment": "assessment",
                  "next status meeting": "status_meeting", "joint plan draft": "plan"}
        if b.what in simple:
            what = Term(f"timeline.ball.{simple[b.what]}")
    if state.paused:
        what = Term("timeline.ball.paused", {"what": what})
    upcoming = clocks.pending(state)
    nxt = None
    if upcoming:
        e = upcoming[0]
        nxt = Term(f"timeline.next.{e.kind}", {
            "deadline": deadline_kind(e.deadline.kind.value), "at": When(e.at),
            "to": _recipient(state, e.to_role, e.deadline.kind.value, e.deadline.occurrence, names)})
    overdue = any(d.status_at(now).value == "overdue" and d.paused_since is None
                  for d in state.deadlines)
    return Ball(what=what, owner=owner(b.owner, names, state), since=When(b.since), next=nxt,
                overdue=overdue)
