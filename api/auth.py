"""Who is calling (DESIGN §9, §5 order of refusals), in one ASGI middleware:

1. the credentials of the request → `request.state.principal` (an Actor, or None):
   a personal API token or (oidc mode) the provider's JWT as `Authorization: Bearer`, HTTP
   Basic only for `POST /api/v1/auth/tokens`, the session cookie of a browser, or — only in
   trusted-header mode and only from a trusted proxy — the trusted header; a family member's
   session (DESIGN §11) is the Actor `family:<member id>` with role "family", its case and
   member id, and opens only the family's API (`FAMILY_API`) under /api/;
2. 401 for the JSON API and the codec without valid credentials, before the body is read;
3. 413 for a body over ONEFAMILY_MAX_BODY_BYTES, before anything parses it;
4. CSRF: a state-changing request made with ambient credentials (the session cookie) must
   carry the session's token, as the header `X-CSRF-Token` or the form field `csrf_token`.

Endpoints then ask `Caller.require()` (api/deps.py) and the access policy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.credentials import (
    DEFAULT_TOKEN_DAYS,
    MAX_TOKEN_DAYS,
    TOKEN_PREFIX,
    WRONG_LOGIN,
    check_password,
    clear_failures,
    create_token,
    record_failure,
    staff_for_token,
    throttled,
    token_out,
    utcnow,
)
from api.sessions import COOKIE, live_session
from domain.access import FAMILY_ROLE, FAMILY_USE_PORTAL
from models.case import Actor
from models.tables import StaffRow
from models.tables_auth import TokenRow
from settings import Settings

log = logging.getLogger("onefamily.auth")

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
TOKENS_PATH = "/api/v1/auth/tokens"
# Forms that carry credentials of their own (a password, a one-time link), and the codec's
# decode (changes nothing; only the Temporal UI's origin may read its answer, by CORS).
CSRF_EXEMPT = {"/login", "/set-password", "/codec/decode",
               # the family's sign-in forms carry a one-time link or code of their own
               "/family/welcome", "/family/login", "/family/login/code"}
# What a family session opens under /api/ (DESIGN §11): the family's own API and "who am I".
# Every other API path (and the codec) answers 403 to a family member, whatever it would do.
FAMILY_API = ("/api/v1/family/", "/api/v1/auth/session")
NEED_CREDENTIALS = ("Log in, or send Authorization: Bearer <token> "
                    "(a personal API token from POST /api/v1/auth/tokens).")


@dataclass
class Resolution:
    principal: Actor | None = None
    via: str | None = None  # "token" | "oidc" | "basic" | "session" | "trusted-header"
    error: str | None = None  # why the credentials sent were refused
    status: int = 401
    retry_after: int | None = None
    csrf_token: str | None = None
    session_kind: str | None = None


def actor_of(staff: StaffRow) -> Actor:
    return Actor(id=staff.id, roles=list(staff.roles), unit=staff.unit)


def family_actor(case_id: str, member_id: str) -> Actor:
    """A family member signed in to the portal (DESIGN §11): their case and member id, and no
    staff role; domain.access keeps them to their own case's family view."""
    return Actor(id=f"family:{member_id}", roles=[FAMILY_ROLE], case_id=case_id, member_id=member_id)


def _peer_trusted(host: str | None, settings: Settings) -> bool:
    if host is None:
        return False
    for entry in filter(None, (e.strip() for e in settings.trusted_proxies.split(","))):
        if host == entry:
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _basic(value: str) -> tuple[str, str] | None:
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def resolve(engine, settings: Settings, headers: dict[str, str], cookies: dict[str, str],
            peer: str | None, method: str, path: str) -> Resolution:
    """Blocking (database, argon2): run in a thread."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    with Session(engine) as session:
        if scheme == "bearer" and value:
            if value.startswith(TOKEN_PREFIX):
                staff = staff_for_token(session, value)
                if staff is None:
                    return Resolution(error="This API token is not valid (unknown, expired or revoked).")
                return Resolution(actor_of(staff), "token")
            if settings.auth == "oidc":
                return _oidc(session, settings, value)
            return Resolution(error="This API token is not valid (unknown, expired or revoked).")
        if scheme == "basic" and value:
            if not (method == "POST" and path == TOKENS_PATH) or settings.auth != "local":
                return Resolution(error="HTTP Basic is accepted only to create a personal API token "
                                        "(POST /api/v1/auth/tokens) in local mode.")
            pair = _basic(value)
            if pair is None:
                return Resolution(error="Malformed HTTP Basic credentials.")
            staff_id, password = pair
            wait = throttled(session, staff_id, peer or "-")
            if wait is not None:
                return Resolution(error="Too many failed sign-ins; wait and try again.", status=429,
                                  retry_after=wait.retry_after)
            staff = check_password(session, staff_id, password)
            if staff is None:
                record_failure(session, staff_id, peer or "-")
                return Resolution(error=WRONG_LOGIN)
            clear_failures(session, staff_id)
            return Resolution(actor_of(staff), "basic")
        if authorization:
            return Resolution(error="Unsupported Authorization scheme; use Bearer.")
        sid = cookies.get(COOKIE)
        if sid:
            row = live_session(session, sid, settings)
            if row is not None and row.kind == "staff":
                staff = session.get(StaffRow, row.principal_id)
                if staff is not None and staff.active:
                    return Resolution(actor_of(staff), "session", csrf_token=row.csrf_token,
                                      session_kind="staff")
            if row is not None and row.kind == "family" and row.case_id:
                return Resolution(family_actor(row.case_id, row.principal_id), "session",
                                  csrf_token=row.csrf_token, session_kind="family")
        header = headers.get(settings.trusted_header.lower())
        if header is not None:
            if settings.auth != "trusted-header":
                return Resolution(error=f"{settings.trusted_header} is not an identity on this server. "
                                  + NEED_CREDENTIALS)
            if not _peer_trusted(peer, settings):
                return Resolution(error=f"{settings.trusted_header} is accepted only from the "
                                        "authenticating proxy.")
            staff = session.get(StaffRow, header) if 0 < len(header) <= 64 else None
            if staff is None or not staff.active:
                return Resolution(error="The proxy named no active staff member.")
            return Resolution(actor_of(staff), "trusted-header")
    return Resolution()


def _oidc(session: Session, settings: Settings, token: str) -> Resolution:
    from api.oidc import OidcError, OidcUnavailable, get_verifier  # only in oidc mode

    try:
        staff_id = get_verifier(settings).verify_access_token(token)
    except OidcUnavailable:
        return Resolution(error="The municipality's login service cannot be reached; try again "
                                "shortly.", status=503)
    except OidcError:
        return Resolution(error="The access token is not valid for this service.")
    staff = session.get(StaffRow, staff_id) if 0 < len(staff_id) <= 64 else None
    if staff is None or not staff.active:
        return Resolution(error="The access token names no active staff member.")
    return Resolution(actor_of(staff), "oidc")


def _needs_credentials(path: str, method: str) -> bool:
    if path.startswith("/codec/"):
        return method != "OPTIONS"
    return path.startswith("/api/")


def _cookies(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in out:
            out[name] = value
    return out


async def _reply(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _reply_page(send: Send, status: int, detail: str) -> None:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{status}</title>'
            f'<link rel="stylesheet" href="/static/vendor/dkfds/css/dkfds.min.css"></head><body>'
            f'<main class="container page-container"><h1>Not sent</h1>'
            f'<div class="alert alert-error" role="alert"><div class="alert-body">'
            f'<p class="alert-text">{html.escape(detail)}</p></div></div>'
            f'<p><a href="/">OneFamily</a></p></main></body></html>').encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        settings: Settings = app.state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        peer = scope["client"][0] if scope.get("client") else None
        cookies = _cookies(headers.get("cookie", ""))
        sent_something = bool(headers.get("authorization") or cookies.get(COOKIE)
                              or settings.trusted_header.lower() in headers)
        if sent_something:
            res = await asyncio.to_thread(resolve, app.state.engine, settings, headers, cookies,
                                          peer, method, path)
        else:
            res = Resolution()
        state = scope.setdefault("state", {})
        state["principal"] = res.principal
        state["auth_via"] = res.via
        state["csrf_token"] = res.csrf_token
        state["auth_error"] = res.error
        # The audit writes a family member as `family:<member id>` (api/audit.py).
        state["principal_kind"] = res.session_kind or ("staff" if res.principal else None)
        if res.status == 429:
            await _reply(send, 429, res.error or "Too many attempts.",
                         {"Retry-After": str(res.retry_after or 60)})
            return
        if res.status == 503:
            await _reply(send, 503, res.error or "Try again shortly.", {"Retry-After": "5"})
            return
        if res.principal is None and _needs_credentials(path, method):
            await _reply(send, 401, res.error or NEED_CREDENTIALS, {"WWW-Authenticate": "Bearer"})
            return
        # 413 before anything parses the body.
        limit = settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"The request body is larger than {limit} bytes.")
            return
        if (res.session_kind == "family" and path.startswith(("/api/", "/codec/"))
                and not path.startswith(FAMILY_API)):
            await _reply(send, 403, FAMILY_USE_PORTAL)  # staff endpoints are never the family's
            return
        if nul_in_address(scope):  # PostgreSQL refuses NUL in text: a 422 here, never a 500 there
            await _reply(send, 422, "The address contains a NUL character (%00), which no id, name or "
                                    "search term can hold.")
            return
        body: bytes | None = None
        if method not in SAFE_METHODS:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await _reply(send, 413, f"The request body is larger than {limit} bytes.")
                    return
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            if nul_in_body(headers.get("content-type", ""), body):  # PostgreSQL refuses NUL in text
                await _reply(send, 422, "The request body contains a NUL character (\\u0000), which no "
                                        "field can hold.")
                return
            ambient = res.via == "session" and path not in CSRF_EXEMPT
            if ambient and not _csrf_ok(headers, body, res.csrf_token):
                detail = ("The security token (CSRF) of this form or request is missing or "
                          "stale; reload the page and try again.")
                if path.startswith(("/api/", "/codec/")):
                    await _reply(send, 403, detail)
                else:  # a page's form: a page that says so, not JSON
                    await _reply_page(send, 403, detail)
                return
        if body is None:
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# A JSON \u0000 escape: preceded by an even number of backslashes (none included).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def nul_in_address(scope: Scope) -> bool:
    query = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def nul_in_body(content_type: str, body: bytes) -> bool:
    """Does a JSON or form body carry a NUL character? (Multipart bodies carry files.)"""
    if content_type.startswith("multipart/"):
        return False
    if content_type.startswith("application/x-www-form-urlencoded"):
        return b"%00" in body or b"\x00" in body
    return b"\x00" in body or _JSON_NUL.search(body) is not None


# A plan editor sends a few hundred fields; the body's size limit bounds the rest.
MAX_FORM_FIELDS = 5000


def _csrf_ok(headers: dict[str, str], body: bytes, expected: str | None) -> bool:
    import hmac

    if not expected:
        return False
    sent = headers.get("x-csrf-token")
    if sent is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            sent = (parse_qs(body.decode(), max_num_fields=MAX_FORM_FIELDS).get("csrf_token") or [None])[0]
        except (UnicodeDecodeError, ValueError):
            sent = None
    if sent is None and headers.get("content-type", "").startswith("multipart/form-data"):
        marker = b'name="csrf_token"\r\n\r\n'
        at = body.find(marker)
        if at >= 0:
            sent = body[at + len(marker):].split(b"\r\n", 1)[0].decode(errors="replace")
    return sent is not None and hmac.compare_digest(sent, expected)


def log_mode(settings: Settings) -> None:
    if settings.auth == "trusted-header":
        log.warning("ONEFAMILY_AUTH=trusted-header: the header %s is the identity of requests from "
                    "%s; make sure only the authenticating proxy can reach this API",
                    settings.trusted_header, settings.trusted_proxies)


# ---------------------------------------------------------------- /api/v1/auth

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def principal(request: Request) -> Actor:
    actor = getattr(request.state, "principal", None)
    if actor is None:
        raise HTTPException(401, getattr(request.state, "auth_error", None) or NEED_CREDENTIALS)
    return actor


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("api token", min_length=1, max_length=100)
    expires_in_days: int = Field(DEFAULT_TOKEN_DAYS, ge=1, le=MAX_TOKEN_DAYS)


def _engine(request: Request):
    return request.app.state.engine


@router.post("/tokens", status_code=201)
def new_token(request: Request, actor: Actor = Depends(principal),
              body: Annotated[TokenIn | None, Body()] = None) -> dict:
    """A personal API token, shown once (HTTP Basic `staff_id:password`, or a session)."""
    body = body or TokenIn()
    with Session(_engine(request)) as session:
        row, token = create_token(session, actor.id, body.name, body.expires_in_days)
        return {"id": row.id, "token": token, "name": row.name, "expires_at": row.expires_at}


@router.get("/tokens")
def my_tokens(request: Request, actor: Actor = Depends(principal)) -> dict:
    with Session(_engine(request)) as session:
        rows = session.exec(select(TokenRow).where(TokenRow.staff_id == actor.id)
                            .order_by(TokenRow.created_at)).all()
        return {"items": [token_out(r) for r in rows], "total": len(rows)}


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, request: Request, actor: Actor = Depends(principal)) -> Response:
    with Session(_engine(request)) as session:
        row = session.get(TokenRow, token_id) if len(token_id) <= 64 else None
        if row is None or row.staff_id != actor.id:
            raise HTTPException(404, "You have no token with this id.")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            session.commit()
    return Response(status_code=204)


@router.get("/session")
def who_am_i(request: Request, actor: Actor = Depends(principal)) -> dict:
    """The caller, and the CSRF token a JavaScript client sends as X-CSRF-Token."""
    if FAMILY_ROLE in actor.roles:
        who = {"kind": "family", "id": actor.id, "case_id": actor.case_id, "member_id": actor.member_id}
    else:
        who = {"kind": "staff", "id": actor.id, "roles": actor.roles, "unit": actor.unit}
    return {"principal": who, "via": request.state.auth_via, "csrf_token": request.state.csrf_token}
