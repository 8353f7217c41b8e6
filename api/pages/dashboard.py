"""The manager overview (`/dashboard`), the stuck list (`/stuck`) and the case list (`/cases`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlmodel import Session

from api import dashboard, watch
from api.pages.common import (
    CASE_SORTS,
    CSS,
    REASON_KINDS,
    STUCK_SORTS,
    actor_of,
    catch_up,
    current_user,
    error_page,
    login_redirect,
    query_string,
    render,
    settings_of,
    staff_names,
)
from domain.access import (
    case_scope,
    may_read_reports,
)
from models.case import Stage
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)


@router.get("/assets/dashboard.css")
def stylesheet() -> FileResponse:
    return FileResponse(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})





@router.get("/dashboard")
async def overview_page(request: Request) -> Response:
    await catch_up(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        data = await asyncio.to_thread(dashboard.overview, session, watch.utcnow(), settings_of(request),
                                       actor_of(user))
        return render(request, "overview.html.j2", user=user, nav="dashboard", o=data,
                      staff=staff_names(session), refresh=60)


@router.get("/stuck")
async def stuck_page(
    request: Request,
    stage: Stage | None = None,
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    sort: dashboard.Sort = "age",
    acknowledged: str = "show",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    await catch_up(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        if not may_read_reports(actor_of(user)):
            return error_page(request, user, 403, "Managers only",
                          "The stuck list is for managers; your own cases are on the overview.")
        result = await asyncio.to_thread(
            dashboard.stuck_list, session, watch.utcnow(), stage=stage.value if stage else None,
            coordinator_id=coordinator_id or None, reason=reason or None, sort=sort,
            include_acknowledged=acknowledged != "hide", scope=case_scope(actor_of(user)),
            limit=50, offset=offset,
        )
        coordinators = [s for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if "coordinator" in s.roles]
        return render(
            request, "stuck.html.j2", user=user, nav="stuck", result=result, now=watch.utcnow(),
            staff=staff_names(session), stages=[s.value for s in Stage if s is not Stage.closed],
            coordinators=coordinators, reason_kinds=REASON_KINDS, sorts=STUCK_SORTS,
            f={"stage": stage.value if stage else "", "coordinator_id": coordinator_id, "reason": reason,
               "sort": sort, "acknowledged": acknowledged},
            query=query_string(request),
        )


@router.get("/cases")
async def cases_page(
    request: Request,
    stage: Stage | None = None,
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    overdue: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    sort: dashboard.CaseSort = "age",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        flag = {"true": True, "false": False}.get(overdue or "")
        result = await asyncio.to_thread(
            dashboard.case_list, session, watch.utcnow(), stage=stage.value if stage else None,
            coordinator_id=coordinator_id or None, overdue=flag, q=q or None, sort=sort,
            scope=case_scope(actor_of(user)), limit=50, offset=offset,
        )
        coordinators = [s for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if "coordinator" in s.roles]
        return render(
            request, "cases.html.j2", user=user, nav="cases", result=result, now=watch.utcnow(),
            staff=staff_names(session), all_stages=[s.value for s in Stage], coordinators=coordinators,
            sorts=CASE_SORTS, query=query_string(request),
            f={"stage": stage.value if stage else "", "coordinator_id": coordinator_id,
               "overdue": overdue or "", "q": q, "sort": sort},
        )


# ---------------------------------------------------------------- one case


@router.get("/")
async def my_work_page(request: Request) -> Response:
    """Until My work lands: the overview."""
    return RedirectResponse("/dashboard" + (f"?{request.url.query}" if request.url.query else ""),
                            status_code=303)
