"""What GET /cases/{id} and every command answer: the case as a reader sees it now."""

from __future__ import annotations

from datetime import datetime, timedelta

from models.case import CaseState

DUPLICATE_FLAG = "possible_duplicate"


def case_view(state: CaseState, now: datetime, duplicates: bool = False) -> dict:
    """`duplicates`: whether this reader may see the possible-duplicate flag, which names
    other cases (`domain.access.may_see_duplicates`: the unit's manager, admin)."""
    doc = state.model_dump(mode="json")
    if not duplicates:
        doc["flags"] = [f for f in doc["flags"] if f.get("kind") != DUPLICATE_FLAG]
    for deadline, out in zip(state.deadlines, doc["deadlines"], strict=True):
        out["status"] = deadline.status_at(now).value
    doc["plan"] = doc["plans"][-1] if doc["plans"] else None
    active = state.active_plan
    doc["active_plan_version"] = active.version if active else None
    doc["overdue"] = any(d["status"] == "overdue" for d in doc["deadlines"])
    if state.blocked_on is not None:
        doc["blocked_on"]["summary"] = blocked_summary(state, now)
    return doc


def _ago(delta: timedelta) -> str:
    days = delta.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(delta.total_seconds() // 3600)
    if hours == 0:
        return "less than an hour"
    return f"{hours} hour{'s' if hours != 1 else ''}"


def blocked_summary(state: CaseState, now: datetime) -> str:
    """"Who has the ball", as the family and the dashboard read it (DESIGN §3.10)."""
    b = state.blocked_on
    assert b is not None
    text = f"waiting for {b.what} since {_ago(now - b.since)}"
    if b.owner:
        text += f" (owner: {b.owner})"
    if b.next_timer_at is not None and b.next_timer:
        when = b.next_timer_at - now
        text += (f"; next: {b.next_timer} in {_ago(when)}" if when.total_seconds() > 0
                 else f"; {b.next_timer} due now")
    return text
