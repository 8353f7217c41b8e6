"""The FastAPI application: one Temporal client in the lifespan, routers per resource."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlmodel import Session

from api import (
    cases,
    codec,
    committee,
    dashboard,
    documents,
    metrics,
    notifications,
    pages,
    policy,
    staff,
)
from api.audit import AuditMiddleware
from api.errors import validation_handler
from models.db import get_engine, migrate
from settings import Settings, get_settings
from workflows.client import connect

log = logging.getLogger("onefamily.api")


async def _connect_forever(app: FastAPI, settings: Settings) -> None:
    """Connect in the background so /healthz answers while Temporal is still starting."""
    delay = 0.2
    while app.state.temporal is None:
        try:
            app.state.temporal = await connect(settings)
        except Exception:  # noqa: BLE001 - any connection failure: retry
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.engine = get_engine(settings.db_url)
        await asyncio.to_thread(migrate, settings.db_url)
        with Session(app.state.engine) as session:
            staff.bootstrap_admin(session)
            policy.load_policy_file(session, settings)
        app.state.temporal = None
        connecting = asyncio.create_task(_connect_forever(app, settings))
        try:
            await asyncio.wait_for(asyncio.shield(connecting), timeout=10)
        except TimeoutError:
            log.warning("Temporal at %s not reachable yet; still trying", settings.temporal_target)
        yield
        connecting.cancel()

    app = FastAPI(
        title="OneFamily",
        version="0.1.0",
        description="One family, one entry point: durable case processes for municipal social "
        "services. Identify yourself with the header `X-User: <staff id>` (bootstrap user: "
        "`admin`).",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(metrics.CommandLatencyMiddleware)
    for router in (staff.router, cases.router, committee.router, dashboard.router, policy.router,
                   codec.router, pages.router, metrics.router, documents.router, notifications.router):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        checks = {"database": False, "temporal": False}
        try:
            with Session(request.app.state.engine) as session:
                session.exec(text("SELECT 1"))
            checks["database"] = True
        except Exception:  # noqa: BLE001
            pass
        client = request.app.state.temporal
        if client is not None:
            try:
                await asyncio.wait_for(client.service_client.check_health(), timeout=3)
                checks["temporal"] = True
            except Exception:  # noqa: BLE001
                pass
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", **checks},
                            status_code=200 if ok else 503)

    return app


app = create_app()
