"""What GET /cases/{id} and every command answer: the case as a reader sees it now."""

from __future__ import annotations

from datetime import datetime

from models.case import CaseState


def case_view(state: CaseState, now: datetime) -> dict:
    doc = state.model_dump(mode="json")
    for deadline, out in zip(state.deadlines, doc["deadlines"], strict=True):
        out["status"] = deadline.status_at(now).value
    doc["plan"] = doc["plans"][-1] if doc["plans"] else None
    active = state.active_plan
    doc["active_plan_version"] = active.version if active else None
    doc["overdue"] = any(d["status"] == "overdue" for d in doc["deadlines"])
    return doc
