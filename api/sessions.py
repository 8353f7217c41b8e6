"""Browser sessions (DESIGN §9): a random id in an HttpOnly cookie, only its SHA-256 stored;
idle and absolute timeouts; logout ends the session server-side; a CSRF token per session.

Two kinds share the table and the rules: "staff" (principal_id = the staff id) and "family"
(principal_id = the member id, `case_id` = the family's case; DESIGN §11, api/family_auth.py)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response
from sqlmodel import Session, select

from api.credentials import sha256, utcnow
from models.tables_auth import SessionRow
from settings import Settings

COOKIE = "onefamily_session"
TOUCH_EVERY = timedelta(seconds=60)  # last_seen is written at most this often


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def start_session(request: Request, response: Response, kind: str, principal_id: str,
                  case_id: str | None = None) -> str:
    """A new session for `principal_id`; sets the cookie on `response`, returns the CSRF token."""
    settings: Settings = request.app.state.settings
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    with Session(request.app.state.engine) as session:
        session.add(SessionRow(id_hash=sha256(sid), kind=kind, principal_id=principal_id,
                               case_id=case_id, csrf_token=csrf, created_at=now, last_seen_at=now))
        session.commit()
    response.set_cookie(COOKIE, sid, httponly=True, samesite="lax", secure=settings.secure_cookies,
                        max_age=settings.session_absolute_hours * 3600, path="/")
    return csrf


def live_session(session: Session, sid: str, settings: Settings) -> SessionRow | None:
    """The session of this cookie value if it has not ended, idled out or grown too old."""
    if not sid or len(sid) > 200:
        return None
    row = session.get(SessionRow, sha256(sid))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    idle = timedelta(minutes=settings.session_idle_minutes)
    if (_aware(row.created_at) + timedelta(hours=settings.session_absolute_hours) <= now
            or _aware(row.last_seen_at) + idle <= now):
        row.ended_at = now
        session.add(row)
        session.commit()
        return None
    if _aware(row.last_seen_at) + TOUCH_EVERY <= now:
        row.last_seen_at = now
        session.add(row)
        session.commit()
    return row


def end_session(request: Request, response: Response) -> None:
    sid = request.cookies.get(COOKIE)
    if sid:
        with Session(request.app.state.engine) as session:
            row = session.get(SessionRow, sha256(sid[:200]))
            if row is not None and row.ended_at is None:
                row.ended_at = utcnow()
                session.add(row)
                session.commit()
    response.delete_cookie(COOKIE, path="/")


def end_family_sessions(session: Session, case_id: str, member_id: str | None = None) -> int:
    """End every live family session of a case (or of one member of it) now; the caller
    commits. Returns how many ended."""
    query = select(SessionRow).where(SessionRow.kind == "family", SessionRow.case_id == case_id,
                                     SessionRow.ended_at.is_(None))
    if member_id is not None:
        query = query.where(SessionRow.principal_id == member_id)
    now = utcnow()
    rows = session.exec(query).all()
    for row in rows:
        row.ended_at = now
        session.add(row)
    return len(rows)
