"""A visible, bounded start backlog (issue 13 point 4, api/backlog.py): cases created whose
workflow no case worker has run show in /metrics, /readyz and the stuck list
(`workflow_not_started`), and past ONEFAMILY_START_BACKLOG_LIMIT `POST /cases` answers 503 with
Retry-After and creates nothing. The stack runs with no case worker, so cases stay unstarted,
then a worker starts and the backlog drains."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api import backlog, watch
from domain import stuck
from models import sealed
from models.db import get_engine
from settings import get_settings
from tests.e2e_stack import Stack, api_without_worker
from tests.factories import case_create_body

LIMIT = 3
NOT_STARTED_SECONDS = 2


def test_not_started_is_a_technical_reason_after_the_threshold() -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    facts = stuck.WorkflowFacts(status="running", first_task_done=False, started_at=start)
    assert stuck.technical_reasons(facts, start + timedelta(seconds=59)) == []
    [reason] = stuck.technical_reasons(facts, start + timedelta(seconds=61))
    assert reason.kind == stuck.WORKFLOW_NOT_STARTED and reason.since == start
    assert reason.owner == stuck.TECHNICAL_OWNER and reason.technical
    started = stuck.WorkflowFacts(status="running", first_task_done=True, started_at=start)
    assert stuck.technical_reasons(started, start + timedelta(hours=1)) == []


@pytest.fixture(scope="module")
async def no_worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data = Path(tmp_path_factory.mktemp("backlog")) / "data"
    async with api_without_worker(data, {"ONEFAMILY_START_BACKLOG_LIMIT": str(LIMIT),
                                         "ONEFAMILY_NOT_STARTED_SECONDS": str(NOT_STARTED_SECONDS)}) as stack:
        yield stack


def http(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers={"X-User": user}, timeout=30)


async def _metric(c: httpx.AsyncClient, name: str) -> float | None:
    for line in (await c.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_the_backlog_shows_and_bounds_creation(no_worker: Stack, monkeypatch) -> None:
    stack = no_worker
    async with http(stack, "mia") as mia:
        ids = []
        for _ in range(LIMIT):
            r = await mia.post("/api/v1/cases", json=case_create_body())
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        # This API process counts what it created at once; the others come with visibility.
        r = await mia.post("/api/v1/cases", json=case_create_body())
        assert r.status_code == 503, r.text
        created = len(ids)
        assert r.headers["retry-after"] == "30"
        detail = r.json()["detail"]
        assert "has not been registered" in detail and "nothing was created" in detail
        listed = (await mia.get("/api/v1/cases", params={"limit": 100})).json()
        assert listed["total"] == created, "the refused registration created a case"

        deadline = time.monotonic() + NOT_STARTED_SECONDS + 15
        while True:  # every case older than the threshold counts as not started (a poll, not a sleep)
            ready = (await mia.get("/readyz")).json()
            figures = ready["start_backlog"]
            if figures["not_started"] == created:
                break
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.2)
        assert figures["waiting"] == created and figures["limit"] == LIMIT
        assert await _metric(mia, "onefamily_start_backlog") == created
        assert await _metric(mia, "onefamily_workflows_not_started") == created

        # The stuck sweep (it runs in a case worker; none runs here) finds them through
        # visibility at once, and the stuck list shows the reason.
        monkeypatch.setenv("ONEFAMILY_NOT_STARTED_SECONDS", str(NOT_STARTED_SECONDS))
        # ... sealing what it stores with the stack's keys, as the worker would.
        monkeypatch.setattr(sealed, "_source", stack.settings)
        monkeypatch.setattr(sealed, "_keys", None)
        get_settings.cache_clear()
        client = await Client.connect(stack.temporal.target, namespace=stack.temporal.namespace)
        try:
            results = await watch.technical_sweep(client, get_engine(stack.settings.db_url), batch=1)
        finally:
            get_settings.cache_clear()
        assert {cid for cid, reasons in results.items()
                if any(r.kind == stuck.WORKFLOW_NOT_STARTED for r in reasons)} == set(ids)
        answer = await mia.get("/api/v1/dashboard/stuck")
        assert answer.status_code == 200, answer.text
        listing = answer.json()["items"]
        flagged = {i["case_id"] for i in listing
                   if any(r["kind"] == stuck.WORKFLOW_NOT_STARTED for r in i["reasons"])}
        assert flagged == set(ids), listing

        # A worker comes: the cases run, the backlog drains and registration works again.
        began = time.monotonic()
        stack.start_worker()
        while (await backlog.start_backlog(client)).waiting:
            backlog.forget()
            assert time.monotonic() - began < 60, "the backlog did not drain"
            await asyncio.sleep(0.3)
        print(f"backlog of {created} drained {time.monotonic() - began:.1f} s after the worker started")
        deadline = time.monotonic() + 10
        while (r := await mia.post("/api/v1/cases", json=case_create_body())).status_code == 503:
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.5)
        assert r.status_code == 201, r.text
        results = await watch.technical_sweep(client, get_engine(stack.settings.db_url), batch=50)
        assert not any(r.kind == stuck.WORKFLOW_NOT_STARTED
                       for reasons in results.values() for r in reasons)
