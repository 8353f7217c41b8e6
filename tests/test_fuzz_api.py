"""Fuzz the running API from its own OpenAPI spec (DESIGN §7: "Bad input: every endpoint answers
4xx with a readable message; fuzzing the OpenAPI spec finds no 500").

The real stack (dev server, worker, API as separate processes) is started once; schemathesis
loads `/openapi.json` from it and generates requests for every operation under `/api/v1`,
both schema-conforming ("positive") and schema-violating ("negative") ones, a bounded number
each, derandomized so every run sends the same requests. Half of the requests to a
`/cases/{case_id}/...` path use a real case id so they get past the 404 into the workflow. The
only check is "no 5xx" (and no hung or dropped connection): every failure is listed with a curl
command that reproduces it, and the tail of the stack's api.log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.e2e_stack import Stack
from tests.factories import case_create_body

STAFF = [
    {"id": "anna", "name": "Anna Berg", "discipline": "social_worker",
     "department": "children_disability", "roles": ["coordinator"]},
    {"id": "ole", "name": "Ole Dam", "discipline": "adult_services",
     "department": "adult_services", "roles": ["team_member"]},
    {"id": "mia", "name": "Mia Lund", "discipline": "manager",
     "department": "children_disability", "roles": ["manager"]},
    {"id": "board", "name": "Committee", "discipline": "other",
     "department": "administration", "roles": ["committee"]},
]

MAX_EXAMPLES = 15  # per operation and generation mode
INCLUDE = r"^/api/v1/"
EXCLUDE = r"^/api/v1/codec"  # the Temporal codec server: not part of the case API
TIMEOUT = 30.0  # seconds per request; a command that hangs this long is a failure too
USERS = {"admin": 500, "anna": 120}  # who calls, and at least how many requests that pass makes


@dataclass
class Fuzzed:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("fuzz")) / "data")
    try:
        await s.start()
        async with httpx.AsyncClient(base_url=s.base_url, headers={"X-User": "admin"}, timeout=60) as c:
            for person in STAFF:
                assert (await c.post("/api/v1/staff", json=person)).status_code == 201
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
async def case_ids(stack: Stack) -> list[str]:
    """Real cases, so `/cases/{case_id}/...` requests reach the workflow; anna coordinates them,
    so her requests get past 403 too. The fuzzer may close them: then it sees the 409s."""
    ids = []
    async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60) as c:
        for _ in range(3):
            r = await c.post("/cases", json=case_create_body(), headers={"X-User": "admin"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            r = await c.post(f"/cases/{ids[-1]}/coordinator", json={"coordinator_id": "anna"},
                             headers={"X-User": "mia"})
            assert r.status_code == 200, r.text
    return ids


def fuzz(base_url: str, user: str, case_ids: list[str]) -> Fuzzed:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    schema = schema.include(path_regex=INCLUDE).exclude(path_regex=EXCLUDE)
    out = Fuzzed()
    session = requests.Session()
    headers = {"X-User": user}

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, headers=headers)

            @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                      print_blob=False)
            @given(case=strategy, real=st.sampled_from([None, *case_ids]))
            def send(case, real: str | None) -> None:
                if real is not None and "case_id" in (case.path_parameters or {}):
                    case.path_parameters["case_id"] = real
                out.requests += 1
                try:
                    response = case.call(base_url=base_url, session=session, headers=headers,
                                         timeout=TIMEOUT)
                except requests.RequestException as exc:
                    out.failures.append(f"{mode.value} {case.as_curl_command(headers, base_url=base_url)}"
                                        f"\n  -> {type(exc).__name__}: {exc}")
                    return
                out.by_status[response.status_code] = out.by_status.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    out.failures.append(f"{mode.value} {case.as_curl_command(headers, base_url=base_url)}"
                                        f"\n  -> {response.status_code} {response.text[:300]}")

            try:
                send()
            except Unsatisfiable:  # e.g. nothing to make invalid once X-User is fixed
                out.skipped.append(f"{operation.label} ({mode.value})")
    return out


def api_log_tail(stack: Stack, lines: int = 80) -> str:
    log = stack.data_dir / "api.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@pytest.mark.parametrize("user", list(USERS))
async def test_fuzzing_the_openapi_spec_finds_no_server_error(
    stack: Stack, case_ids: list[str], user: str
) -> None:
    started = time.monotonic()
    out = await asyncio.to_thread(fuzz, stack.base_url, user, case_ids)
    took = time.monotonic() - started
    summary = (f"{user}: {out.requests} requests in {took:.1f}s, statuses {sorted(out.by_status.items())}"
               f", skipped {out.skipped}")
    print(summary)
    assert not out.failures, (
        f"{len(out.failures)} server error(s) ({summary}):\n\n" + "\n\n".join(out.failures[:20])
        + f"\n\napi.log (tail):\n{api_log_tail(stack)}"
    )
    assert out.requests >= USERS[user], summary
    assert any(400 <= s < 500 for s in out.by_status), f"no bad input reached a 4xx: {summary}"
    assert any(200 <= s < 300 for s in out.by_status), f"nothing got through: {summary}"
