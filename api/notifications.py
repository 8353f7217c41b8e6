"""The outbox: what was sent, to whom, on which channel, when, and its delivery status.

`GET /api/v1/notifications?case_id=` lists one case's notifications (need-to-know as for the
case's documents). Without `case_id`: the notifications of the cases in the caller's scope
(`domain.access.case_scope`: a manager's unit, a coordinator's cases, ...) and those
addressed to them. The message text
itself (`subject`, `body`) is shown only to its recipient: this is their in-app inbox.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import and_, func, or_
from sqlmodel import Session, select

from api.deps import Caller, get_caller, get_session
from api.documents import check_owner
from api.scope import scoped_case_ids
from domain.access import case_scope
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
    elif not (scope := case_scope(actor)).everything:
        # Their own inbox too, but never a message about a case they may not read (one sent
        # to every manager names cases of other units: the case's unit decides, not the
        # address); messages about no case (a monthly report, "-") are the recipient's.
        about_no_case = NotificationRow.case_id.not_in(select(CaseRow.id))
        query = query.where(or_(and_(NotificationRow.recipient_id == actor.id, about_no_case),
                                NotificationRow.case_id.in_(scoped_case_ids(scope))))
    if status is not None:
        query = query.where(NotificationRow.status == status)
    if purpose is not None:
        query = query.where(NotificationRow.purpose == purpose)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(NotificationRow.created_at.desc(), NotificationRow.id)
                        .offset(offset).limit(limit)).all()
    return {"items": [_item(r, actor.id) for r in rows], "total": total}
