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
