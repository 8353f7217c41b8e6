"""The coordination group's monthly report (DESIGN §1, §3.8, issue 5), from the read model.

`compute_report()` is pure (case states in, a JSON-safe dict out); `build_and_store()` reads
every case of the read model, computes, renders HTML (and a PDF when the document service's
WeasyPrint renderer is available) and stores the result in `monthly_reports`, one row per
month, overwritten on a re-run (idempotent). `MonthlyReportWorkflow` (workflows/report.py)
calls the activities below on a Temporal Schedule; the dashboard computes a missing month
on demand with the same code.

What the report holds, for a month taken in the municipality's time zone:
- cases by stage at the month's end, new referrals, closures by reason;
- median days per stage, over the stage stays that ENDED in the month (from the
  `stage_changed` history events);
- share of deadlines met on time per kind, over the deadlines DUE in the month (met on
  time / met late / not met; cancelled ones are left out);
- escalations: new, decided (by decision), median days to a decision, still waiting at the
  month's end, reasons;
- joint funding by department: monthly amounts of the plans in force during the month;
- outcomes of the cases closed in the month: SDQ change per informant (same informant
  before/after only), goal attainment, and the share of cases with active cooperation
  between the adult and the child units (the Uppsala evaluation's key figure).

Outcome data shape (`closure.outcomes`, recorded at closing; also read from a case-level
`outcome_measures` list when the case model has one):
    {"sdq": [{"child": "Emil", "informant": "mother", "before": 18, "after": 12}, ...]
            (before/after may be {"total": n, ...}; also accepted: {"mother": {"before": 18,
            "after": 12}}),
     "goal_attainment": {"g1": 4, "g2": "achieved"}  (a score, or a goal status)}
"""

from __future__ import annotations

import logging
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from activities.funding import funding_lines
from domain.stuck import age_text, reason_family
from models.case import CaseState, DeadlineStatus, Stage
from models.tables import CaseRow, StaffRow
from models.tables_reporting import MonthlyReportRow

log = logging.getLogger("onefamily.report")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "dashboard"
TIMEZONES = {"DK": "Europe/Copenhagen", "SE": "Europe/Stockholm"}
CURRENCIES = {"DK": "kr.", "SE": "kr"}
# Departments on the adult side; the coordinator's unit is on the child side.
ADULT_DEPARTMENTS = ("adult", "job_centre", "jobcenter", "psychiatry")
CHILD_DEPARTMENTS = ("child", "school", "daycare", "health_visitor", "ppr")
STAGES = [s.value for s in Stage]
ACHIEVED = {"achieved", "reached", "met", "yes", "true"}


# ---------------------------------------------------------------- months


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """'2026-11' -> [start, end) in UTC, the month taken in the given time zone."""
    year, mon = (int(x) for x in month.split("-"))
    if not (1 <= mon <= 12 and 2000 <= year <= 2200):
        raise ValueError(f"not a month: {month!r}")
    tz = ZoneInfo(timezone)
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def previous_month(now: datetime) -> str:
    first = now.replace(day=1)
    last_month = first - timedelta(days=1)
    return last_month.strftime("%Y-%m")


def parse_month(text: str) -> str:
    """Validate 'yyyy-mm' (raises ValueError)."""
    if len(text) != 7 or text[4] != "-":
        raise ValueError(f"not a month (yyyy-mm): {text!r}")
    month_bounds(text, "UTC")
    return text


# ---------------------------------------------------------------- pieces of the report


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def stage_stays(state: CaseState) -> list[tuple[str, datetime, datetime | None]]:
    """(stage, entered, left) from the history; the last stay is still open (left None)."""
    stays = []
    current, since = Stage.referred.value, state.created_at
    for h in state.history:
        if h.event != "stage_changed":
            continue
        to = h.detail.get("to")
        stays.append((h.detail.get("from", current), since, h.at))
        current, since = to, h.at
    stays.append((current, since, None))
    return stays


def stage_at(state: CaseState, instant: datetime) -> str | None:
    if state.created_at >= instant:
        return None
    for stage, entered, left in stage_stays(state):
        if entered < instant and (left is None or left >= instant):
            return stage
    return state.stage.value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for key in ("total", "total_difficulties", "score", "value"):
            if key in value:
                return _number(value[key])
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def sdq_pairs(state: CaseState) -> list[tuple[str, float, float]]:
    """(informant, before, after) SDQ totals from the closing outcomes (same informant)."""
    pairs: list[tuple[str, float, float]] = []
    outcomes = (state.closure.outcomes if state.closure else None) or {}
    raw = outcomes.get("sdq") or outcomes.get("SDQ") or []
    entries: list[dict] = []
    if isinstance(raw, dict):
        for informant, value in raw.items():
            if isinstance(value, dict):
                entries.append({"informant": informant, **value})
    elif isinstance(raw, list):
        entries = [e for e in raw if isinstance(e, dict)]
    for extra in getattr(state, "outcome_measures", None) or []:  # a future case-level list
        if isinstance(extra, dict) and str(extra.get("instrument", "")).lower() == "sdq":
            entries.append(extra)
    for e in entries:
        before = _number(e.get("before", e.get("at_assessment", e.get("assessment"))))
        after = _number(e.get("after", e.get("at_closing", e.get("closing"))))
        informant = str(e.get("informant") or "unknown")
        if before is not None and after is not None:
            pairs.append((informant, before, after))
    return pairs


def goal_scores(state: CaseState) -> tuple[list[float], list[bool]]:
    """(numeric goal attainment scores, achieved flags) of a closed case."""
    outcomes = (state.closure.outcomes if state.closure else None) or {}
    raw = outcomes.get("goal_attainment") or {}
    items: list[Any] = (list(raw.values()) if isinstance(raw, dict)
                        else list(raw) if isinstance(raw, list) else [])
    scores, achieved = [], []
    for value in items:
        if isinstance(value, dict):
            value = value.get("score", value.get("status"))
        number = _number(value)
        if number is not None:
            scores.append(number)
        elif isinstance(value, str):
            achieved.append(value.lower() in ACHIEVED)
    if not items:  # fall back on the last recorded goal progress
        last: dict[str, str] = {}
        for m in state.status_meetings:
            last.update({g.goal_id: g.status.value for g in m.goal_progress})
        achieved = [v == "achieved" for v in last.values()]
    return scores, achieved


def cooperates(state: CaseState) -> bool:
    """Active cooperation between the adult and the child units: the core team holds both
    (the coordinator's unit counts as the child side)."""
    departments = {m.department.lower() for m in state.team} | {m.discipline.lower() for m in state.team}
    adult = any(a in d for d in departments for a in ADULT_DEPARTMENTS)
    child = bool(state.coordinator_id) or any(c in d for d in departments for c in CHILD_DEPARTMENTS)
    return adult and child


# ---------------------------------------------------------------- the report


def compute_report(states: Iterable[CaseState], month: str, *, timezone: str, now: datetime,
                   country: str = "DK") -> dict:
    start, end = month_bounds(month, timezone)
    as_of = min(now, end)
    by_stage: dict[str, int] = {s: 0 for s in STAGES if s != Stage.closed.value}
    new_referrals = closed = 0
    close_reasons: dict[str, int] = defaultdict(int)
    stage_days: dict[str, list[float]] = defaultdict(list)
    deadlines: dict[str, dict[str, int]] = defaultdict(
        lambda: {"due": 0, "on_time": 0, "late": 0, "missed": 0})
    esc = {"new": 0, "decided": 0, "withdrawn": 0, "waiting_at_end": 0}
    by_decision: dict[str, int] = defaultdict(int)
    esc_reasons: dict[str, int] = defaultdict(int)
    days_to_decision: list[float] = []
    funding: dict[str, dict[str, float]] = defaultdict(lambda: {"total": 0.0, "joint": 0.0, "cases": 0})
    sdq: dict[str, list[tuple[float, float]]] = defaultdict(list)
    gas_scores: list[float] = []
    goals_achieved: list[bool] = []
    cooperation = [0, 0]
    closed_with_outcomes = 0

    for s in states:
        if s.created_at >= end:
            continue
        stage = stage_at(s, as_of)
        if stage is not None and stage != Stage.closed.value:
            by_stage[stage] = by_stage.get(stage, 0) + 1
        if start <= s.created_at < end:  # registered in the month (a backdated one too)
            new_referrals += 1
        for stage_name, entered, left in stage_stays(s):
            if left is not None and start <= left < end and stage_name != Stage.closed.value:
                stage_days[stage_name].append((left - entered).total_seconds() / 86400)
        for d in s.deadlines:
            if d.status is DeadlineStatus.cancelled or not (start <= d.due_at < end):
                continue
            row = deadlines[d.kind.value]
            row["due"] += 1
            if d.met_at is not None and d.met_at <= d.due_at:
                row["on_time"] += 1
            elif d.met_at is not None:
                row["late"] += 1
            else:
                row["missed"] += 1
        for item in s.escalations:
            if start <= item.escalated_at < end:
                esc["new"] += 1
                for r in item.reasons:
                    esc_reasons[r.split(":")[0].strip()] += 1
            if item.decided_at is not None and start <= item.decided_at < end:
                esc["decided"] += 1
                by_decision[item.decision.value if item.decision else "unknown"] += 1
                days_to_decision.append((item.decided_at - item.escalated_at).total_seconds() / 86400)
            if item.escalated_at < as_of and item.status != "withdrawn" and (
                    item.decided_at is None or item.decided_at >= as_of):
                esc["waiting_at_end"] += 1
        esc["withdrawn"] += sum(1 for h in s.history
                                if h.event == "escalation_withdrawn" and start <= h.at < end)
        seen_departments = set()
        for line in funding_lines(s):
            if line.valid_from < end and (line.valid_until is None or line.valid_until > start):
                f = funding[line.department]
                f["total"] += line.monthly_amount
                if line.joint:
                    f["joint"] += line.monthly_amount
                if line.department not in seen_departments:
                    f["cases"] += 1
                    seen_departments.add(line.department)
        was_open = s.created_at < end and (s.closure is None or s.closure.at >= start)
        if was_open and stage not in (None, Stage.referred.value):
            cooperation[1] += 1
            cooperation[0] += cooperates(s)
        if s.closure is not None and start <= s.closure.at < end:
            closed += 1
            close_reasons[s.closure.reason.value] += 1
            pairs = sdq_pairs(s)
            scores, achieved = goal_scores(s)
            if pairs or scores or achieved:
                closed_with_outcomes += 1
            for informant, before, after in pairs:
                sdq[informant].append((before, after))
            gas_scores += scores
            goals_achieved += achieved

    deadline_rows = []
    for kind, row in sorted(deadlines.items()):
        deadline_rows.append({"kind": kind, **row,
                              "share_met": round(row["on_time"] / row["due"], 3) if row["due"] else None})
    total_due = sum(r["due"] for r in deadline_rows)
    total_on_time = sum(r["on_time"] for r in deadline_rows)
    funding_rows = [{"department": d, "total": round(v["total"], 2), "joint": round(v["joint"], 2),
                     "cases": int(v["cases"])} for d, v in sorted(funding.items())]
    sdq_rows = []
    for informant, values in sorted(sdq.items()):
        before = [b for b, _ in values]
        after = [a for _, a in values]
        sdq_rows.append({"informant": informant, "n": len(values),
                         "mean_before": round(statistics.fmean(before), 1),
                         "mean_after": round(statistics.fmean(after), 1),
                         "mean_change": round(statistics.fmean(a - b for b, a in values), 1),
                         "improved": sum(1 for b, a in values if a < b)})
    return {
        "month": month,
        "country": country,
        "timezone": timezone,
        "currency": CURRENCIES.get(country, ""),
        "from": start.isoformat(),
        "until": end.isoformat(),
        "as_of": as_of.isoformat(),
        "complete": now >= end,
        "generated_at": now.isoformat(),
        "cases": {
            "open_at_end": sum(by_stage.values()),
            "by_stage_at_end": by_stage,
            "new_referrals": new_referrals,
            "closed": closed,
            "close_reasons": dict(sorted(close_reasons.items())),
        },
        "stage_days": [{"stage": st, "median_days": _median(stage_days[st]), "n": len(stage_days[st])}
                       for st in STAGES if st != Stage.closed.value],
        "deadlines": {"kinds": deadline_rows, "due": total_due, "on_time": total_on_time,
                      "share_met": round(total_on_time / total_due, 3) if total_due else None},
        "escalations": {**esc, "by_decision": dict(sorted(by_decision.items())),
                        "reasons": dict(sorted(esc_reasons.items())),
                        "median_days_to_decision": _median(days_to_decision)},
        "funding": {"items": funding_rows, "total": round(sum(r["total"] for r in funding_rows), 2),
                    "joint": round(sum(r["joint"] for r in funding_rows), 2)},
        "outcomes": {
            "closed_with_outcomes": closed_with_outcomes,
            "sdq": sdq_rows,
            "goal_attainment": {
                "scores": len(gas_scores),
                "mean_score": round(statistics.fmean(gas_scores), 2) if gas_scores else None,
                "goals": len(goals_achieved), "achieved": sum(goals_achieved),
                "achieved_share": (round(sum(goals_achieved) / len(goals_achieved), 3)
                                   if goals_achieved else None),
            },
            "cooperation": {"cases": cooperation[1], "cooperating": cooperation[0],
                            "share": round(cooperation[0] / cooperation[1], 3) if cooperation[1] else None},
        },
    }


# ---------------------------------------------------------------- rendering


def _parse(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def make_env(timezone: str = "Europe/Copenhagen") -> Environment:
    """The dashboard's jinja2 environment (pages and the report share it)."""
    tz = ZoneInfo(timezone)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)

    def dt(value: Any) -> str:
        parsed = _parse(value)
        return parsed.astimezone(tz).strftime("%Y-%m-%d %H:%M") if parsed else "—"

    def d(value: Any) -> str:
        parsed = _parse(value)
        if parsed is None:
            return str(value)[:10] if value else "—"
        return parsed.astimezone(tz).strftime("%Y-%m-%d")

    def age(value: Any, now: datetime) -> str:
        parsed = _parse(value)
        return age_text(parsed, now) if parsed else "—"

    def money(value: Any) -> str:
        try:
            return f"{float(value):,.0f}".replace(",", "\u202f")
        except (TypeError, ValueError):
            return "—"

    def pct(value: Any) -> str:
        try:
            return f"{float(value) * 100:.0f} %"
        except (TypeError, ValueError):
            return "—"

    def who(value: Any, staff: dict | None = None) -> str:
        if not value:
            return "—"
        names = staff or {}
        return ", ".join(names.get(part, part) for part in str(value).split(","))

    def stage(value: Any) -> str:
        return str(value).replace("_", " ")

    env.filters.update(dt=dt, d=d, age=age, money=money, pct=pct, who=who, stage=stage,
                       family=reason_family, num=lambda v: "—" if v is None else v)
    env.globals["timezone"] = timezone
    return env


@lru_cache(maxsize=4)
def _env(timezone: str) -> Environment:
    return make_env(timezone)


def render_report_html(data: dict) -> str:
    return _env(data.get("timezone") or "Europe/Copenhagen").get_template(
        "report_document.html.j2").render(r=data)


def html_to_pdf(html: str) -> bytes | None:
    """The document service's renderer (WeasyPrint) when present; else no PDF."""
    try:
        from activities.documents import html_to_pdf as render
    except ImportError:
        return None
    try:
        return render(html)
    except Exception as error:  # noqa: BLE001 - Pango missing etc.: HTML only
        log.warning("monthly report PDF not rendered: %s", error)
        return None


# ---------------------------------------------------------------- reading and storing


def load_states(session: Session, until: datetime | None = None) -> Iterator[CaseState]:
    """Every case registered before `until`, streamed (10,000 cases never sit in memory)."""
    query = select(CaseRow.__table__.c.document).execution_options(yield_per=200)
    if until is not None:
        query = query.where(CaseRow.__table__.c.created_at < until)
    for doc in session.execute(query).scalars():
        yield CaseState.model_validate(doc)


def build_report(engine: Engine, month: str, country: str, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    timezone = TIMEZONES.get(country.upper(), "Europe/Copenhagen")
    _, end = month_bounds(month, timezone)
    with Session(engine) as session:
        return compute_report(load_states(session, until=end), month, timezone=timezone, now=now,
                              country=country.upper())


def store_report(engine: Engine, data: dict, generated_by: str, with_pdf: bool = True) -> MonthlyReportRow:
    html = render_report_html(data)
    pdf = html_to_pdf(html) if with_pdf else None
    with Session(engine) as session:
        row = session.get(MonthlyReportRow, data["month"])
        if row is None:
            row = MonthlyReportRow(month=data["month"], generated_at=datetime.now(UTC),
                                   generated_by=generated_by, data=data, html=html, pdf=pdf)
            session.add(row)
        else:
            row.generated_at, row.generated_by = datetime.now(UTC), generated_by
            row.data, row.html, row.pdf = data, html, pdf
        session.commit()
        session.refresh(row)
        session.expunge(row)
        return row


def build_and_store(engine: Engine, month: str, country: str, generated_by: str,
                    now: datetime | None = None, with_pdf: bool = True) -> MonthlyReportRow:
    return store_report(engine, build_report(engine, month, country, now), generated_by, with_pdf)


def _table_exists(engine: Engine, name: str) -> bool:
    try:
        return inspect(engine).has_table(name)
    except Exception:  # noqa: BLE001
        return False


def notify_in_app(engine: Engine, *, key: str, case_id: str, recipient_id: str, recipient_role: str,
                  purpose: str, subject: str, body: str) -> str | None:
    """An in-app notification row in the notification service's outbox (`notifications`),
    when that table exists in this installation; idempotent by `key`. Returns its id."""
    try:
        from models.tables_outbox import NotificationRow
    except ImportError:
        return None
    if not hasattr(NotificationRow, "__table__") or not _table_exists(engine, "notifications"):
        return None
    now = datetime.now(UTC)
    with Session(engine) as session:
        table = NotificationRow.__table__
        existing = session.execute(select(table.c.id).where(table.c.key == key)).scalar()
        if existing:
            return existing
        values = {"id": str(uuid.uuid4()), "key": key, "case_id": case_id, "channel": "in_app",
                  "recipient_id": recipient_id, "recipient_role": recipient_role, "purpose": purpose,
                  "template": purpose, "language": "en", "status": "sent", "attempts": 1,
                  "created_at": now, "updated_at": now, "sent_at": now, "subject": subject,
                  "body": body}
        values = {k: v for k, v in values.items() if k in table.c}
        session.execute(table.insert().values(**values))
        session.commit()
        return values["id"]


def managers(session: Session) -> list[StaffRow]:
    rows = session.execute(select(StaffRow)).scalars().all()
    return [r for r in rows if r.active and ({"manager", "admin"} & set(r.roles or []))]


# ---------------------------------------------------------------- activities


class ReportActivities:
    def __init__(self, engine: Engine, country: str = "DK") -> None:
        self.engine = engine
        self.country = country

    @activity.defn(name="build_monthly_report")
    def build_monthly_report(self, month: str) -> dict:
        """Compute, render and store the month's report; idempotent (re-run overwrites)."""
        row = build_and_store(self.engine, parse_month(month), self.country, "schedule")
        return {"month": row.month, "pdf": row.pdf is not None,
                "open_cases": row.data["cases"]["open_at_end"]}

    @activity.defn(name="send_monthly_report")
    def send_monthly_report(self, month: str) -> int:
        """Tell every manager the report is ready: an in-app notification per manager in the
        notification outbox (when it exists); idempotent by (month, manager)."""
        with Session(self.engine) as session:
            people = managers(session)
        sent = 0
        for person in people:
            nid = notify_in_app(
                self.engine, key=f"monthly_report:{month}:{person.id}", case_id="-",
                recipient_id=person.id, recipient_role="manager", purpose="monthly_report",
                subject=f"Monthly report {month}",
                body=f"The coordination group's report for {month} is ready: /reports/{month}",
            )
            sent += nid is not None
        return sent
