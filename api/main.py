"""The FastAPI application: one Temporal client in the lifespan, routers per resource."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

import logjson
from api import (
    audit,
    auth,
    cases,
    codec,
    committee,
    consents,
    dashboard,
    documents,
    family,
    family_auth,
    login,
    metrics,
    notifications,
    oidc,
    pages,
    policy,
    reports,
    staff,
)
from api.audit import AuditMiddleware
from api.auth import AuthMiddleware, log_mode
from api.credentials import bootstrap_admin_password
from api.errors import http_error_handler, validation_handler
from api.hardening import HardeningMiddleware
from api.openapi import install as install_openapi
from api.unavailable import DatabaseUnavailableMiddleware
from models.db import get_engine, init_read_model, migrate, private_data_dir
from settings import Settings, get_settings
from workflows.client import connect

log = logging.getLogger("onefamily.api")
STATIC = Path(__file__).resolve().parent.parent / "static"


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
        private_data_dir(settings.data_dir)  # umask 077; the data dir 0700, its files 0600
        app.state.settings = settings
        app.state.engine = get_engine(settings.db_url)
        init_read_model(settings)  # sealed read-model columns use this data dir's keys
        await asyncio.to_thread(migrate, settings.db_url)
        with Session(app.state.engine) as session:
            staff.bootstrap_admin(session)
            if settings.auth == "local":
                bootstrap_admin_password(session, settings.data_dir, settings.admin_password)
            policy.load_policy_file(session, settings)
        log_mode(settings)
        if settings.auth == "oidc":
            oidc.get_verifier(settings)  # a missing issuer or client id stops the start here
        app.state.temporal = None
        connecting = asyncio.create_task(_connect_forever(app, settings))
        try:
            await asyncio.wait_for(asyncio.shield(connecting), timeout=settings.temporal_connect_wait)
        except TimeoutError:
            log.warning("Temporal at %s not reachable yet; still trying", settings.temporal_target)
        yield
        connecting.cancel()

    app = FastAPI(
        title="OneFamily",
        version="0.1.0",
        description="One family, one entry point: durable case processes for municipal social "
        "services. Prove who you are with `Authorization: Bearer <token>`: a personal API token "
        "(`POST /api/v1/auth/tokens` with HTTP Basic `staff_id:password`) or, in oidc mode, an "
        "access token of the municipality's OpenID provider. Browsers sign in at `/login`.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # Swagger UI loads from a CDN: not under our CSP
    )
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # unreadable body: 422
    # Starlette runs the middleware added last first: hardening -> database down (503) -> auth ->
    # metrics -> audit -> the app.
    app.add_middleware(AuditMiddleware)
    app.add_middleware(metrics.CommandLatencyMiddleware)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(DatabaseUnavailableMiddleware)  # the read model down: 503, not 500
    app.add_middleware(HardeningMiddleware, settings=settings)  # Host, headers, access log
    for router in (audit.router, auth.router, login.router, oidc.router, staff.router,
                   cases.router, committee.router, dashboard.router, policy.router,
                   codec.router, pages.router, metrics.router, documents.router,
                   notifications.router, consents.router):
        app.include_router(router)
    app.include_router(reports.router)  # GET /api/v1/reports/{yyyy-mm}
    app.include_router(family_auth.api_router)  # invitations (staff)
    app.include_router(family_auth.router)  # the family's sign-in: /family/welcome, /login, /oidc
    app.include_router(family.router)  # /api/v1/family/*

    # Det Fælles Designsystem (vendored, scripts/vendor-dkfds.sh) and our own few assets.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

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
        # A case worker must poll the case task queue (DescribeTaskQueue, cached a few
        # seconds): without one every command would wait for its deadline (docs/operations.md).
        from api.gateway import worker_readiness

        workers: dict = {"workers": False, "why": "the case engine is not reachable"}
        if checks["temporal"]:
            settings_ = request.app.state.settings
            workers = await worker_readiness(client, settings_.task_queue,
                                             settings_.document_task_queue)
        ok = all(checks.values()) and workers["workers"]
        detail: dict = {}
        if checks["temporal"]:
            # Detail, not a verdict: cases waiting for their first run (api/backlog.py). A busy
            # engine still answers commands; POST /cases refuses past the limit itself.
            from datetime import timedelta

            from api.backlog import start_backlog

            settings_ = request.app.state.settings
            after = timedelta(seconds=settings_.not_started_seconds)
            figures = await start_backlog(client, after)
            detail["start_backlog"] = figures.as_dict(settings_.start_backlog_limit, after)
        return JSONResponse({"status": "ready" if ok else "not ready", **checks, **workers,
                             **detail}, status_code=200 if ok else 503)

    install_openapi(app, settings)  # every error status, the real error schema (api/openapi.py)
    return app


logjson.configure("api")  # uvicorn's workers: JSON log lines without personal data (logjson.py)
app = create_app()
