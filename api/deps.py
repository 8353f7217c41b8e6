"""Request-scoped dependencies: settings, read model, Temporal client, the caller."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
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


# The staff directory is read for every named staff id (team, assignment): a short-lived,
# bounded cache. Only ids that can exist are looked up at all.
STAFF_TTL = 10.0
STAFF_CACHE_MAX = 2048
_staff_cache: OrderedDict[str, tuple[float, Actor | None]] = OrderedDict()


def forget_staff() -> None:
    _staff_cache.clear()


def lookup_staff(session: Session, staff_id: str) -> Actor | None:
    if not 0 < len(staff_id) <= 64:
        return None
    hit = _staff_cache.get(staff_id)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        _staff_cache.move_to_end(staff_id)
        return hit[1]
    row = session.get(StaffRow, staff_id)
    actor = Actor(id=row.id, roles=list(row.roles), unit=row.unit) if row is not None and row.active else None
    _staff_cache[staff_id] = (now + STAFF_TTL, actor)
    _staff_cache.move_to_end(staff_id)
    while len(_staff_cache) > STAFF_CACHE_MAX:
        _staff_cache.popitem(last=False)
    return actor


@dataclass
class Caller:
    """The authenticated caller (api/auth.py put it on the request), resolved only when the
    endpoint asks: the contract checks the body (422) before the caller's rights (403)."""

    request: Request
    session: Session

    @property
    def user_id(self) -> str | None:
        actor = getattr(self.request.state, "principal", None)
        return actor.id if actor is not None else None

    def require(self) -> Actor:
        actor = getattr(self.request.state, "principal", None)
        if actor is None:
            raise HTTPException(401, getattr(self.request.state, "auth_error", None)
                                or "Log in, or send Authorization: Bearer <token>.")
        return actor


async def get_caller(request: Request, session: Session = Depends(get_session)) -> Caller:
    return Caller(request=request, session=session)
