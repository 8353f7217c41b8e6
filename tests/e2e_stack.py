"""The whole system as `make run` starts it, for end-to-end tests and the benchmark:
the real dev server, the worker and the API as separate processes on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from launcher import EmbeddedTemporal, free_port, spawn, stop_process
from models.db import migrate
from settings import Settings

ADMIN_PASSWORD = "stack admin password"  # noqa: S105 - a test stack's bootstrap admin


@dataclass
class Stack:
    data_dir: Path
    # "local" (passwords and tokens, as `make run`), or "trusted-header": X-User from 127.0.0.1
    # is the identity — chosen on purpose by tests about something other than identity.
    auth: str = "local"
    tokens: dict[str, str] = field(default_factory=dict)  # staff id -> personal API token
    temporal: EmbeddedTemporal = field(init=False)
    api_port: int = field(default_factory=free_port)
    worker_proc: object = None
    documents_proc: object = None
    api_proc: object = None

    def __post_init__(self) -> None:
        self.temporal = EmbeddedTemporal(self.data_dir, free_port(), free_port())

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ONEFAMILY_DATA_DIR=str(self.data_dir),
            ONEFAMILY_API_PORT=str(self.api_port),
            TEMPORAL_ADDRESS=self.temporal.target,
            TEMPORAL_NAMESPACE=self.temporal.namespace,
            ONEFAMILY_AUTH=self.auth,
            ONEFAMILY_ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        env.pop("DATABASE_URL", None)
        return env

    @property
    def settings(self) -> Settings:
        return Settings(ONEFAMILY_DATA_DIR=str(self.data_dir), TEMPORAL_ADDRESS=self.temporal.target)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _log(self, name: str):
        return open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.temporal.start()
        migrate(self.settings.db_url)  # while the dev server starts: it needs no Temporal
        await self.temporal.wait_ready()
        self.start_worker()
        log = self._log("documents")
        self.documents_proc = spawn([sys.executable, "-m", "worker", "--role", "documents"],
                                    env=self.env, stdout=log, stderr=log)
        log = self._log("api")
        self.api_proc = spawn(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--no-access-log"],
            env=self.env, stdout=log, stderr=log,
        )
        await self.wait_ready()

    def start_worker(self) -> None:
        log = self._log("worker")
        self.worker_proc = spawn([sys.executable, "-m", "worker", "--role", "cases"], env=self.env,
                                 stdout=log, stderr=log)

    def kill_worker(self) -> None:
        self.worker_proc.kill()  # SIGKILL: no graceful shutdown
        self.worker_proc.wait()

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"API not ready; see {self.data_dir}/api.log")

    async def token(self, staff_id: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        """A personal API token (local mode), as a script would get one."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
            answer = await client.post("/api/v1/auth/tokens", auth=(staff_id, password))
            answer.raise_for_status()
            return answer.json()["token"]

    def stop(self) -> None:
        # The API and both workers at once (each may take a second or two to drain), then the
        # dev server they talk to.
        procs = [p for p in (self.api_proc, self.worker_proc, self.documents_proc) if p is not None]
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(stop_process, procs))
        self.temporal.stop()


async def with_staff(stack: Stack, people: list[dict] | None = None) -> Stack:
    """A started stack with `people` (default tests.factories.STAFF) registered (each with
    `password_of` their id) and a personal API token of each, and of admin, in `stack.tokens`."""
    from tests.factories import STAFF, password_of

    people = STAFF if people is None else people
    admin = await stack.token()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {admin}"}) as client:
        for person in people:
            body = {**person, "password": password_of(person["id"])}
            answer = await client.post("/api/v1/staff", json=body)
            assert answer.status_code == 201, answer.text
    stack.tokens = {p["id"]: await stack.token(p["id"], password_of(p["id"])) for p in people}
    stack.tokens["admin"] = admin
    return stack


def page_staff() -> list[dict]:
    """The staff of the shared page stack (conftest `page_stack`): tests.factories.STAFF and
    Lise, the school's team member of the workbench tests (tests/browser.py PEOPLE)."""
    from tests.browser import PEOPLE
    from tests.factories import STAFF

    return [*STAFF, *(p for p in PEOPLE if p["id"] not in {s["id"] for s in STAFF})]


def api_as(stack: Stack, user: str) -> httpx.AsyncClient:
    """The JSON API as `user` (a token of `with_staff`)."""
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                             headers={"Authorization": f"Bearer {stack.tokens[user]}"})


class SignedIn:
    """One staff member signed in with their password (a session cookie), as a browser
    without JavaScript: the tests post the pages' forms as shown."""

    def __init__(self, stack: Stack, staff_id: str) -> None:
        self.staff_id = staff_id
        self.http = httpx.AsyncClient(base_url=stack.base_url, timeout=60, follow_redirects=False,
                                      headers={"Accept-Language": "en"})

    async def __aenter__(self) -> Self:
        from tests.factories import password_of

        r = await self.http.post("/login", data={"staff_id": self.staff_id,
                                                 "password": password_of(self.staff_id), "next": "/"})
        assert r.status_code == 303, r.text
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()


@contextlib.asynccontextmanager
async def api_without_worker(data_dir: Path, env: dict[str, str]) -> AsyncIterator[Stack]:
    """The dev server and the API (trusted header, `env` added) as processes, NO case worker,
    with tests.factories.STAFF registered: for what a command meets when nobody works."""
    from tests.factories import STAFF

    stack = Stack(data_dir, auth="trusted-header")
    stack.data_dir.mkdir(parents=True)
    try:
        stack.temporal.start()
        await stack.temporal.wait_ready()
        migrate(stack.settings.db_url)
        log = open(stack.data_dir / "api.log", "ab")  # noqa: SIM115 - owned by the child
        stack.api_proc = spawn(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(stack.api_port), "--no-access-log"],
            env={**stack.env, **env}, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=stack.base_url) as c:
            while True:  # up and talking to Temporal (not ready: no worker)
                try:
                    if (await c.get("/readyz")).json().get("temporal"):
                        break
                except (httpx.TransportError, ValueError):
                    pass
                assert time.monotonic() < deadline, f"API did not start; see {stack.data_dir}/api.log"
                await asyncio.sleep(0.2)
            for person in STAFF:
                r = await c.post("/api/v1/staff", json=person, headers={"X-User": "admin"})
                assert r.status_code == 201, r.text
        yield stack
    finally:
        stack.stop()
