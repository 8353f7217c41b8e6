"""Fuzz the running API from its own OpenAPI spec (DESIGN §7: "Bad input: every endpoint answers
4xx with a readable message; fuzzing the OpenAPI spec finds no 500").

The real stack (dev server, worker, API as separate processes) is started once; schemathesis
loads `/openapi.json` from it and sends requests to every operation under `/api/v1`, both
schema-conforming ("positive") and schema-violating ("negative") ones, MAX_EXAMPLES of each, plus
integers past 64 bits in every integer query parameter. One pass, each example drawn as `admin`
or as the coordinator `anna` (two passes, one per caller at 10 examples, took 2 x 110 s; the CLI
test below now does the broad generation with every check).
Most `/cases/{case_id}/...` requests use a real case id so they get past the 404 into the
workflow. The check is "no 5xx, no hung or dropped connection", and afterwards "every real case
still takes a valid command" (bad input must not wedge a case's workflow). Failures are listed
grouped by operation, each with the exact request, plus the warnings of the worker log and the
tracebacks of the API log.

Then `schemathesis run --checks all` (issue 11 point 5), the CLI as a developer runs it, with
every check schemathesis has — status codes, content types, response schemas and headers, that
schema-valid data is accepted and invalid data refused, that auth is not ignored, use after
free, resource availability, Allow headers ... — within a time budget (CLI_MAX_TIME), with the
few answers a check cannot expect by design configured precisely in tests/schemathesis.toml
(docs/api.md).

Reproducible: a fixed Hypothesis seed (FUZZ_SEED in the environment picks another), in a
subprocess that imports no project module (Hypothesis mixes literals from the source of loaded
local modules into what it generates, so in the pytest process the requests would change with
whatever else the run imported or anyone edited). One pass by hand against a running API:
`python tests/test_fuzz_api.py URL USER[,USER...] OUT.json [CASE_ID...]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e_stack import Stack

MAX_EXAMPLES = 3  # per operation and generation mode; the CLI test generates the bulk (5 per op)
SEED = int(os.environ.get("FUZZ_SEED", "0"))  # the same requests every run; set it to explore
HUGE = (2**64, -(2**64))  # sent to every integer query parameter: the database has 64-bit integers
INCLUDE = r"^/api/v1/"
EXCLUDE = r"^/api/v1/codec"  # the Temporal codec server: not part of the case API
REQUEST_TIMEOUT = 30.0  # seconds; a command that hangs this long is a failure too
PASS_TIMEOUT = 240.0  # seconds for the whole pass
USERS = {"admin": 100, "anna": 100}  # who calls, and at least how many requests each one sends
# (seed 0: admin 261, anna 159 of 420 — Hypothesis draws the first caller more often)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONFIG = Path(__file__).with_name("schemathesis.toml")  # what a check cannot hold, and why
CLI_MAX_TIME = 60  # seconds: `schemathesis run`'s own budget, all phases together
CLI_EXAMPLES = 5  # per operation in the fuzzing phase



# ---------------------------------------------------------------- the fuzzer (subprocess side)


def fuzz(base_url: str, users: list[str], case_ids: list[str]) -> dict:
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    schema = schema.include(path_regex=INCLUDE).exclude(path_regex=EXCLUDE)
    session = requests.Session()
    headers = {"X-User": users[0]}  # fixed in generation (never fuzzed); the caller is set per call
    out: dict = {"requests": 0, "by_status": {}, "failures": [], "skipped": [], "operations": 0,
                 "by_user": {u: {"requests": 0, "by_status": {}} for u in users}}
    accepted: dict[str, str] = {}  # real case id -> the last command it accepted (2xx)

    def describe(request: requests.PreparedRequest) -> str:
        body = request.body.decode(errors="replace") if isinstance(request.body, bytes) else request.body
        return f"{request.method} {request.url} (X-User: {request.headers.get('X-User')}) body: {body!r}"

    def call(operation, case, mode: str, real: str | None, user: str) -> None:
        out["requests"] += 1
        mine = out["by_user"][user]
        mine["requests"] += 1
        as_user = {"X-User": user}
        failure = {"operation": operation.label, "mode": mode, "seq": out["requests"],
                   "case_last_accepted": accepted.get(real)}
        try:
            response = case.call(base_url=base_url, session=session, headers=as_user,
                                 timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            out["failures"].append({**failure, "status": type(exc).__name__, "answer": str(exc),
                                    "request": case.as_curl_command(as_user, base_url=base_url)})
            return
        status = str(response.status_code)
        out["by_status"][status] = out["by_status"].get(status, 0) + 1
        mine["by_status"][status] = mine["by_status"].get(status, 0) + 1
        if real and 200 <= response.status_code < 300:
            accepted[real] = f"#{out['requests']} {describe(response.request)}"
        if response.status_code >= 500:
            out["failures"].append({**failure, "status": status, "answer": response.text[:300],
                                    "request": describe(response.request)})

    def run(operation, mode: GenerationMode) -> None:
        # An explicit seed rather than derandomize: the latter hashes this function's source.
        @seed(SEED)
        @settings(max_examples=MAX_EXAMPLES, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                  print_blob=False)
        @given(case=operation.as_strategy(generation_mode=mode, headers=headers),
               pick=st.integers(0, len(case_ids)), user=st.sampled_from(users))
        def send(case, pick: int, user: str) -> None:
            # pick 0 keeps the generated id; otherwise one of the real cases
            real = None
            if pick and "case_id" in (case.path_parameters or {}):
                real = case.path_parameters["case_id"] = case_ids[pick - 1]
            call(operation, case, mode.value, real, user)

        try:
            send()
        except Unsatisfiable:  # e.g. nothing left to make invalid once X-User is fixed
            out["skipped"].append(f"{operation.label} ({mode.value})")

    def edges(operation) -> None:
        """Integers past 64 bits in each integer query parameter, the rest of the request valid."""
        for parameter in operation.query:
            if "integer" not in json.dumps(parameter.definition.get("schema", {})):
                continue
            for value in HUGE:
                for user in users:
                    path = {p.name: case_ids[0] if p.name == "case_id" else "x"
                            for p in operation.path_parameters}
                    case = operation.Case(path_parameters=path, query={parameter.name: str(value)},
                                          headers={"X-User": user})
                    call(operation, case, "edge", path.get("case_id"), user)

    for result in schema.get_all_operations():
        out["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run(result.ok(), mode)
        edges(result.ok())
    return out


# ---------------------------------------------------------------- the test (pytest side)


async def run_pass(base_url: str, users: list[str], case_ids: list[str], result: Path) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, base_url, ",".join(users), str(result), *case_ids,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), PASS_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the fuzz pass as {users} took over {PASS_TIMEOUT}s") from None
    assert proc.returncode == 0, f"the fuzzer itself failed:\n{output.decode(errors='replace')[-4000:]}"
    return json.loads(result.read_text())


def log_lines(stack: Stack, name: str, keep, limit: int) -> str:
    log = stack.data_dir / f"{name}.log"
    if not log.exists():
        return ""
    lines = [ANSI.sub("", line) for line in log.read_text(errors="replace").splitlines() if keep(line)]
    return "\n".join(list(dict.fromkeys(lines))[-limit:])


def failure_report(stack: Stack, out: dict) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in out["failures"]:
        groups.setdefault((f["operation"], f["status"]), []).append(f)
    parts = [f"{len(out['failures'])} server error(s) / failed request(s), first seen in request order:"]
    for (operation, status), fs in sorted(groups.items(), key=lambda g: g[1][0]["seq"]):
        first = fs[0]
        parts.append(f"- {operation} -> {status} x{len(fs)} (first: request #{first['seq']}, "
                     f"{first['mode']})\n    {first['request']}\n    answer: {first['answer']}")
        if first["case_last_accepted"]:
            parts.append(f"    the last command this case accepted before: {first['case_last_accepted']}")
    worker = log_lines(stack, "worker", lambda x: "WARN" in x or "ERROR" in x or "Error" in x, 10)
    api = log_lines(stack, "api", lambda x: "HTTP/1.1" not in x, 60)
    return "\n".join(parts) + f"\n\nworker.log warnings:\n{worker}\n\napi.log without access lines:\n{api}"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    from tests.e2e_stack import Stack  # here, not at the top: see the module docstring
    from tests.factories import STAFF

    s = Stack(Path(tmp_path_factory.mktemp("fuzz")) / "data", auth="trusted-header")
    try:
        await s.start()
        async with httpx.AsyncClient(base_url=s.base_url, headers={"X-User": "admin"},
                                     timeout=60) as c:
            for person in STAFF:
                assert (await c.post("/api/v1/staff", json=person)).status_code == 201
        yield s
    finally:
        s.stop()


async def test_fuzzing_the_openapi_spec_finds_no_server_error(stack: Stack, tmp_path: Path) -> None:
    from tests.factories import case_create_body

    api = stack.base_url + "/api/v1"
    # Fresh cases, coordinated by anna so her requests get past 403 too. The fuzzer may well
    # close them: then it meets the 409s of a closed case.
    case_ids = []
    async with httpx.AsyncClient(base_url=api, timeout=60) as c:
        for _ in range(4):
            r = await c.post("/cases", json=case_create_body(), headers={"X-User": "admin"})
            assert r.status_code == 201, r.text
            case_ids.append(r.json()["id"])
            r = await c.post(f"/cases/{case_ids[-1]}/coordinator",
                             json={"coordinator_id": "anna"}, headers={"X-User": "mia"})
            assert r.status_code == 200, r.text

    started = time.monotonic()
    out = await run_pass(stack.base_url, list(USERS), case_ids, tmp_path / "fuzz.json")
    summary = (f"{out['requests']} requests to {out['operations']} operations in "
               f"{time.monotonic() - started:.1f}s, statuses {sorted(out['by_status'].items())}, "
               + ", ".join(f"{u}: {m['requests']} requests {sorted(m['by_status'].items())}"
                           for u, m in out["by_user"].items())
               + f", no negative case for {out['skipped']}")
    print(summary)
    assert not out["failures"], f"{summary}\n\n{failure_report(stack, out)}"
    assert out["operations"] >= 25, summary
    for user, least in USERS.items():  # each caller on its own, as the two passes did
        mine = out["by_user"][user]
        assert mine["requests"] >= least, f"{user}: {summary}"
        assert any(s.startswith("4") for s in mine["by_status"]), f"{user}: no 4xx: {summary}"
        assert any(s.startswith("2") for s in mine["by_status"]), f"{user}: nothing got through: {summary}"

    # Bad input must not wedge a case: each one still takes a valid command (or, closed by
    # the fuzzer, refuses it with 409).
    async with httpx.AsyncClient(base_url=api, headers={"X-User": "admin"}, timeout=60) as c:
        for case_id in case_ids:
            r = await c.post(f"/cases/{case_id}/contacts",
                             json={"kind": "phone", "at": datetime.now(UTC).isoformat()})
            assert r.status_code in (200, 409), (
                f"case {case_id} no longer takes a valid command after fuzzing: {r.status_code} "
                f"{r.text[:300]}\n\n{failure_report(stack, out)}"
            )


if __name__ == "__main__":
    base_url, callers, result_path, *ids = sys.argv[1:]
    Path(result_path).write_text(json.dumps(fuzz(base_url, callers.split(","), ids)))



def schemathesis_run(base_url: str, report: Path) -> list[str]:
    """The command line of `schemathesis run --checks all` against the running API."""
    return [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
            f"{base_url}/openapi.json", "--checks", "all", "--seed", str(SEED),
            "--max-examples", str(CLI_EXAMPLES), "--max-time", str(CLI_MAX_TIME), "--no-shrink",
            "--header", "X-User: admin", "--include-path-regex", INCLUDE,
            "--continue-on-failure",  # (no /api/v1/codec operation: nothing to exclude)
            "--report", "ndjson", "--report-ndjson-path", str(report)]


async def test_schemathesis_run_with_every_check_finds_no_failure(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *schemathesis_run(stack.base_url, tmp_path / "events.ndjson"),
        cwd=tmp_path,  # its cache (.schemathesis/, crashes it replays first) stays out of the repo
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), CLI_MAX_TIME + 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"schemathesis run took over {CLI_MAX_TIME + 90}s") from None
    text = ANSI.sub("", output.decode(errors="replace"))
    summary = text[text.find("SUMMARY"):] if "SUMMARY" in text else text[-3000:]
    print(f"schemathesis run --checks all: exit {proc.returncode} in "
          f"{time.monotonic() - started:.1f}s\n{summary}")
    failures = text[text.find("FAILURES"):text.find("SUMMARY")] if "FAILURES" in text else ""
    assert proc.returncode == 0, f"{failures[:12000]}\n{summary}"
    # "2200 generated" contains "0 generated": read the number (this failed CI whenever the
    # time-boxed run's count happened to end in 0).
    generated = re.search(r"(?<!\d)(\d+) generated", summary)
    assert "Tested:" in summary and generated is not None and int(generated[1]) > 0, summary
