"""The manager overview (`/dashboard`), the stuck list (`/stuck`) and the case list (`/cases`,
for everyone: the cases their role lets them see, with filters)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlmodel import Session

from api import dashboard, watch
from api.pages import i18n
from api.pages.common import (
    CASE_SORTS,
    REASON_KINDS,
    STUCK_SORTS,
    actor_of,
    catch_up,
    current_user,
    error_page,
    language_of,
    login_redirect,
    query_string,
    render,
    settings_of,
    staff_names,
)
from api.pages.manager_words import WORDS
from api.pages.referral import may_register
from domain.access import (
    case_scope,
    may_read_reports,
)
from models.case import Stage
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)


def managers_only(request: Request, user: StaffRow, key: str) -> Response:
    lang = language_of(request, user)
    return error_page(request, user, 403, i18n.translate(lang, "dash.error.managers_only"),
                      i18n.translate(lang, key))


@router.get("/dashboard")
async def overview_page(request: Request) -> Response:
    await catch_up(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        data = await asyncio.to_thread(dashboard.overview, session, watch.utcnow(), settings_of(request),
                                       actor_of(user))
        return render(request, "overview.html.j2", user=user, nav="dashboard", o=data, now=data["now"],
                      staff=staff_names(session), **WORDS)


def _stage(value: str) -> Stage | None:
    """A filter's stage: the form sends "" for any stage, and an unknown one is no filter."""
    return Stage(value) if value in Stage.__members__ else None


def _choice(value: str, allowed: list[str], default: str) -> str:
    return value if value in allowed else default


@router.get("/stuck")
async def stuck_page(
    request: Request,
    stage_: Annotated[str, Query(alias="stage", max_length=40)] = "",
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    sort_: Annotated[str, Query(alias="sort", max_length=20)] = "age",
    acknowledged: Annotated[str, Query(max_length=10)] = "show",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    stage = _stage(stage_)
    sort = _choice(sort_, [k for k, _ in STUCK_SORTS], "age")
    await catch_up(request)
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        if not may_read_reports(actor_of(user)):
            return managers_only(request, user, "dash.error.stuck_managers")
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
            coordinators=coordinators, reason_kinds=REASON_KINDS, sorts=[k for k, _ in STUCK_SORTS],
            f={"stage": stage.value if stage else "", "coordinator_id": coordinator_id, "reason": reason,
               "sort": sort, "acknowledged": acknowledged},
            query=query_string(request), **WORDS,
        )


@router.get("/cases")
async def cases_page(
    request: Request,
    stage_: Annotated[str, Query(alias="stage", max_length=40)] = "",
    coordinator_id: Annotated[str | None, Query(max_length=64)] = None,
    overdue: Annotated[str | None, Query(max_length=10)] = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    mine: Annotated[str | None, Query(max_length=8)] = None,
    sort_: Annotated[str, Query(alias="sort", max_length=20)] = "age",
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> Response:
    stage = _stage(stage_)
    sort = _choice(sort_, [k for k, _ in CASE_SORTS], "age")
    with Session(request.app.state.engine) as session:
        user = current_user(request, session)
        if user is None:
            return login_redirect(request)
        flag = {"true": True, "false": False}.get(overdue or "")
        if mine == "me":
            coordinator_id = user.id
        actor = actor_of(user)
        result = await asyncio.to_thread(
            dashboard.case_list, session, watch.utcnow(), stage=stage.value if stage else None,
            coordinator_id=coordinator_id or None, overdue=flag, q=q or None, sort=sort,
            scope=case_scope(actor), limit=50, offset=offset,
        )
        coordinators = [s for s in session.execute(select(StaffRow).order_by(StaffRow.name)).scalars()
                        if "coordinator" in s.roles]
        return render(
            request, "cases.html.j2", user=user, nav="cases", result=result, now=watch.utcnow(),
            may_register=may_register(user), everything=case_scope(actor).everything,
            staff=staff_names(session), all_stages=[s.value for s in Stage], coordinators=coordinators,
            sorts=[k for k, _ in CASE_SORTS], query=query_string(request),
            f={"stage": stage.value if stage else "",
               "coordinator_id": "" if mine == "me" else coordinator_id,
               "overdue": overdue or "", "q": q, "sort": sort, "mine": mine or ""},
            **WORDS,
        )
