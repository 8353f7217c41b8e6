"""In-process apps for tests of one router: the real auth middleware in trusted-header mode,
chosen on purpose (these tests are about documents, messages, ..., not about identity:
tests/test_identity.py covers that). The TestClient's peer is loopback, a trusted proxy."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.auth import AuthMiddleware
from settings import Settings


def router_client(engine: Engine, settings: Settings, *routers: APIRouter) -> TestClient:
    app = FastAPI()
    app.state.engine = engine
    app.state.temporal = None
    app.state.settings = settings.model_copy(update={"auth": "trusted-header"})
    app.add_middleware(AuthMiddleware)
    for router in routers:
        app.include_router(router)
    return TestClient(app, client=("127.0.0.1", 50000))


def engine_client(settings: Settings, temporal, staff: list[tuple[str, list[str], str]],
                  *routers: APIRouter, base_url: str = "http://onefamily.test/api/v1",
                  headers: dict[str, str] | None = None):
    """An async client of an app over the real Temporal client (`temporal`), with `staff`
    (id, roles, department) in the directory: the workflow-and-API tests' app."""
    from datetime import UTC, datetime

    import httpx
    from sqlmodel import Session

    from api.deps import forget_staff
    from models.db import get_engine
    from models.tables import StaffRow

    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for sid, roles, dept in staff:
            session.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                                 department=dept, roles=roles,
                                 created_at=datetime(2026, 1, 1, tzinfo=UTC)))
        session.commit()
    forget_staff()
    app = FastAPI()
    app.state.engine, app.state.temporal = engine, temporal
    app.state.settings = settings.model_copy(update={"auth": "trusted-header"})
    app.add_middleware(AuthMiddleware)
    for router in routers:
        app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
                             base_url=base_url, timeout=60, headers=headers)
