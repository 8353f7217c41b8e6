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
- the share of cases with active cooperation between an adult and a child unit (the Uppsala
  evaluation's key figure, defined in domain/cooperation.py);
- outcomes of the cases closed in the month, per instrument and informant: first against
  latest measurement (`CaseState.outcome_measurements`, compared by domain/outcomes.py), with
  means, changes, bands and norms; the old free-form `closure.outcomes` is mapped onto
  measurements (`legacy_measurements`) so older cases still count.

The same dict feeds the page, the document (HTML and tagged PDF, in the municipality's
language), `GET /api/v1/reports/{yyyy-mm}` and the managers' mail (docs/dashboard.md).
"""

from __future__ import annotations

import logging
import re
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from activities.funding import funding_lines
from domain import cooperation
from domain import outcomes as outcome_rules
from domain.access import CaseScope
from domain.stuck import age_text, reason_family
from models.case import CaseState, DeadlineStatus, Stage
from models.outcomes import DEFAULT_INSTRUMENTS, Instrument, OutcomeMeasurement
from models.projection import case_from_document
from models.tables import CaseRow, StaffRow
from models.tables_reporting import MonthlyReportRow

log = logging.getLogger("onefamily.report")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "dashboard"
TIMEZONES = {"DK": "Europe/Copenhagen", "SE": "Europe/Stockholm"}
CURRENCIES = {"DK": "kr.", "SE": "kr"}
LANGUAGES = {"DK": "da", "SE": "sv"}
SDQ_DIFFICULTIES = ("emotional", "conduct", "hyperactivity", "peer")
SDQ_SUBSCALES = (*SDQ_DIFFICULTIES, "prosocial")
STAGES = [s.value for s in Stage]
ACHIEVED = {"achieved", "reached", "met", "yes", "true"}


# ---------------------------------------------------------------- months


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """'2026-11' -> [start, end) in UTC, the month taken in the given time zone."""
    year, mon = (int(x) for x in month.split("-"))
    if not (1 <= mon <= 12 and 1900 <= year <= 2999):
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
    # ASCII digits only (int() takes any); the same pattern the OpenAPI spec declares
    # (api/openapi.py PARAMETER_PATTERNS["month"]).
    if not re.fullmatch(r"(19[0-9]{2}|2[0-9]{3})-(0[1-9]|1[0-2])", text):
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


def legacy_measurements(state: CaseState) -> list[OutcomeMeasurement]:
    """The old free-form closing `outcomes` object mapped onto measurements, so a case closed
    before the instruments existed still counts: each SDQ entry with a before and an after
    becomes two SDQ measurements (assessment, closing) carrying the total difficulties (or
    the subscales, when the entry has them). Goal attainment stays in `goal_scores`."""
    outcomes = (state.closure.outcomes if state.closure else None) or {}
    raw = outcomes.get("sdq") or outcomes.get("SDQ") or []
    entries: list[dict] = []
    if isinstance(raw, dict):
        for informant, value in raw.items():
            if isinstance(value, dict):
                entries.append({"informant": informant, **value})
    elif isinstance(raw, list):
        entries = [e for e in raw if isinstance(e, dict)]
    # When: the closing, and the assessment (else the referral) before it; any instant works
    # for the comparison, which only needs the order.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    at = getattr(state.closure, "at", None) or getattr(state, "created_at", None) or epoch
    start = getattr(state, "assessment_completed_at", None) or getattr(state, "created_at", None) or at
    by = getattr(state.closure, "by", None) or getattr(state, "created_by", None) or "-"
    out: list[OutcomeMeasurement] = []
    for e in entries:
        before = e.get("before", e.get("at_assessment", e.get("assessment")))
        after = e.get("after", e.get("at_closing", e.get("closing")))
        informant = str(e.get("informant") or "unknown")
        pair = [_legacy_sdq(before), _legacy_sdq(after)]
        if pair[0] is None or pair[1] is None:
            continue
        for (scores, totals), occasion, when in zip(pair, ("assessment", "closing"), (start, at),
                                                    strict=True):
            out.append(OutcomeMeasurement(instrument="sdq", informant=informant, occasion=occasion,
                                          recorded_at=when, recorded_by=by, scores=scores,
                                          totals=totals))
    return out


def _legacy_sdq(value: Any) -> tuple[dict[str, float], dict[str, float]] | None:
    """(scores, totals) of one old SDQ value: a number is the total difficulties; a dict may
    hold the subscales (the total is then their sum) or a total."""
    if isinstance(value, dict):
        scores = {k: float(v) for k, v in value.items()
                  if k in SDQ_SUBSCALES and _number(v) is not None}
        if all(k in scores for k in SDQ_DIFFICULTIES):
            return scores, outcome_rules.compute_totals(DEFAULT_INSTRUMENTS["sdq"], scores)
    number = _number(value)
    if number is None:
        return None
    return {}, {"total_difficulties": number}


def sdq_pairs(state: CaseState) -> list[tuple[str, float, float]]:
    """(informant, before, after) SDQ total difficulties, first and latest measurement of the
    same informant (the old closing object mapped, and the recorded measurements)."""
    pairs = []
    for c in compared(state):
        before = c.first.totals.get("total_difficulties")
        after = c.latest.totals.get("total_difficulties")
        if c.instrument == "sdq" and before is not None and after is not None:
            pairs.append((c.informant, before, after))
    return pairs


def measurements_of(state: CaseState) -> list[OutcomeMeasurement]:
    """Every outcome measurement of a case: recorded ones, else the old closing object's.
    A case with recorded SDQ measurements ignores the old object's SDQ (no double count)."""
    recorded = list(getattr(state, "outcome_measurements", None) or [])
    has_sdq = {m.informant for m in recorded if m.instrument == "sdq"}
    legacy = [m for m in legacy_measurements(state) if m.informant not in has_sdq]
    return recorded + legacy


def instruments_of(state: CaseState) -> dict[str, Instrument]:
    """The case's instruments (its policy's), the standard ones for what that policy lacks."""
    policy = getattr(state, "policy", None)
    return {**DEFAULT_INSTRUMENTS, **(getattr(policy, "outcome_instruments", None) or {})}


def compared(state: CaseState) -> list[outcome_rules.Comparison]:
    """First against latest measurement per instrument, informant (and goal), for the pairs
    that have both (domain/outcomes.py: never across informants)."""
    return [c for c in outcome_rules.comparisons(instruments_of(state), measurements_of(state))
            if c.latest is not None]


def goal_scores(state: CaseState) -> tuple[list[float], list[bool]]:
    """(numeric goal attainment scores, achieved flags) of a closed case: the latest recorded
    goal-attainment measurement per goal, the old closing object's, else the last recorded
    goal progress."""
    outcomes = (state.closure.outcomes if state.closure else None) or {}
    raw = outcomes.get("goal_attainment") or {}
    items: list[Any] = (list(raw.values()) if isinstance(raw, dict)
                        else list(raw) if isinstance(raw, list) else [])
    latest: dict[str, float] = {}
    for m in getattr(state, "outcome_measurements", None) or []:
        if m.instrument == "goal_attainment" and "attainment" in m.scores:
            latest[m.goal_id or m.informant] = m.scores["attainment"]
    if isinstance(raw, dict):  # a score the close mapped onto a measurement counts once
        items = [v for goal, v in raw.items()
                 if not (str(goal) in latest and _number(v.get("score") if isinstance(v, dict)
                                                         else v) is not None)]
    scores, achieved = list(latest.values()), []
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


def cooperates(state: CaseState, start: datetime | None = None, end: datetime | None = None) -> bool:
    """Active cooperation between an adult and a child unit in [start, end) (domain/cooperation.py
    has the definition): the active core team, and the departments funding the plans in force."""
    team = [(m.department, m.discipline) for m in state.team if m.status == "active"]
    funders = [line.department for line in funding_lines(state)
               if (end is None or line.valid_from < end)
               and (start is None or line.valid_until is None or line.valid_until > start)]
    return cooperation.cooperates(has_coordinator=bool(state.coordinator_id), team=team,
                                  funding_departments=funders)


class OutcomeTable:
    """Before/after per instrument and informant over the cases of the report."""

    def __init__(self) -> None:
        # (instrument, informant) -> measure key -> list of (before, after)
        self.values: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(
            lambda: defaultdict(list))
        self.bands: dict[tuple[str, str], dict[str, dict[str, dict[str, int]]]] = defaultdict(
            lambda: defaultdict(lambda: {"before": defaultdict(int), "after": defaultdict(int)}))
        self.cases: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.instruments: dict[str, Instrument] = {}

    def add(self, state: CaseState) -> bool:
        """Adds the case's pairs; True when it had any."""
        found = False
        instruments = instruments_of(state)
        for c in compared(state):
            instrument = instruments[c.instrument]
            self.instruments.setdefault(c.instrument, instrument)
            group = (c.instrument, c.informant)
            before_values = outcome_rules.values_of(c.first)
            after_values = outcome_rules.values_of(c.latest)
            for measure in [*instrument.totals, *instrument.scale_keys]:
                if measure not in before_values or measure not in after_values:
                    continue
                found = True
                self.values[group][measure].append((before_values[measure], after_values[measure]))
                for when, band in zip(("before", "after"), c.bands.get(measure, (None, None)),
                                      strict=True):
                    if band is not None:
                        self.bands[group][measure][when][band] += 1
                self.cases[group].add(state.id)
        return found

    def rows(self) -> list[dict]:
        out = []
        order = {k: i for i, k in enumerate(DEFAULT_INSTRUMENTS)}
        for (key, informant) in sorted(self.values, key=lambda g: (order.get(g[0], 99), g[0], g[1])):
            instrument = self.instruments[key]
            informant_order = {k: i for i, k in enumerate(instrument.informants)}
            measures = []
            for measure in [*instrument.totals, *instrument.scale_keys]:
                pairs = self.values[(key, informant)].get(measure)
                if not pairs:
                    continue
                better = measure in instrument.higher_is_better
                before = statistics.fmean(b for b, _ in pairs)
                after = statistics.fmean(a for _, a in pairs)
                norm = instrument.norms.get(measure)
                bands = self.bands[(key, informant)].get(measure)
                measures.append({
                    "key": measure, "total": measure in instrument.totals, "n": len(pairs),
                    "mean_before": round(before, 2), "mean_after": round(after, 2),
                    "mean_change": round(statistics.fmean(a - b for b, a in pairs), 2),
                    "higher_is_better": better,
                    "improved": sum(1 for b, a in pairs if (a > b if better else a < b)),
                    "worsened": sum(1 for b, a in pairs if (a < b if better else a > b)),
                    "norm": norm,
                    "before_vs_norm": round(before - norm, 2) if norm is not None else None,
                    "after_vs_norm": round(after - norm, 2) if norm is not None else None,
                    "bands_before": dict(sorted(bands["before"].items())) if bands else {},
                    "bands_after": dict(sorted(bands["after"].items())) if bands else {},
                })
            out.append({"instrument": key, "informant": informant,
                        "informant_rank": informant_order.get(informant, 99),
                        "cases": len(self.cases[(key, informant)]),
                        "pairs": max((m["n"] for m in measures), default=0), "measures": measures})
        out.sort(key=lambda r: (order.get(r["instrument"], 99), r["instrument"], r["informant_rank"],
                                r["informant"]))
        for r in out:
            r.pop("informant_rank")
        return out


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
    table = OutcomeTable()
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
            cooperation[0] += cooperates(s, start, end)
        if s.closure is not None and start <= s.closure.at < end:
            closed += 1
            close_reasons[s.closure.reason.value] += 1
            measured = table.add(s)
            scores, achieved = goal_scores(s)
            if measured or scores or achieved:
                closed_with_outcomes += 1
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
    instrument_rows = table.rows()
    # The SDQ total difficulties per informant, as the report showed them before instruments
    # (kept for readers of the JSON): the same numbers as `instruments`.
    sdq_rows = [{"informant": r["informant"], "n": m["n"], "mean_before": m["mean_before"],
                 "mean_after": m["mean_after"], "mean_change": m["mean_change"],
                 "improved": m["improved"]}
                for r in instrument_rows if r["instrument"] == "sdq"
                for m in r["measures"] if m["key"] == "total_difficulties"]
    return {
        "month": month,
        "country": country,
        "language": LANGUAGES.get(country, "en"),
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
            # Whose outcomes: the cases closed in the month, first against latest measurement.
            "population": "closed_in_month",
            "closed_with_outcomes": closed_with_outcomes,
            "instruments": instrument_rows,
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

    @pass_context
    def dec(ctx: Any, value: Any, signed: bool = False) -> str:
        """A figure with at most two decimals, none when whole (18, 7.8, -0.25), with the
        decimal comma in Danish and Swedish; "—" for nothing."""
        if value is None or value == "":
            return "—"
        try:
            number = round(float(value), 2)
        except (TypeError, ValueError):
            return str(value)
        text = f"{number:+.2f}" if signed else f"{number:.2f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        if text in ("+0", "-0"):
            text = "0"
        return text.replace(".", ",") if ctx.get("lang") in ("da", "sv") else text

    env.filters.update(dt=dt, d=d, age=age, money=money, pct=pct, who=who, stage=stage, dec=dec,
                       family=reason_family, num=lambda v: "—" if v is None else v)
    env.globals["timezone"] = timezone
    return env


@lru_cache(maxsize=4)
def _env(timezone: str) -> Environment:
    from api.pages import i18n  # the pages' catalogues (templates/pages/i18n): pure, no app

    env = make_env(timezone)
    i18n.install(env)
    return env


def render_report_html(data: dict, language: str | None = None) -> str:
    """The report document in `language`, by default the municipality's (DK Danish, SE
    Swedish): the document the coordination group files and the PDF is made of."""
    lang = language or data.get("language") or LANGUAGES.get(str(data.get("country")), "en")
    timezone = data.get("timezone") or "Europe/Copenhagen"
    return _env(timezone).get_template("report_document.html.j2").render(
        r=data, lang=lang, timezone=timezone)


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


def timezone_of(country: str) -> str:
    """The municipality's time zone: its policy's, else the country's capital's."""
    try:
        from domain.policy import current_policy

        return current_policy(country.upper()).timezone
    except Exception:  # noqa: BLE001 - unknown country: the table
        return TIMEZONES.get(country.upper(), "Europe/Copenhagen")


def scope_label(scope: CaseScope | None) -> dict:
    """Whose figures these are: the municipality's, or some units' (a manager's)."""
    if scope is None or scope.everything:
        return {"kind": "municipality", "units": []}
    return {"kind": "units", "units": sorted(scope.units)}


def load_states(session: Session, until: datetime | None = None,
                scope: CaseScope | None = None) -> Iterator[CaseState]:
    """Every case registered before `until` (within `scope`, the access policy's report scope,
    as SQL by api/scope.py), streamed (10,000 cases never sit in memory)."""
    query = select(CaseRow.__table__.c.document).execution_options(yield_per=200)
    if until is not None:
        query = query.where(CaseRow.__table__.c.created_at < until)
    if scope is not None and not scope.everything:
        from api.scope import scope_clause  # the one SQL form of domain.access.in_scope

        query = query.where(scope_clause(scope))
    for doc in session.execute(query).scalars():
        yield case_from_document(doc)


def build_report(engine: Engine, month: str, country: str, now: datetime | None = None,
                 scope: CaseScope | None = None) -> dict:
    """The month's figures over every case, or over the cases of `scope` (a manager's unit).
    The one function behind the page, the document, the PDF, the JSON and the mail."""
    now = now or datetime.now(UTC)
    timezone = timezone_of(country)
    _, end = month_bounds(month, timezone)
    with Session(engine) as session:
        data = compute_report(load_states(session, until=end, scope=scope), month,
                              timezone=timezone, now=now, country=country.upper())
    data["scope"] = scope_label(scope)
    return data


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
    """Who hears of the report: every active manager (the managers of each unit)."""
    rows = session.execute(select(StaffRow).order_by(StaffRow.id)).scalars().all()
    return [r for r in rows if r.active and "manager" in (r.roles or [])]


def mail_figures(data: dict) -> dict:
    """The few figures a manager's mail carries: counts and shares only. Never an outcome
    mean (with one closed case it would be that child's scores), never a name or an id."""
    cases = data["cases"]
    return {
        "open_at_end": cases["open_at_end"], "new_referrals": cases["new_referrals"],
        "closed": cases["closed"], "deadlines_due": data["deadlines"]["due"],
        "deadlines_share_met": data["deadlines"]["share_met"],
        "escalations_new": data["escalations"]["new"],
        "cooperation_share": data["outcomes"]["cooperation"]["share"],
        "cooperation_cases": data["outcomes"]["cooperation"]["cases"],
    }


def report_notification_key(month: str, manager_id: str) -> str:
    """One mail per (month, manager), ever: a re-run of the month finds the key and stops."""
    return f"monthly_report:{month}:{manager_id}"


# ---------------------------------------------------------------- activities


class ReportActivities:
    """`notifications`: the notification service (activities/notifications.py) that records
    and sends each manager's mail exactly once per key; without it (older wiring) the mail
    waits in the in-app outbox only."""

    def __init__(self, engine: Engine, country: str = "DK", notifications: Any = None) -> None:
        self.engine = engine
        self.country = country
        self.notifications = notifications

    @activity.defn(name="build_monthly_report")
    def build_monthly_report(self, month: str) -> dict:
        """Compute, render and store the month's report; idempotent (re-run overwrites)."""
        row = build_and_store(self.engine, parse_month(month), self.country, "schedule")
        return {"month": row.month, "pdf": row.pdf is not None,
                "open_cases": row.data["cases"]["open_at_end"]}

    def manager_requests(self, month: str) -> list:
        """One mail per active manager, with the figures of what that manager may read
        (domain.access.report_scope: the unit's; everything for a manager who is admin too),
        in the manager's language (else the municipality's), a link to the report page."""
        from domain.access import report_scope
        from models.case import Actor
        from models.messaging import NotificationRequest, Recipient, RecipientRole

        with Session(self.engine) as session:
            people = managers(session)
        base = str(getattr(self.notifications, "public_url", None) or "").rstrip("/")
        by_scope: dict[CaseScope, dict] = {}
        requests = []
        for person in people:
            scope = report_scope(Actor(id=person.id, roles=list(person.roles or []), unit=person.unit))
            if scope not in by_scope:
                by_scope[scope] = build_report(self.engine, month, self.country, scope=scope)
            data = by_scope[scope]
            language = person.language if person.language in ("da", "sv", "en") else None
            requests.append(NotificationRequest(
                key=report_notification_key(month, person.id), case_id=f"report-{month}",
                purpose="monthly_report",
                recipient=Recipient(role=RecipientRole.manager, id=person.id, language=language),
                template="monthly_report_ready", language=language,
                context={"month": month, "report_url": f"{base}/reports/{month}",
                         "units": data["scope"]["units"], "figures": mail_figures(data)},
            ))
        return requests

    @activity.defn(name="send_monthly_report")
    def send_monthly_report(self, month: str) -> int:
        """Mail every manager that the report is made (through the notification outbox:
        recorded first, sent once per key, e-mail when SMTP is configured and the manager has
        an address, else in-app). A retry or a re-run of the month sends nothing twice.
        Returns how many managers have it."""
        parse_month(month)
        done = 0
        failed: list[Exception] = []
        for req in self.manager_requests(month):
            if self.notifications is not None:
                try:  # one manager's mailbox failing does not hold back the others' mail
                    result = self.notifications.send(req)
                except Exception as error:  # noqa: BLE001 - raised below, after the others
                    failed.append(error)
                    continue
                done += result.status.value == "sent"
            else:
                done += notify_in_app(
                    self.engine, key=req.key, case_id=req.case_id, recipient_id=req.recipient.id,
                    recipient_role="manager", purpose=req.purpose,
                    subject=f"Monthly report {month}",
                    body=f"The report for {month} is ready: /reports/{month}") is not None
        if failed:
            raise failed[0]  # Temporal retries; the mails already sent are not sent again
        return done
