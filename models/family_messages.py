"""What the API hands the family sign-in message workflow (workflows/family_messages.py):
one invitation link or one sign-in code to one family member. Plain pydantic; the workflow
imports it through pass-through (no sqlmodel, no clock, no randomness here)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from models.messaging import NotificationRequest


class FamilyMessageInput(BaseModel):
    request: NotificationRequest
    # How long the message is worth sending: the link's or the code's lifetime. A delivery
    # that cannot happen within it is given up (the outbox row says why).
    valid_seconds: int = Field(ge=1)
    # The API's seal over this start (domain.command_seal): the worker sends nothing else.
    seal: str | None = None
