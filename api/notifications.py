"""The outbox: what was sent, to whom, on which channel, when, and its delivery status.

`GET /api/v1/notifications?case_id=` lists one case's notifications (need-to-know as for the
case's documents). Without `case_id`, managers, admins and the committee see all; other staff
see the notifications of the cases they work on and those addressed to them. The message text
itself (`subject`, `body`) is shown only to its recipient: this is their in-app inbox.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, or_
from sqlmodel import Session, select

from api.deps import Caller, get_caller, get_session
from api.documents import check_owner
from domain.lifecycle import is_manager
from models.tables import CaseRow
from models.tables_outbox import NotificationRow

router = APIRouter(tags=["notifications"])


def _item(row: NotificationRow, viewer: str) -> dict:
    item = {
        "id": row.id,
        "case_id": row.case_id,
        "channel": row.channel,
        "recipient_id": row.recipient_id,
        "recipient_role": row.recipient_role,
        "purpose": row.purpose,
        "status": row.status,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "not_before": row.not_before,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "language": row.language,
    }
    if row.recipient_id == viewer:
        item.update(subject=row.subject, body=row.body)
    return item


@router.get("/api/v1/notifications")
def list_notifications(
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    case_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal["queued", "sent", "failed", "deferred"] | None = None,
    purpose: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict:
    actor = caller.require()
    query = select(NotificationRow)
    if case_id is not None:
        check_owner(session, actor, case_id)
        query = query.where(NotificationRow.case_id == case_id)
    elif not (is_manager(actor) or "committee" in actor.roles):
        mine = select(CaseRow.id).where(or_(CaseRow.coordinator_id == actor.id,
                                            CaseRow.team_text.contains(f",{actor.id},")))
        query = query.where(or_(NotificationRow.recipient_id == actor.id,
                                NotificationRow.case_id.in_(mine)))
    if status is not None:
        query = query.where(NotificationRow.status == status)
    if purpose is not None:
        query = query.where(NotificationRow.purpose == purpose)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(NotificationRow.created_at.desc(), NotificationRow.id)
                        .offset(offset).limit(limit)).all()
    return {"items": [_item(r, actor.id) for r in rows], "total": total}
