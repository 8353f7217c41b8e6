"""Every command has a deadline (issue 13, docs/operations.md): with no worker, a wedged case or
a busy engine a command answers 503 within ONEFAMILY_COMMAND_TIMEOUT with a sentence that says
whether it may still be applied and that a retry with the same Idempotency-Key is safe; /readyz
says not ready, and why, while no case worker polls the case task queue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException
from temporalio.client import Client

from api import gateway
from api.gateway import IN_FLIGHT_PER_CASE, poller_verdict, send
from tests.e2e_stack import Stack, api_without_worker
from tests.factories import case_create_body

TIMEOUT = 2.0  # ONEFAMILY_COMMAND_TIMEOUT of the API under test


# ---------------------------------------------------------------- the deadline, in process


class _Hung:
    """A workflow handle whose Updates never answer (no worker, a wedged case)."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute_update(self, *_args, **_kwargs):
        self.calls += 1
        await asyncio.Event().wait()


class _Client:
    def __init__(self) -> None:
        self.handle = _Hung()

    def get_workflow_handle(self, _workflow_id: str) -> _Hung:
        return self.handle


async def _refused(coro, within: float) -> tuple[HTTPException, float]:
    began = time.monotonic()
    with pytest.raises(HTTPException) as caught:
        await asyncio.wait_for(coro, within)
    return caught.value, time.monotonic() - began


async def test_a_command_nobody_answers_is_a_503_saying_it_may_still_be_applied() -> None:
    client = _Client()
    error, took = await _refused(send(client, None, str(uuid.uuid4()), "record_contact", None,
                                      "anna:k1", timeout=0.3), within=2)
    assert error.status_code == 503 and 0.3 <= took < 1.0
    assert "may still be applied later" in error.detail
    assert "a retry with the same Idempotency-Key is safe" in error.detail
    assert "without an Idempotency-Key" not in error.detail
    assert error.headers == {"Retry-After": "5"}

    error, _ = await _refused(send(client, None, str(uuid.uuid4()), "record_contact", None,
                                   None, timeout=0.3), within=2)
    assert "may still be applied later" in error.detail
    assert "sent without an Idempotency-Key: look at the case" in error.detail


async def test_a_command_stuck_behind_a_busy_case_was_not_sent() -> None:
    client, case_id = _Client(), str(uuid.uuid4())
    ahead = [asyncio.create_task(send(client, None, case_id, "record_contact", None, None, timeout=3))
             for _ in range(IN_FLIGHT_PER_CASE)]
    await asyncio.sleep(0.05)
    assert client.handle.calls == IN_FLIGHT_PER_CASE  # the case's queue is full
    error, took = await _refused(send(client, None, case_id, "record_contact", None, "anna:k2",
                                      timeout=0.3), within=2)
    assert error.status_code == 503 and took < 1.0
    assert "was not sent, so it has not been applied and will not be" in error.detail
    assert client.handle.calls == IN_FLIGHT_PER_CASE  # never reached the engine
    for task in ahead:
        task.cancel()
    await asyncio.gather(*ahead, return_exceptions=True)
    assert gateway._queue(case_id)._value == IN_FLIGHT_PER_CASE  # every slot given back


def test_poller_verdict() -> None:
    assert poller_verdict("q", [58.0, 300.0]) is None  # an idle worker between its long polls
    assert poller_verdict("q", []) == "no case worker has polled task queue q (the case engine lists none)"
    assert poller_verdict("q", [71.4, 200.0]) == "no case worker has polled task queue q for 71 s"


# ---------------------------------------------------------------- end to end, no worker


@pytest.fixture(scope="module")
async def no_worker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The dev server and the API (ONEFAMILY_COMMAND_TIMEOUT=2) as processes, no case worker."""
    data = Path(tmp_path_factory.mktemp("deadline")) / "data"
    async with api_without_worker(data, {"ONEFAMILY_COMMAND_TIMEOUT": str(TIMEOUT)}) as stack:
        yield stack


def http(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers={"X-User": user}, timeout=30)


async def _accepted(client: Client, case_id: str, name: str) -> list[str]:
    """The update ids of the `name` commands the case's history accepted."""
    history = await client.get_workflow_handle(f"case-{case_id}").fetch_history()
    return [e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id
            for e in history.events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
            and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name == name]


async def test_no_worker_503_within_the_deadline_then_the_retry_applies_it_once(no_worker: Stack) -> None:
    stack = no_worker
    async with http(stack, "anna") as anna, http(stack, "mia") as mia, \
            httpx.AsyncClient(base_url=stack.base_url) as root:
        # Registering needs no worker: the engine keeps the new case until one comes.
        r = await anna.post("/cases", json=case_create_body(), headers={"Idempotency-Key": "reg-1"})
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        r = await anna.post("/cases", json=case_create_body())
        assert r.status_code == 201, r.text
        other_id = r.json()["id"]

        ready = await root.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["database"] is True and body["temporal"] is True and body["workers"] is False
        assert body["why"].startswith(f"no case worker has polled task queue {stack.settings.task_queue}")

        key = {"Idempotency-Key": "assign-1"}
        began = time.monotonic()
        r = await mia.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"}, headers=key)
        took = time.monotonic() - began
        print(f"\ncommand with no worker: {r.status_code} after {took:.2f} s (timeout {TIMEOUT:g} s)")
        assert r.status_code == 503, r.text
        assert took < TIMEOUT + 1
        detail = r.json()["detail"]
        assert "may still be applied later" in detail
        assert "a retry with the same Idempotency-Key is safe" in detail
        assert r.headers["retry-after"] == "5"

        r = await mia.post(f"/cases/{other_id}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 503 and "without an Idempotency-Key" in r.json()["detail"], r.text

        began = time.monotonic()  # a read does not hang either: the read model answers
        r = await anna.get(f"/cases/{case_id}")
        assert r.status_code == 200 and time.monotonic() - began < TIMEOUT + 1, r.text

        began = time.monotonic()
        stack.start_worker()
        while (ready := await root.get("/readyz")).status_code != 200:
            assert time.monotonic() - began < 45, ready.text
            await asyncio.sleep(0.2)
        print(f"/readyz 200 {time.monotonic() - began:.2f} s after the worker was started")
        assert ready.json()["workers"] is True and "why" not in ready.json()

        began = time.monotonic()
        r = await mia.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"}, headers=key)
        print(f"retry with the same key: {r.status_code} after {time.monotonic() - began:.2f} s")
        assert r.status_code == 200, r.text
        assert r.json()["coordinator_id"] == "anna"

        # The abandoned keyless command was applied later, as its sentence said.
        deadline = time.monotonic() + 15
        while (await anna.get(f"/cases/{other_id}")).json().get("coordinator_id") != "anna":
            assert time.monotonic() < deadline, "the abandoned command was never applied"
            await asyncio.sleep(0.2)

    client = await Client.connect(stack.temporal.target, namespace=stack.temporal.namespace)
    assert await _accepted(client, case_id, "assign_coordinator") == ["mia:assign-1"], \
        "the first try and its retry are one command in the case's history"
