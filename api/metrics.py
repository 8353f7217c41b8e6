"""Prometheus metrics at `/metrics` (DESIGN §5, issue 5).

Gauges are read from the read model when scraped (a handful of indexed GROUP BY queries),
so every API process answers the same figures:
- onefamily_open_cases{stage}
- onefamily_overdue_deadlines{kind}            open deadlines past due, per deadline kind
- onefamily_stuck_cases{reason}                cases per stuck reason (business + technical)
- onefamily_notifications{channel,status}      the notification outbox, when it exists
- onefamily_committee_queue                    committee items waiting for a decision
- onefamily_start_backlog                      cases created whose workflow has not run yet
- onefamily_workflows_not_started              ... of them, created longer ago than
                                               ONEFAMILY_NOT_STARTED_SECONDS (60)
  (both from Temporal visibility, api/backlog.py; absent when visibility does not answer)
The command latency histogram `onefamily_command_seconds{command,outcome}` is observed in
this process by `CommandLatencyMiddleware` (POST/PUT/DELETE under /api/v1/cases and
/api/v1/committee), or by calling `observe_command()` directly.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, inspect, select, true
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api import backlog, dashboard, watch
from models.case import Stage
from models.tables import CaseRow, CommitteeItemRow
from models.tables_reporting import CaseWatchRow

router = APIRouter(include_in_schema=False)

COMMAND_SECONDS = Histogram(
    "onefamily_command_seconds",
    "Latency of case commands through the API (HTTP in to answer out), seconds.",
    ["command", "outcome"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
    registry=None,  # registered per scrape below, not in the global default registry
)

COMMAND_PREFIXES = ("/api/v1/cases", "/api/v1/committee")
COMMAND_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def observe_command(command: str, seconds: float, status: int) -> None:
    """Record one command's latency. `command` is a route template or a command name."""
    outcome = "ok" if status < 400 else ("refused" if status < 500 else "error")
    COMMAND_SECONDS.labels(command=command, outcome=outcome).observe(seconds)


class CommandLatencyMiddleware:
    """Pure ASGI middleware: times every command request. Add with
    `app.add_middleware(CommandLatencyMiddleware)`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] != "http" or scope.get("method") not in COMMAND_METHODS
                or not scope.get("path", "").startswith(COMMAND_PREFIXES)):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or _generic(scope.get("path", ""))
            observe_command(f"{scope.get('method')} {name}", time.perf_counter() - started, status["code"])


def _generic(path: str) -> str:
    """/api/v1/cases/<uuid>/plan -> /api/v1/cases/{id}/plan (bounded label values)."""
    parts = path.split("/")
    return "/".join("{id}" if len(p) >= 16 and "-" in p else p for p in parts)


def _has_table(engine: Engine, name: str) -> bool:
    try:
        return inspect(engine).has_table(name)
    except Exception:  # noqa: BLE001
        return False


class ReadModelCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        cases = CaseRow.__table__
        w = CaseWatchRow.__table__
        items = CommitteeItemRow.__table__
        with Session(self.engine) as session:
            stages = dict(session.execute(
                select(cases.c.stage, func.count()).where(cases.c.stage != Stage.closed.value)
                .group_by(cases.c.stage)).all())
            overdue = session.execute(
                select(w.c.kind, func.count()).where(w.c.fired == true(), w.c.kind.like("overdue:%"))
                .group_by(w.c.kind)).all()
            stuck = dashboard.stuck_counts(session)
            queue = session.execute(
                select(func.count()).select_from(items).where(items.c.status == "waiting")).scalar_one()
            notifications = []
            if _has_table(self.engine, "notifications"):
                from models.tables_outbox import NotificationRow

                n = NotificationRow.__table__
                notifications = session.execute(
                    select(n.c.channel, n.c.status, func.count()).group_by(n.c.channel, n.c.status)).all()

        g = GaugeMetricFamily("onefamily_open_cases", "Open cases by stage.", labels=["stage"])
        for stage in Stage:
            if stage is not Stage.closed:
                g.add_metric([stage.value], stages.get(stage.value, 0))
        yield g
        g = GaugeMetricFamily("onefamily_overdue_deadlines", "Open deadlines past due, by kind.",
                              labels=["kind"])
        for kind, n in overdue:
            g.add_metric([kind.removeprefix("overdue:")], n)
        yield g
        g = GaugeMetricFamily("onefamily_stuck_cases", "Cases stuck, per reason (a case once per reason).",
                              labels=["reason"])
        for kind, n in stuck.items():
            g.add_metric([kind], n)
        yield g
        g = GaugeMetricFamily("onefamily_notifications", "Notifications in the outbox by channel and status.",
                              labels=["channel", "status"])
        for channel, status, n in notifications:
            g.add_metric([channel, status], n)
        yield g
        yield GaugeMetricFamily("onefamily_committee_queue", "Committee items waiting for a decision.",
                                value=queue)


class BacklogCollector:
    def __init__(self, figures: backlog.Backlog | None) -> None:
        self.figures = figures

    def collect(self):
        if self.figures is None or not self.figures.known:
            return
        yield GaugeMetricFamily("onefamily_start_backlog",
                                "Cases created whose workflow no case worker has run yet.",
                                value=self.figures.waiting)
        yield GaugeMetricFamily("onefamily_workflows_not_started",
                                "Cases whose workflow has not run a minute (ONEFAMILY_NOT_STARTED"
                                "_SECONDS) after creation.", value=self.figures.over_limit_age)


def render_metrics(engine: Engine, figures: backlog.Backlog | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReadModelCollector(engine))
    registry.register(BacklogCollector(figures))
    registry.register(COMMAND_SECONDS)
    return generate_latest(registry)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    engine = request.app.state.engine
    await asyncio.to_thread(watch.catch_up, engine)
    client = getattr(request.app.state, "temporal", None)
    figures = None
    if client is not None:
        after = timedelta(seconds=request.app.state.settings.not_started_seconds)
        figures = await backlog.start_backlog(client, after)
    body = await asyncio.to_thread(render_metrics, engine, figures)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
