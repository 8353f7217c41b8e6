"""My work (`/`, DESIGN §10): the page every staff member lands on after login.

What waits for this person, read from the read model only (never a Query per case), every
list filtered by the one access policy (`scope_clause(case_scope(actor))`, api/scope.py):

- the deadlines they own, soonest first, overdue ones first of all — `case_watch` holds
  every open deadline of every open case with the owner `domain.stuck.watch_points` gives it
  (the deadline's own owner, else the case's coordinator, else "manager" for a case nobody
  coordinates: a manager owns those of their unit; "committee": the committee's decision);
- votes waiting for them: cases whose plan draft waits for the team's votes with their id
  among the missing voters (`blocked_on`, projected), checked against the plan itself;
- plans waiting for a family (the coordinator): a draft decided by the team or the
  committee that the family has not answered yet;
- meetings this week (Monday to Sunday in the municipality's time zone): the assessment
  meeting and the planned status meeting of the cases they coordinate or are on the team of,
  when they coordinate the case or are listed as a participant;
- nudges a manager sent them, newest first;
- committee members: the items waiting for a decision; managers: the stuck cases of
  their unit.

One query per section, each bounded (LIMIT) and scoped.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from api import watch
from api.pages import i18n
from api.pages.common import (
    actor_of,
    catch_up,
    current_user,
    language_of,
    login_redirect,
    render,
    timezone_of,
)
from api.scope import contains_exactly, scope_clause
from domain import timeline
from domain.access import CaseScope, case_scope, is_admin, may_read_reports, report_scope
from domain.stuck import OVERDUE_PREFIX, UNASSIGNED_OWNER
from models.case import Actor, DeadlineKind, Stage
from models.tables import CaseRow, CommitteeItemRow, StaffRow
from models.tables_reporting import CaseWatchRow, StuckCaseRow, StuckNudgeRow

router = APIRouter(include_in_schema=False)

# How many rows each section shows at most (the rest: "and N more").
DEADLINES_SHOWN = 100
VOTES_SHOWN = 50
FAMILY_SHOWN = 50
NUDGES_SHOWN = 20
COMMITTEE_SHOWN = 20
# Meetings: the case documents read at most (open cases this person works on).
MEETING_CASES_READ = 300
# Nudges newer than this are marked as new.
NEW_NUDGE = timedelta(days=7)

# What `domain.lifecycle.blocked_on` projects as `cases.blocked_what` while a plan draft
# waits for the team's votes (owner: the missing voters, comma separated) or for the family.
WAITING_FOR_VOTES = "team votes on plan v"
WAITING_FOR_FAMILY = "family approval of plan v"

# Who owns the committee's decision deadline (domain.lifecycle._escalate).
COMMITTEE_OWNER = "committee"
DEADLINE_KINDS = [f"{OVERDUE_PREFIX}{k.value}" for k in DeadlineKind]
_LEGAL_BASIS = re.compile(r"\(([^()]*)\)$")


def utc(value: datetime | None) -> datetime | None:
    """The read model's instants are UTC; SQLite hands them back without a zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return utc(value)
    if not value:
        return None
    try:
        return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def _with_total(rows: list, shown: int) -> tuple[list, int]:
    """Rows selected with `func.count().over()` as their last column `total`."""
    total = rows[0].total if rows else 0
    return rows[:shown], total


def due_words(due: datetime, now: datetime, tz: ZoneInfo) -> dict:
    """How far off a deadline is, in whole calendar days of the municipality: the text key
    of `mywork.due.*` and its values."""
    local_due, local_now = due.astimezone(tz), now.astimezone(tz)
    days = (local_due.date() - local_now.date()).days
    time = local_due.strftime("%H:%M")
    if due <= now:
        if days == 0:
            return {"key": "mywork.due.overdue_today", "n": 0, "time": time, "overdue": True}
        if days == -1:
            return {"key": "mywork.due.overdue_yesterday", "n": 1, "time": time, "overdue": True}
        return {"key": "mywork.due.overdue_days", "n": -days, "time": time, "overdue": True}
    if days == 0:
        return {"key": "mywork.due.today", "n": 0, "time": time, "overdue": False}
    if days == 1:
        return {"key": "mywork.due.tomorrow", "n": 1, "time": time, "overdue": False}
    return {"key": "mywork.due.days", "n": days, "time": time, "overdue": False}


def week_of(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[Monday 00:00, next Monday 00:00) of this week in the municipality's time zone, UTC."""
    today = now.astimezone(tz).date()
    monday = today - timedelta(days=today.weekday())
    start = datetime.combine(monday, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(monday + timedelta(days=7), datetime.min.time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


# ---------------------------------------------------------------- the sections


def deadlines_owned(session: Session, actor: Actor, scope: CaseScope, now: datetime,
                    tz: ZoneInfo) -> dict:
    """The open deadlines `actor` owns on cases they may read, soonest (most overdue) first."""
    owners = [actor.id]
    if "manager" in actor.roles:
        owners.append(UNASSIGNED_OWNER)  # deadlines of the unit's unassigned cases
    if "committee" in actor.roles:
        owners.append(COMMITTEE_OWNER)  # the committee's decisions on its waiting items
    w = CaseWatchRow
    rows = session.execute(
        select(w.case_id, w.kind, w.fires_at, w.detail, CaseRow.family_name,
               func.count().over().label("total"))
        .join(CaseRow, CaseRow.id == w.case_id)
        .where(w.kind.in_(DEADLINE_KINDS), w.owner.in_(owners),
               CaseRow.stage != Stage.closed.value, scope_clause(scope))
        .order_by(w.fires_at, w.case_id, w.kind)
        .limit(DEADLINES_SHOWN)
    ).all()
    rows, total = _with_total(rows, DEADLINES_SHOWN)
    items = []
    for r in rows:
        due = utc(r.fires_at)
        basis = _LEGAL_BASIS.search(r.detail or "")
        kind = r.kind.removeprefix(OVERDUE_PREFIX)
        items.append({"case_id": r.case_id, "family_name": r.family_name, "kind": kind,
                      "what": timeline.deadline_kind(kind), "due_at": due,
                      "legal_basis": basis.group(1) if basis else "",
                      "when": due_words(due, now, tz)})
    overdue = sum(1 for i in items if i["when"]["overdue"])
    return {"items": items, "total": total, "overdue": overdue}


def _plan(document: dict, version: int | None = None) -> dict | None:
    plans = document.get("plans") or []
    if version is None:
        return plans[-1] if plans else None
    return next((p for p in plans if p.get("version") == version), None)


def _team_ids(document: dict) -> list[str]:
    ids = [document["coordinator_id"]] if document.get("coordinator_id") else []
    return ids + [m.get("staff_id") for m in document.get("team") or [] if m.get("staff_id") not in ids]


def votes_waiting(session: Session, actor: Actor, scope: CaseScope) -> dict:
    """Plan drafts waiting for `actor`'s vote: on the case's core team, no vote yet."""
    owners = literal(",") + CaseRow.blocked_owner + literal(",")
    rows = session.execute(
        select(CaseRow.id, CaseRow.family_name, CaseRow.blocked_since, CaseRow.document,
               func.count().over().label("total"))
        .where(CaseRow.stage != Stage.closed.value,
               CaseRow.blocked_what.startswith(WAITING_FOR_VOTES, autoescape=True),
               contains_exactly(owners, f",{actor.id},"), scope_clause(scope))
        .order_by(CaseRow.blocked_since, CaseRow.id)
        .limit(VOTES_SHOWN)
    ).all()
    rows, total = _with_total(rows, VOTES_SHOWN)
    items = []
    for r in rows:
        plan, team = _plan(r.document), _team_ids(r.document)
        voted = {v.get("staff_id") for v in (plan or {}).get("votes") or []}
        if (plan is None or plan.get("status") != "draft" or plan.get("decision") != "pending"
                or actor.id not in team or actor.id in voted):
            total -= 1  # not waiting for this vote after all
            continue
        items.append({"case_id": r.id, "family_name": r.family_name,
                      "plan_version": plan.get("version"), "since": _parse(plan.get("created_at")),
                      "votes": len(voted & set(team)), "team": len(team)})
    return {"items": items, "total": total}


def plans_waiting_for_family(session: Session, actor: Actor, scope: CaseScope) -> dict:
    """The coordinator's decided plan drafts the family has not answered yet."""
    rows = session.execute(
        select(CaseRow.id, CaseRow.family_name, CaseRow.blocked_since, CaseRow.document,
               func.count().over().label("total"))
        .where(CaseRow.coordinator_id == actor.id, CaseRow.stage != Stage.closed.value,
               CaseRow.blocked_what.startswith(WAITING_FOR_FAMILY, autoescape=True),
               scope_clause(scope))
        .order_by(CaseRow.blocked_since, CaseRow.id)
        .limit(FAMILY_SHOWN)
    ).all()
    rows, total = _with_total(rows, FAMILY_SHOWN)
    items = []
    for r in rows:
        plan = _plan(r.document)
        if (plan is None or plan.get("status") != "draft"
                or plan.get("decision") not in ("team", "committee")
                or plan.get("family_approved") is not None):
            total -= 1
            continue
        due = [_parse(d.get("due_at")) for d in r.document.get("deadlines") or []
               if d.get("kind") == DeadlineKind.family_approval.value
               and d.get("status") in ("open", "overdue")]
        items.append({"case_id": r.id, "family_name": r.family_name,
                      "plan_version": plan.get("version"), "decided_by": plan.get("decision"),
                      "decided_at": _parse(plan.get("decided_at")) or utc(r.blocked_since),
                      "due_at": min((d for d in due if d), default=None)})
    return {"items": items, "total": total}


def meetings_this_week(session: Session, actor: Actor, scope: CaseScope, now: datetime,
                       tz: ZoneInfo) -> dict:
    """Assessment meetings and planned status meetings this week (Monday to Sunday, the
    municipality's time) of the cases `actor` coordinates or is on the team of, where they
    coordinate or take part."""
    start, end = week_of(now, tz)
    mine = or_(CaseRow.coordinator_id == actor.id,
               contains_exactly(CaseRow.team_text, f",{actor.id},"))
    rows = session.execute(
        select(CaseRow.id, CaseRow.family_name, CaseRow.document)
        .where(CaseRow.stage.in_([Stage.assessment.value, Stage.planning.value, Stage.active.value]),
               mine, scope_clause(scope))
        .order_by(CaseRow.updated_at.desc(), CaseRow.id)
        .limit(MEETING_CASES_READ)
    ).all()
    items = []
    for r in rows:
        doc = r.document
        coordinates = doc.get("coordinator_id") == actor.id
        for kind, meeting in (("assessment", doc.get("assessment_meeting")),
                              ("status", doc.get("planned_meeting"))):
            if not meeting:
                continue
            at = _parse(meeting.get("at"))
            if at is None or not start <= at < end:
                continue
            if not coordinates and actor.id not in (meeting.get("participants") or []):
                continue
            items.append({"case_id": r.id, "family_name": r.family_name, "kind": kind,
                          "at": at, "location": meeting.get("location") or "",
                          "number": meeting.get("number"), "past": at < now,
                          "coordinator": coordinates})
    items.sort(key=lambda i: (i["at"], i["case_id"], i["kind"]))
    return {"items": items, "total": len(items), "start": start,
            "end": end - timedelta(seconds=1), "capped": len(rows) >= MEETING_CASES_READ}


def nudges_to(session: Session, actor: Actor, scope: CaseScope, now: datetime) -> dict:
    """What managers nudged `actor` about, newest first (cases they may still read)."""
    sender = aliased(StaffRow)
    n = StuckNudgeRow
    rows = session.execute(
        select(n.id, n.case_id, n.kind, n.sent_by, n.sent_at, n.message, CaseRow.family_name,
               sender.name.label("sender_name"), func.count().over().label("total"))
        .join(CaseRow, CaseRow.id == n.case_id)
        .outerjoin(sender, sender.id == n.sent_by)
        .where(n.recipient_id == actor.id, scope_clause(scope))
        .order_by(n.sent_at.desc(), n.id.desc())
        .limit(NUDGES_SHOWN)
    ).all()
    rows, total = _with_total(rows, NUDGES_SHOWN)
    items = []
    for r in rows:
        sent = utc(r.sent_at)
        kind = r.kind or ""
        items.append({"id": r.id, "case_id": r.case_id, "family_name": r.family_name,
                      "kind": kind, "why": timeline.reason(kind) if kind else None,
                      "sender": r.sender_name or r.sent_by, "sent_at": sent,
                      "message": r.message or "", "new": now - sent < NEW_NUDGE})
    return {"items": items, "total": total}


def committee_waiting(session: Session, actor: Actor, scope: CaseScope) -> dict:
    """Committee items waiting for a decision, next meeting first."""
    i = CommitteeItemRow
    rows = session.execute(
        select(i.id, i.case_id, i.plan_version, i.escalated_at, i.meeting_at, i.monthly_total,
               CaseRow.family_name, func.count().over().label("total"))
        .join(CaseRow, CaseRow.id == i.case_id)
        .where(i.status == "waiting", scope_clause(scope))
        .order_by(i.meeting_at.is_(None), i.meeting_at, i.escalated_at, i.id)
        .limit(COMMITTEE_SHOWN)
    ).all()
    rows, total = _with_total(rows, COMMITTEE_SHOWN)
    items = [{"id": r.id, "case_id": r.case_id, "family_name": r.family_name,
              "plan_version": r.plan_version, "escalated_at": utc(r.escalated_at),
              "meeting_at": utc(r.meeting_at), "monthly_total": r.monthly_total} for r in rows]
    return {"items": items, "total": total}


def stuck_in_unit(session: Session, actor: Actor, scope: CaseScope) -> dict:
    """How many cases of the manager's unit are stuck now, and how many of them have a
    reason nobody has acknowledged yet."""
    s = StuckCaseRow
    total, open_ = session.execute(
        select(func.count(), func.coalesce(func.sum(case((s.open_reasons > 0, 1), else_=0)), 0))
        .select_from(s).join(CaseRow, CaseRow.id == s.case_id)
        .where(s.reasons > 0, scope_clause(report_scope(actor)), scope_clause(scope))
    ).one()
    return {"total": total, "unacknowledged": open_}


def my_work(session: Session, actor: Actor, now: datetime, timezone: str) -> dict:
    tz = ZoneInfo(timezone)
    scope = case_scope(actor)
    return {
        "now": now,
        "deadlines": deadlines_owned(session, actor, scope, now, tz),
        "votes": votes_waiting(session, actor, scope),
        "family": plans_waiting_for_family(session, actor, scope),
        "meetings": meetings_this_week(session, actor, scope, now, tz),
        "nudges": nudges_to(session, actor, scope, now),
        "committee": (committee_waiting(session, actor, scope)
                      if "committee" in actor.roles or is_admin(actor) else None),
        "stuck": stuck_in_unit(session, actor, scope) if may_read_reports(actor) else None,
    }


@router.get("/")
async def my_work_page(request: Request) -> Response:
    await catch_up(request)  # read-your-writes for the deadlines (case_watch)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        actor = actor_of(user)
        tz = timezone_of(request)
        data = await asyncio.to_thread(my_work, session, actor, watch.utcnow(), tz)
        lang = language_of(request, user)
        # Deadline kinds and reasons in words: domain.timeline's terms, as on the case page.
        say = partial(timeline.render, translate=partial(i18n.translate, lang),
                      when=lambda at: i18n.format_datetime(lang, at, tz),
                      day=lambda at: i18n.format_date(lang, at, tz))
        return render(request, "my_work.html.j2", user=user, nav="my_work", w=data,
                      today=data["now"], lang=lang, say=say)

