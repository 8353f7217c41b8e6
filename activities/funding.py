"""Joint funding as data: which department pays how much per month for which plan version,
from when until when. Pure functions over a case state (no I/O), shared by the dashboard's
index and the monthly report.

- A plan version is in force from its `plan_activated` history event until the next plan
  version is activated or the case closes.
- A service's monthly cost is split by its funding shares (no shares: its own department
  pays all; shares adding up to less than 1: its own department pays the rest).
- When the visitation committee decided a split for the plan (`committee_funding`), that
  split replaces the shares of the plan's jointly funded services (those with two or more
  departments), or of all its services when none is joint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models.case import CaseState, PlanVersion


@dataclass(frozen=True)
class FundingLine:
    plan_version: int
    department: str
    monthly_amount: float
    joint: bool
    valid_from: datetime
    valid_until: datetime | None


def plan_periods(state: CaseState) -> list[tuple[PlanVersion, datetime, datetime | None]]:
    """(plan, in force from, until) for every plan version that was ever active."""
    by_version = {p.version: p for p in state.plans}
    activations = sorted(
        (h.at, h.detail.get("version")) for h in state.history
        if h.event == "plan_activated" and h.detail.get("version") in by_version
    )
    if not activations:
        active = state.active_plan
        if active is not None:
            activations = [(active.decided_at or active.created_at, active.version)]
    end_of_case = state.closure.at if state.closure else None
    periods = []
    for i, (start, version) in enumerate(activations):
        until = activations[i + 1][0] if i + 1 < len(activations) else end_of_case
        periods.append((by_version[version], start, until))
    return periods


def _split(plan: PlanVersion) -> list[tuple[str, float, bool]]:
    """(department, monthly amount, joint) for one plan version."""
    committee = {f.department: f.share for f in plan.committee_funding}
    joint_services = [s for s in plan.services if len({f.department for f in s.funding}) > 1]
    committee_applies_to = joint_services or plan.services
    out: list[tuple[str, float, bool]] = []
    for service in plan.services:
        if committee and service in committee_applies_to:
            shares = dict(committee)
        else:
            shares: dict[str, float] = {}
            for f in service.funding:
                shares[f.department] = shares.get(f.department, 0.0) + f.share
        rest = 1.0 - sum(shares.values())
        if rest > 1e-9:
            shares[service.department] = shares.get(service.department, 0.0) + rest
        joint = len(shares) > 1
        for department, share in shares.items():
            out.append((department, service.monthly_cost * share, joint))
    return out


def funding_lines(state: CaseState) -> list[FundingLine]:
    lines: list[FundingLine] = []
    for plan, start, until in plan_periods(state):
        merged: dict[tuple[str, bool], float] = {}
        for department, amount, joint in _split(plan):
            merged[(department, joint)] = merged.get((department, joint), 0.0) + amount
        for (department, joint), amount in sorted(merged.items()):
            lines.append(FundingLine(plan.version, department, round(amount, 2), joint, start, until))
    return lines
