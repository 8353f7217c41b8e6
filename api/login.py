"""Signing in and out in the browser (DESIGN §9): `/login` (local mode: staff id and
password; oidc mode: a link to the provider), `/logout`, `/set-password` (one-time link)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from api.credentials import (
    WRONG_LOGIN,
    check_password,
    clear_failures,
    password_problem,
    record_failure,
    throttled,
    use_password_link,
)
from api.pages.common import render, safe_next  # noqa: F401 - safe_next: used by api.oidc
from api.sessions import end_session, start_session

router = APIRouter(include_in_schema=False)


def _form(request: Request, status: int = 200, **ctx) -> Response:
    return render(request, "login.html.j2", status=status, user=None, nav="",
                  mode=request.app.state.settings.auth, **ctx)


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    return _form(request, next=safe_next(next))


@router.post("/login")
async def login(request: Request, staff_id: Annotated[str, Form(max_length=64)],
                password: Annotated[str, Form(max_length=1024)],
                next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    if request.app.state.settings.auth != "local":
        return _form(request, status=404, next="/", flash_error="Sign in through the municipality's login.")
    staff_id = staff_id.strip()
    peer = request.client.host if request.client else "-"

    def check():
        with Session(request.app.state.engine) as session:
            wait = throttled(session, staff_id, peer)
            if wait is not None:
                return None, wait.retry_after
            staff = check_password(session, staff_id, password)
            if staff is None:
                record_failure(session, staff_id, peer)
                return None, None
            clear_failures(session, staff_id)
            return staff.id, None

    found, retry_after = await asyncio.to_thread(check)
    if retry_after is not None:
        response = _form(request, status=429, next=safe_next(next), staff_id=staff_id,
                         flash_error="Too many failed sign-ins. Wait a few minutes and try again.")
        response.headers["Retry-After"] = str(retry_after)
        return response
    if found is None:
        return _form(request, status=401, next=safe_next(next), staff_id=staff_id, flash_error=WRONG_LOGIN)
    response = RedirectResponse(safe_next(next), status_code=303)
    end_session(request, response)  # a new session id at every sign-in (no fixation)
    start_session(request, response, "staff", found)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Ends the session server-side (the CSRF token was checked by the auth middleware)."""
    response = RedirectResponse("/login", status_code=303)
    end_session(request, response)
    return response


@router.get("/set-password")
def set_password_form(request: Request, token: str = "") -> Response:
    return render(request, "set_password.html.j2", user=None, nav="", token=token[:200])


@router.post("/set-password")
def set_password_submit(request: Request, token: Annotated[str, Form(max_length=200)],
                        password: Annotated[str, Form(max_length=1024)],
                        repeat: Annotated[str, Form(max_length=1024)]) -> Response:
    def again(message: str, status: int = 422) -> Response:
        return render(request, "set_password.html.j2", status=status, user=None, nav="", token=token,
                      flash_error=message)

    problem = password_problem(password)
    if problem:
        return again(problem)
    if password != repeat:
        return again("The two passwords differ.")
    with Session(request.app.state.engine) as session:
        staff_id = use_password_link(session, token, password)
    if staff_id is None:
        return again("This link is not valid any more (used, expired or unknown); ask your "
                     "administrator for a new one.", status=400)
    return RedirectResponse("/login?ok=" + "Password saved; sign in.".replace(" ", "+"), status_code=303)
