"""The language switch: remembered on the staff member's row (and in a cookie, for the login
page and the family portal), then back to the page it was chosen on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from api.pages import i18n
from api.pages.common import safe_next
from domain.access import is_family
from models.tables import StaffRow

router = APIRouter(include_in_schema=False)
YEAR = 365 * 24 * 3600


@router.post("/language")
async def choose_language(request: Request, language: Annotated[str, Form(max_length=8)],
                          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if language not in i18n.LANGUAGES:
        return response
    actor = getattr(request.state, "principal", None)
    if actor is not None and not is_family(actor):
        with Session(request.app.state.engine) as session:
            row = session.get(StaffRow, actor.id)
            if row is not None:
                row.language = language
                session.commit()
    response.set_cookie(i18n.COOKIE, language, max_age=YEAR, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response
