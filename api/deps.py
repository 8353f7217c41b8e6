"""Request-scoped dependencies: settings, read model, Temporal client, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from models.case import Actor
from models.tables import StaffRow
from settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


def get_client(request: Request) -> Client:
    client = request.app.state.temporal
    if client is None:
        raise HTTPException(503, "The case engine (Temporal) is not reachable yet; try again shortly.")
    return client


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


@dataclass
class Caller:
    """The X-User header, resolved only when the endpoint asks: the contract checks the body
    (422) before the caller (401), and FastAPI would run a raising dependency first."""

    user_id: str | None
    session: Session

    def require(self) -> Actor:
        if not self.user_id:
            raise HTTPException(401, "Say who you are: send the header X-User with your staff id.")
        row = self.session.get(StaffRow, self.user_id)
        if row is None or not row.active:
            raise HTTPException(401, f"Unknown user '{self.user_id}': not in the staff directory.")
        return Actor(id=row.id, roles=list(row.roles))


def get_caller(
    x_user: str | None = Header(None), session: Session = Depends(get_session)
) -> Caller:
    return Caller(user_id=x_user, session=session)
