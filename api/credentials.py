"""Proof of identity for staff (DESIGN §9): passwords (argon2id), personal API tokens,
set-password links, login throttling, the bootstrap admin password. Secrets are stored only
as hashes; no message here ever tells whether an account exists."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models.tables import StaffRow
from models.tables_auth import (
    CredentialRow,
    LoginFailureRow,
    PasswordLinkRow,
    SessionRow,
    TokenRow,
)

log = logging.getLogger("onefamily.auth")

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
TOKEN_PREFIX = "of_"
DEFAULT_TOKEN_DAYS = 30
MAX_TOKEN_DAYS = 365
LINK_HOURS = 72
ADMIN_PASSWORD_FILE = "admin-password"
# Throttling (DESIGN §9): per account and per address within the window.
WINDOW = timedelta(minutes=15)
ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 20
MAX_DELAY = timedelta(minutes=15)

WRONG_LOGIN = "Wrong staff id or password."

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the account does not exist, so both answers take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def utcnow() -> datetime:
    return datetime.now(UTC)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"A password needs at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"A password has at most {MAX_PASSWORD} characters."
    return None


def set_password(session: Session, staff_id: str, password: str) -> None:
    row = session.get(CredentialRow, staff_id)
    hashed = _hasher.hash(password)
    if row is None:
        session.add(CredentialRow(staff_id=staff_id, password_hash=hashed, updated_at=utcnow()))
    else:
        row.password_hash, row.updated_at = hashed, utcnow()
        session.add(row)


def check_password(session: Session, staff_id: str, password: str) -> StaffRow | None:
    """The active staff member whose password this is, else None (same time either way)."""
    staff = session.get(StaffRow, staff_id) if 0 < len(staff_id) <= 64 else None
    cred = session.get(CredentialRow, staff_id) if staff is not None else None
    try:
        _hasher.verify(cred.password_hash if cred else _DUMMY_HASH, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if cred is None or staff is None or not staff.active:
        return None
    if _hasher.check_needs_rehash(cred.password_hash):
        set_password(session, staff_id, password)
        session.commit()
    return staff


# ---------------------------------------------------------------- throttling


@dataclass
class Throttle:
    retry_after: int  # seconds


def _account_hash(staff_id: str) -> str:
    return sha256("login\0" + staff_id.strip().casefold()[:200])


def throttled(session: Session, staff_id: str, address: str) -> Throttle | None:
    """After 5 failures in 15 minutes for one account (or 20 from one address), wait a
    growing delay from the last failure: 30 s, 60 s, 2 min, ... up to 15 minutes."""
    since = utcnow() - WINDOW
    for column, value, limit in ((LoginFailureRow.account_hash, _account_hash(staff_id), ACCOUNT_LIMIT),
                                 (LoginFailureRow.address, address, ADDRESS_LIMIT)):
        count, last = session.exec(
            select(func.count(), func.max(LoginFailureRow.at)).where(column == value,
                                                                     LoginFailureRow.at >= since)
        ).one()
        if count >= limit and last is not None:
            if last.tzinfo is None:
                last = last.replace(tzinfo=UTC)
            delay = min(timedelta(seconds=30 * 2 ** (count - limit)), MAX_DELAY)
            wait = (last + delay - utcnow()).total_seconds()
            if wait > 0:
                return Throttle(retry_after=int(wait) + 1)
    return None


def record_failure(session: Session, staff_id: str, address: str) -> None:
    session.add(LoginFailureRow(at=utcnow(), account_hash=_account_hash(staff_id), address=address))
    session.commit()


def clear_failures(session: Session, staff_id: str) -> None:
    for row in session.exec(select(LoginFailureRow).where(
            LoginFailureRow.account_hash == _account_hash(staff_id))).all():
        session.delete(row)
    session.commit()


# ---------------------------------------------------------------- personal API tokens


def create_token(session: Session, staff_id: str, name: str, days: int) -> tuple[TokenRow, str]:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    row = TokenRow(id=token_id, staff_id=staff_id, name=name, secret_hash=sha256(secret),
                   created_at=now, expires_at=now + timedelta(days=days))
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


def staff_for_token(session: Session, token: str) -> StaffRow | None:
    """The active staff member of a valid, unrevoked, unexpired personal token."""
    token_id, sep, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    if not sep or len(token_id) != 16 or not secret or len(secret) > 100:
        return None
    found = session.exec(
        select(TokenRow, StaffRow).join(StaffRow, StaffRow.id == TokenRow.staff_id)
        .where(TokenRow.id == token_id)
    ).first()
    if found is None:
        return None
    row, staff = found
    if not hmac.compare_digest(row.secret_hash, sha256(secret)):
        return None
    now = utcnow()
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if row.revoked_at is not None or expires <= now or not staff.active:
        return None
    last = row.last_used_at
    if last is None or (last if last.tzinfo else last.replace(tzinfo=UTC)) < now - timedelta(minutes=5):
        row.last_used_at = now  # at most one write per token per five minutes
        session.add(row)
        session.commit()
    return staff


def token_out(row: TokenRow) -> dict:
    return {"id": row.id, "name": row.name, "created_at": row.created_at,
            "expires_at": row.expires_at, "revoked_at": row.revoked_at,
            "last_used_at": row.last_used_at}


def revoke_everything(session: Session, staff_id: str) -> None:
    """Deactivation: every session and token of the staff member ends now."""
    now = utcnow()
    for token in session.exec(select(TokenRow).where(TokenRow.staff_id == staff_id,
                                                     TokenRow.revoked_at.is_(None))).all():
        token.revoked_at = now
        session.add(token)
    for row in session.exec(select(SessionRow).where(SessionRow.kind == "staff",
                                                     SessionRow.principal_id == staff_id,
                                                     SessionRow.ended_at.is_(None))).all():
        row.ended_at = now
        session.add(row)


# ---------------------------------------------------------------- set-password links


def create_password_link(session: Session, staff_id: str) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(PasswordLinkRow(token_hash=sha256(token), staff_id=staff_id, created_at=now,
                                expires_at=now + timedelta(hours=LINK_HOURS)))
    return token


def use_password_link(session: Session, token: str, password: str) -> str | None:
    """Set the password of a valid unused link; returns the staff id, or None."""
    row = session.get(PasswordLinkRow, sha256(token)) if token else None
    if row is None or row.used_at is not None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if expires <= utcnow():
        return None
    row.used_at = utcnow()
    session.add(row)
    set_password(session, row.staff_id, password)
    session.commit()
    return row.staff_id


# ---------------------------------------------------------------- bootstrap


def bootstrap_admin_password(session: Session, data_dir: Path, from_env: str | None) -> None:
    """admin's first password: ONEFAMILY_ADMIN_PASSWORD, or generated and written once to
    <data dir>/admin-password (0600) for `make run` to print."""
    if session.get(CredentialRow, "admin") is not None:
        return
    generated = from_env is None
    password = from_env if from_env is not None else secrets.token_urlsafe(18)
    problem = password_problem(password)
    if problem:
        raise SystemExit(f"ONEFAMILY_ADMIN_PASSWORD: {problem}")
    set_password(session, "admin", password)
    try:
        session.commit()
    except IntegrityError:  # another API process set it first
        session.rollback()
        return
    if generated:
        path = data_dir / ADMIN_PASSWORD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        log.warning("generated the password of 'admin'; it is in %s (mode 0600)", path)
