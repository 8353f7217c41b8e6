"""Request-scoped dependencies: settings, read model, Temporal client, the caller."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from models.case import Actor
from models.tables import StaffRow
from settings import Settings

# Dependencies are `async def` although they do no I/O: sync ones cost a thread-pool hop each.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


async def get_client(request: Request) -> Client:
    client = request.app.state.temporal
    if client is None:
        raise HTTPException(503, "The case engine (Temporal) is not reachable yet; try again shortly.")
    return client


async def get_session(request: Request) -> AsyncIterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


# The staff directory is read on every request and changes rarely: a short-lived cache.
STAFF_TTL = 10.0
_staff_cache: dict[str, tuple[float, Actor | None]] = {}


def forget_staff() -> None:
    _staff_cache.clear()


def lookup_staff(session: Session, staff_id: str) -> Actor | None:
    hit = _staff_cache.get(staff_id)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    row = session.get(StaffRow, staff_id)
    actor = Actor(id=row.id, roles=list(row.roles)) if row is not None and row.active else None
    _staff_cache[staff_id] = (now + STAFF_TTL, actor)
    return actor


@dataclass
class Caller:
    """The X-User header, resolved only when the endpoint asks: the contract checks the body
    (422) before the caller (401), and FastAPI would run a raising dependency first."""

    user_id: str | None
    session: Session

    def require(self) -> Actor:
        if not self.user_id:
            raise HTTPException(401, "Say who you are: send the header X-User with your staff id.")
        actor = lookup_staff(self.session, self.user_id)
        if actor is None:
            raise HTTPException(401, f"Unknown user '{self.user_id}': not in the staff directory.")
        return actor


async def get_caller(
    x_user: str | None = Header(None), session: Session = Depends(get_session)
) -> Caller:
    return Caller(user_id=x_user, session=session)
