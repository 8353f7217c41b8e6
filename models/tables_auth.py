"""Identity tables (DESIGN §9): passwords, browser sessions, personal API tokens, login
throttling, set-password links. Secrets are stored only as hashes."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class CredentialRow(SQLModel, table=True):
    __tablename__ = "staff_credentials"

    staff_id: str = Field(primary_key=True)
    password_hash: str  # argon2id
    updated_at: datetime


class SessionRow(SQLModel, table=True):
    """A browser session; the cookie holds the random id, the table its SHA-256."""

    __tablename__ = "auth_sessions"

    id_hash: str = Field(primary_key=True)
    kind: str  # "staff" | "family"
    principal_id: str = Field(index=True)
    case_id: str | None = None  # family sessions: the family's case
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None = None


class TokenRow(SQLModel, table=True):
    """A personal API token `of_<id>_<secret>`: looked up by id, the secret compared by hash."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True)
    staff_id: str = Field(index=True)
    name: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class LoginFailureRow(SQLModel, table=True):
    __tablename__ = "login_failures"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    account_hash: str = Field(index=True)  # keyed hash of the id typed, known or not
    address: str = Field(index=True)


class PasswordLinkRow(SQLModel, table=True):
    __tablename__ = "password_links"

    token_hash: str = Field(primary_key=True)
    staff_id: str = Field(index=True)
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
