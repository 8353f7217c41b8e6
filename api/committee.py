"""The visitation committee's queue and decisions (DESIGN §3.6, §5)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlmodel import select

from api.cases import Cmd
from api.readmodel import committee_items
from api.scope import scoped_case_ids
from domain.access import committee_scope, may_read_committee
from models.case import Actor, CommitteeDecision
from models.commands import CommandInput
from models.tables import CommitteeItemRow, CommitteeMeetingRow

router = APIRouter(prefix="/api/v1/committee", tags=["committee"])


def _reader(cmd) -> Actor:
    """The caller, if the access policy lets them read the committee's records (DESIGN §9)."""
    actor = cmd.caller.require()
    if not may_read_committee(actor):
        raise HTTPException(403, "The committee's agenda, meetings and funding are for the "
                                 "committee, managers and administrators.")
    return actor


def _item_out(row) -> dict:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "plan_version": row.plan_version,
        "reasons": row.reasons,
        "escalated_at": row.escalated_at,
        "meeting_at": row.meeting_at,
        "status": row.status,
        "decision": row.decision,
        "decided_at": row.decided_at,
    }


@router.get("/agenda")
def agenda(cmd: Cmd, status: Literal["waiting", "decided", "withdrawn", "all"] = "waiting") -> dict:
    actor = _reader(cmd)
    rows = committee_items(cmd.session, None if status == "all" else status, committee_scope(actor))
    return {"items": [_item_out(r) for r in rows], "total": len(rows)}


@router.post("/items/{item_id}/decision")
async def decide(item_id: str, body: CommitteeDecision, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    # Item ids are "<case uuid>-<n>": the case is known without waiting for the read model.
    case_id, _, number = item_id.rpartition("-")
    if not case_id or not number.isdigit():
        raise HTTPException(404, f"No committee item '{item_id}'.")
    inp = CommandInput(actor=actor, body=body.model_dump(mode="json"), item_id=item_id)
    return await cmd.run(case_id, "committee_decision", inp)


@router.get("/meetings")
def meetings(cmd: Cmd, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
    """Held meetings with their frozen agendas, newest first (a manager sees the items of
    their unit's cases only)."""
    actor = _reader(cmd)
    scope = committee_scope(actor)
    rows = cmd.session.exec(
        select(CommitteeMeetingRow).order_by(CommitteeMeetingRow.at.desc()).limit(limit)
    ).all()
    if scope.everything:
        def shown(item_ids: list[str]) -> list[str]:
            return item_ids
    else:
        mine = set(cmd.session.exec(
            select(CommitteeItemRow.id).where(CommitteeItemRow.case_id.in_(scoped_case_ids(scope)))
        ).all())

        def shown(item_ids: list[str]) -> list[str]:
            return [i for i in item_ids if i in mine]
    items = [{"id": r.id, "committee_id": r.committee_id, "number": r.number, "at": r.at,
              "item_ids": shown(r.item_ids)} for r in rows]
    return {"items": items, "total": len(items)}


@router.get("/funding")
def funding(cmd: Cmd) -> dict:
    """Joint funding the committee decided, per department and month of decision: the plan's
    monthly cost times each department's decided share (a manager: their unit's cases)."""
    actor = _reader(cmd)
    scope = committee_scope(actor)
    query = select(CommitteeItemRow).where(CommitteeItemRow.status == "decided",
                                           CommitteeItemRow.decision != "rejected")
    if not scope.everything:
        query = query.where(CommitteeItemRow.case_id.in_(scoped_case_ids(scope)))
    rows = cmd.session.exec(query).all()
    totals: dict[tuple[str, str], float] = {}
    for row in rows:
        month = row.decided_at.strftime("%Y-%m") if row.decided_at else "unknown"
        for share in row.funding:
            key = (month, share["department"])
            totals[key] = totals.get(key, 0) + row.monthly_total * share["share"]
    items = [{"month": m, "department": d, "monthly_amount": round(v, 2)}
             for (m, d), v in sorted(totals.items())]
    return {"items": items, "total": len(items)}
