"""Outbox and document store (SQLModel tables). Imported by activities and the API only.

`notifications` is the in-app outbox and the delivery log: one row per idempotency key,
written BEFORE anything is sent. `subject`/`body`/`ics` hold the rendered message (personal
data), stored sealed (models/sealed.py, DESIGN §9 "Files at rest"); `last_error` holds
technical text only (an SMTP code, an HTTP status, an exception class), never an address or a
name.

`documents` holds every rendered document version; (case_id, kind, version, language) is
immutable once stored; `html` and `pdf` (names, diagnoses, plans) are stored sealed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.sealed import SealedBytes, SealedText


class NotificationRow(SQLModel, table=True):
    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("key", name="uq_notifications_key"),)

    id: str = Field(primary_key=True)
    key: str = Field(max_length=400)
    case_id: str = Field(index=True)
    channel: str  # email / sms / in_app
    recipient_id: str
    recipient_role: str
    purpose: str = Field(index=True)
    template: str
    language: str
    status: str = Field(index=True)  # queued / sent / failed / deferred
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(index=True)
    updated_at: datetime
    sent_at: datetime | None = None
    not_before: datetime | None = None
    # An attempt holds the row while it sends; a second attempt never sends concurrently.
    lease_until: datetime | None = None
    provider_ref: str | None = None  # Message-ID or the gateway's message id
    subject: str = Field(default="", sa_column=Column(SealedText("notifications.subject"), nullable=False))
    body: str = Field(default="", sa_column=Column(SealedText("notifications.body"), nullable=False))
    ics: str | None = Field(default=None, sa_column=Column(SealedText("notifications.ics"), nullable=True))


class DocumentRow(SQLModel, table=True):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("case_id", "kind", "version", "language", name="uq_documents_version"),
    )

    id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    kind: str
    version: int
    language: str
    content_hash: str
    html: str = Field(sa_column=Column(SealedText("documents.html"), nullable=False))
    pdf: bytes = Field(sa_column=Column(SealedBytes("documents.pdf"), nullable=False))
    created_at: datetime
    created_by: str
