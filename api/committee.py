"""The visitation committee's queue and decisions (DESIGN §3.6, §5)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException

from api.cases import Cmd
from api.readmodel import committee_items
from models.case import CommitteeDecision
from models.commands import CommandInput

router = APIRouter(prefix="/api/v1/committee", tags=["committee"])


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
    cmd.caller.require()
    rows = committee_items(cmd.session, None if status == "all" else status)
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
