"""The production topology of DESIGN §12 without containers (issue 12 points 2, 5, 6 and the
faults), as separate processes on 127.0.0.1:

    one Temporal (the dev server binary, reached by TEMPORAL_ADDRESS only)
    a PostgreSQL read model (DATABASE_URL; a throwaway server of this module, tests/postgres.py)
    the API: `uvicorn api.main:app --workers 2` (a supervisor and two API processes)
    two case workers (`python -m worker --role cases`), one documents worker (`--role documents`)

The schema is migrated once before anything starts. The tests, in order:
1. one sweep per deployment: two API processes and two case workers, the stuck index and
   technical sweep run in exactly one process (a case worker), never in an API process;
2. the README walk-through (scripts/walkthrough.sh) and a second case driven with httpx run
   at the same time; the case worker holding the second case (and the stuck sweeper) is
   SIGKILLed in the middle; every command still succeeds in bounded time (the other worker
   takes over) and the answers equal the same two runs on the embedded default (a Stack on
   SQLite). Figures go to test-artifacts/topology.json and are printed;
3. the documents worker down: commands go on at their usual speed, the PDFs wait and are
   rendered once it is back;
4. PostgreSQL down: the API answers 503 with a sentence, a command the workflow accepts
   meanwhile is projected once the database is back (the projection activity retries);
5. every log line of every process is a JSON object, and none holds a name or a note.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

import logjson
from launcher import EmbeddedTemporal, free_port, spawn, stop_process
from models.db import migrate
from settings import Settings
from tests.e2e_stack import ADMIN_PASSWORD, Stack
from tests.factories import plan_body
from tests.postgres import PostgresServer, PostgresUnavailable, start_server

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "walkthrough.sh"
ARTIFACTS = ROOT / "test-artifacts"
COMMAND_BOUND = 30.0  # seconds: no command may take longer, not even the one after the kill

# The second case's people (names, notes) and the walk-through's: none may reach a log line.
DRIVER_STAFF = [
    {"id": "kim", "name": "Kim Holmgaard", "discipline": "social_worker",
     "department": "children_disability", "roles": ["coordinator"], "email": "kim.h@example.org"},
    {"id": "lars", "name": "Lars Vangsted", "discipline": "adult_services",
     "department": "adult_services", "roles": ["team_member"]},
    {"id": "pia", "name": "Pia Sandholt", "discipline": "manager",
     "department": "children_disability", "roles": ["manager"]},
    {"id": "nora", "name": "Nora Lindqvist", "discipline": "other",
     "department": "administration", "roles": ["committee"]},
]
PERSONAL = [
    "Family Jensen", "Emil", "Mette", "+4521111111", "Family wants school to work", "Town hall",
    "Stomach aches", "Sleeps well", "Needs coordinated support", "School attendance up",
    "This is our plan", "Joint funding agreed", "Anna Berg", "Ole Dam", "Mia Lund",
    "anna@example.org", "Family Nielsen", "Sofie", "Karen", "+4522222222", "Sofie sleeps badly",
    "Library room", "Kim Holmgaard", "Lars Vangsted", "Pia Sandholt", "Nora Lindqvist",
    "kim.h@example.org", "Karen called about the bus", "Sofie rides the bus alone",
]


def password(staff_id: str) -> str:
    return f"{staff_id} topology password 1"


# ---------------------------------------------------------------- the deployment


@dataclass
class Topology:
    base: Path
    pg: PostgresServer
    database_url: str = ""
    api_port: int = field(default_factory=free_port)
    temporal: EmbeddedTemporal = field(init=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_in: float = 0.0
    embedded: Stack | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.base / "data"  # keys shared by all processes (as a mounted secret)
        self.logs = self.base / "logs"
        self.temporal = EmbeddedTemporal(self.base / "temporal", free_port(), free_port())

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEFAMILY_", "TEMPORAL_"))}
        env.update(
            DATABASE_URL=self.database_url,
            TEMPORAL_ADDRESS=self.temporal.target,
            TEMPORAL_NAMESPACE=self.temporal.namespace,
            ONEFAMILY_DATA_DIR=str(self.data_dir),
            ONEFAMILY_API_PORT=str(self.api_port),
            ONEFAMILY_AUTH="local",
            ONEFAMILY_ADMIN_PASSWORD=ADMIN_PASSWORD,
            # The background rounds every second, and their log lines, to count them.
            ONEFAMILY_STUCK_INDEX_SECONDS="1",
            ONEFAMILY_STUCK_CHECK_SECONDS="1",
            ONEFAMILY_LOG_LEVEL="debug",
        )
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def settings(self) -> Settings:
        return Settings(ONEFAMILY_DATA_DIR=str(self.data_dir), TEMPORAL_ADDRESS=self.temporal.target,
                        DATABASE_URL=self.database_url)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = spawn(argv, env=self.env, stdout=log, stderr=log, cwd=ROOT)

    async def start(self) -> None:
        began = time.monotonic()
        self.logs.mkdir(parents=True)
        self.data_dir.mkdir(mode=0o700)
        self.database_url = self.pg.create_database()
        self.temporal.start()
        await self.temporal.wait_ready()
        migrate(self.database_url)  # once, before anything starts
        config = self.base / "uvicorn-log.json"
        config.write_text(json.dumps(logjson.uvicorn_log_config("api", "DEBUG")))
        for name in ("cases-1", "cases-2"):
            self._spawn(name, [sys.executable, "-m", "worker", "--role", "cases"])
        self._spawn("documents", [sys.executable, "-m", "worker", "--role", "documents"])
        self._spawn("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--workers", "2",
                            "--host", "127.0.0.1", "--port", str(self.api_port), "--no-access-log",
                            "--log-config", str(config)])
        await wait_ready(self.base_url, self.logs / "api.log")
        await self.wait_for(lambda: len(self.lines("api", "Application startup complete.")) >= 2, 60,
                            "two API processes")
        await self.wait_for(lambda: self.sweeper_pids(), 60, "the stuck sweeper")
        self.started_in = time.monotonic() - began

    def records(self, name: str) -> tuple[list[dict], list[str]]:
        """The JSON lines of a process's log, and the lines that are not JSON objects."""
        good, bad = [], []
        path = self.logs / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                value = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            (good if isinstance(value, dict) else bad).append(value if isinstance(value, dict) else line)
        return good, bad

    def lines(self, name: str, msg: str) -> list[dict]:
        return [r for r in self.records(name)[0] if r.get("msg") == msg]

    def sweeper_pids(self, after: float = 0.0) -> dict[int, str]:
        """pid -> worker name of each "stuck sweeper running here" line (after a wall time)."""
        found = {}
        for name in ("cases-1", "cases-2"):
            for r in self.lines(name, "stuck sweeper running here"):
                if datetime.fromisoformat(r["at"]).timestamp() >= after:
                    found[r["pid"]] = name
        return found

    def current_sweeper(self) -> tuple[int, str]:
        """(pid, worker name) of the newest "stuck sweeper running here" line."""
        lines = [(r["at"], r["pid"], name) for name in ("cases-1", "cases-2")
                 for r in self.lines(name, "stuck sweeper running here")]
        _, pid, name = max(lines)
        return pid, name

    @staticmethod
    async def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)  # no graceful shutdown
        proc.wait()

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process(proc)
        self.temporal.stop()


async def wait_ready(base_url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"API not ready; see {log}")


async def register_driver_staff(base_url: str) -> dict[str, str]:
    """The second case's staff (the walk-through registers its own); their tokens."""
    async with httpx.AsyncClient(base_url=base_url + "/api/v1", timeout=30) as c:
        admin = (await c.post("/auth/tokens", auth=("admin", ADMIN_PASSWORD))).json()["token"]
        for person in DRIVER_STAFF:
            r = await c.post("/staff", json={**person, "password": password(person["id"])},
                             headers={"Authorization": f"Bearer {admin}"})
            assert r.status_code == 201, r.text
        tokens = {}
        for person in DRIVER_STAFF:
            r = await c.post("/auth/tokens", auth=(person["id"], password(person["id"])))
            tokens[person["id"]] = r.json()["token"]
        return tokens


# ---------------------------------------------------------------- the two runs


def now_iso(days: int = 0) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def case_body() -> dict:
    return {
        "referral": {"source": "school", "kind": "application", "received_at": "2026-11-20T09:00:00Z",
                     "reason": "Needs coordinated support at home and school"},
        "family": {"name": "Family Nielsen", "language": "da", "members": [
            {"name": "Sofie", "role": "child", "birth_date": "2014-05-04", "diagnoses": ["autism"]},
            {"name": "Karen", "role": "parent", "birth_date": "1984-02-11", "phone": "+4522222222"}]},
        "existing_contacts": [{"department": "adult_services", "caseworker": "Lars"}],
        "consent": {"coordinated_handling": True}, "contact_preference": "normal",
    }


@dataclass
class Run:
    answers: list[str] = field(default_factory=list)
    timings: list[tuple[str, float, float]] = field(default_factory=list)  # name, seconds, ended
    case_id: str = ""


async def drive_case(base_url: str, tokens: dict[str, str], key: str,
                     accept: Callable[[str], Awaitable[bool]] | None = None,
                     before: dict[str, Callable[[], Awaitable[None]]] | None = None) -> Run:
    """The walk-through's lifecycle for a second family, with httpx: the same answers as the
    script prints. `accept(case_id)` may refuse a new case (another one is created);
    `before[step]` runs before that step."""
    run, before = Run(), before or {}
    async with httpx.AsyncClient(base_url=base_url + "/api/v1", timeout=COMMAND_BOUND + 30) as c:

        async def call(step: str, method: str, path: str, who: str, body: dict | None = None,
                       headers: dict | None = None) -> dict:
            if step in before:
                await before[step]()
            began = time.monotonic()
            r = await c.request(method, path, json=body,
                                headers={"Authorization": f"Bearer {tokens[who]}", **(headers or {})})
            run.timings.append((step, time.monotonic() - began, time.time()))
            assert r.status_code < 300, (step, r.status_code, r.text)
            return r.json()

        for attempt in range(10):
            created = await call("create", "POST", "/cases", "kim", case_body(),
                                 {"Idempotency-Key": f"{key}-{attempt}"})
            if accept is None or await accept(created["id"]):
                break
        else:
            raise AssertionError("no new case landed on the chosen worker")
        case = run.case_id = created["id"]
        say = run.answers.append
        say((await call("coordinator", "POST", f"/cases/{case}/coordinator", "pia",
                        {"coordinator_id": "kim"}))["stage"])
        say((await call("team", "POST", f"/cases/{case}/team", "kim", {"members": [
            {"staff_id": "lars", "discipline": "adult_services", "department": "adult_services"}]}))["stage"])
        await call("contact", "POST", f"/cases/{case}/contacts", "kim",
                   {"kind": "phone", "at": now_iso(), "notes": "Sofie sleeps badly"})
        soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT10:00:00Z")
        say((await call("meeting", "POST", f"/cases/{case}/assessment/meeting", "kim",
                        {"at": soon, "location": "Library room",
                         "participants": ["kim", "lars", "family"]}))["stage"])
        await call("assessment", "PUT", f"/cases/{case}/assessment", "kim", {
            "ics": {"child_development": [{"dimension": "health", "strengths": "Sleeps well",
                                           "concerns": "Stomach aches", "family_view": "Worried"}]},
            "child_views": "Sofie rides the bus alone.", "investigations": ["child_investigation"]})
        say((await call("complete", "POST", f"/cases/{case}/assessment/complete", "kim"))["stage"])
        say(str((await call("plan", "PUT", f"/cases/{case}/plan", "kim",
                            plan_body("Sofie", "kim")))["plan"]["version"]))
        await call("vote-1", "POST", f"/cases/{case}/plan/votes", "kim", {"staff_id": "kim", "vote": "agree"})
        voted = await call("vote-2", "POST", f"/cases/{case}/plan/votes", "lars",
                           {"staff_id": "lars", "vote": "agree"})
        item = voted["escalations"][-1]["id"]
        say((await call("decision", "POST", f"/committee/items/{item}/decision", "nora", {
            "decision": "approved", "notes": "Joint funding agreed",
            "funding": [{"department": "children_disability", "share": 0.6},
                        {"department": "adult_services", "share": 0.4}]}))["stage"])
        say((await call("family", "POST", f"/cases/{case}/plan/family-response", "kim",
                        {"approved": True, "comment": "This is our plan"}))["stage"])
        say(str(len((await call("status-meeting", "POST", f"/cases/{case}/status-meetings", "kim", {
            "at": now_iso(), "participants": ["kim", "lars", "family"],
            "minutes": "Karen called about the bus",
            "goal_progress": [{"goal_id": "g1", "status": "on_track"}]}))["status_meetings"])))
        say((await call("close", "POST", f"/cases/{case}/close", "kim",
                        {"reason": "goals_reached"}))["stage"])
        final = await call("get", "GET", f"/cases/{case}", "kim")
        say(str([(d["kind"], d["status"]) for d in final["deadlines"]]))
    return run


@dataclass
class Script:
    lines: list[tuple[float, str]] = field(default_factory=list)  # (wall time, line)
    wall: float = 0.0
    proc: asyncio.subprocess.Process | None = None

    @property
    def answers(self) -> list[str]:
        return [ln for _, ln in self.lines if not ln.startswith(("case ", "escalated as committee item "))]


async def walkthrough(base_url: str) -> tuple[Script, asyncio.Task]:
    """Start scripts/walkthrough.sh (API=, ADMIN_PASSWORD=); its lines are read as they come."""
    script = Script()
    env = dict(os.environ, API=base_url + "/api/v1", ADMIN_PASSWORD=ADMIN_PASSWORD)
    began = time.monotonic()
    script.proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def read() -> None:
        assert script.proc.stdout is not None
        async for raw in script.proc.stdout:
            script.lines.append((time.time(), raw.decode().rstrip("\n")))
        err = await script.proc.stderr.read()
        await script.proc.wait()
        script.wall = time.monotonic() - began
        assert script.proc.returncode == 0, err.decode()

    return script, asyncio.create_task(asyncio.wait_for(read(), 180))


def expected_walkthrough_answers(answers: list[str]) -> None:
    assert answers[:-1] == ["coordinator_assigned", "team_formed", "assessment", "planning", "1",
                            "planning", "active", "1", "closed"], answers
    assert "('first_contact', 'met')" in answers[-1] and "('assessment', 'met')" in answers[-1]


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1) if values else 0.0


def access_p50(records: list[dict]) -> float:
    """Server-side p50 (ms) of the commands (POST/PUT under /api/v1/cases and /committee)."""
    ms = [r["ms"] for r in records if r.get("logger") == "onefamily.access"
          and r.get("method") in ("POST", "PUT") and r.get("path", "").startswith(("/api/v1/cases",
                                                                                    "/api/v1/committee"))]
    return round(statistics.median(ms), 1) if ms else 0.0


async def last_task_worker(client: Client, case_id: str) -> int | None:
    """The pid of the worker that ran the case's newest workflow task (its sticky worker)."""
    pid = None
    async for event in client.get_workflow_handle(f"case-{case_id}").fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            identity = event.workflow_task_started_event_attributes.identity
            pid = int(identity.split("@", 1)[0]) if identity.split("@", 1)[0].isdigit() else None
    return pid


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def topology(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    try:
        pg = start_server()  # this module's own: test 4 stops and starts it
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as error:
        if os.environ.get("ONEFAMILY_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    top = Topology(Path(tmp_path_factory.mktemp("topology")), pg)
    # The embedded default to compare with (a Stack on SQLite), started at the same time.
    top.embedded = Stack(Path(tmp_path_factory.mktemp("embedded")) / "data")
    try:
        await asyncio.gather(top.start(), top.embedded.start())
        yield top
    finally:
        top.embedded.stop()
        top.stop()
        pg.stop()


FIGURES: dict = {}


def record_figures(**figures) -> None:
    FIGURES.update(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "topology.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True))
    print("\ntopology figures:", json.dumps(figures, sort_keys=True))


# ---------------------------------------------------------------- 1. one sweep per deployment


async def test_one_sweep_per_deployment_with_two_api_processes(topology: Topology) -> None:
    api_pids = {r["pid"] for r in topology.lines("api", "Application startup complete.")}
    assert len(api_pids) == 2, "uvicorn --workers 2: two API processes"
    window_start = time.time()
    await asyncio.sleep(4)
    window_end = time.time()
    counts: dict[tuple[str, int], int] = {}
    for name in ("api", "cases-1", "cases-2", "documents"):
        for r in topology.lines(name, "technical sweep"):
            if window_start <= datetime.fromisoformat(r["at"]).timestamp() < window_end:
                counts[(name, r["pid"])] = counts.get((name, r["pid"]), 0) + 1
    assert not [k for k in counts if k[0] == "api"], f"an API process swept: {counts}"
    assert len(counts) == 1, f"exactly one process sweeps: {counts}"
    (where, pid), rounds = next(iter(counts.items()))
    assert where.startswith("cases-") and 2 <= rounds <= 5, counts  # every second, once
    assert topology.sweeper_pids() == {pid: where}
    client = await Client.connect(topology.temporal.target, namespace=topology.temporal.namespace)
    running = [w async for w in client.list_workflows(
        "WorkflowType = 'StuckSweeperWorkflow' AND ExecutionStatus = 'Running'")]
    assert len(running) == 1, [w.id for w in running]
    record_figures(startup_seconds=round(topology.started_in, 1), sweeps_in_4s=rounds,
                   sweeping_processes=len(counts), api_processes=len(api_pids))


# ---------------------------------------------------------------- 2. kill a case worker mid-run


async def test_walkthrough_with_a_case_worker_killed_equals_the_embedded_default(
        topology: Topology) -> None:
    tokens = await register_driver_staff(topology.base_url)
    client = await Client.connect(topology.temporal.target, namespace=topology.temporal.namespace)
    sweeper_pid, victim = topology.current_sweeper()
    survivor = "cases-2" if victim == "cases-1" else "cases-1"
    killed: dict[str, float] = {}

    async def on_victim(case_id: str) -> bool:  # the second case must live on the victim
        return await last_task_worker(client, case_id) == sweeper_pid

    script, reading = await walkthrough(topology.base_url)

    async def kill() -> None:
        # In the middle of the walk-through as well: after it printed a few answers.
        await topology.wait_for(lambda: len(script.lines) >= 3 or reading.done(), 60, "the script")
        killed["at"], killed["mono"] = time.time(), time.monotonic()
        topology.kill(victim)

    began = time.monotonic()
    run = await drive_case(topology.base_url, tokens, "topology", accept=on_victim, before={"meeting": kill})
    await reading
    wall = time.monotonic() - began

    # Every command succeeded (drive_case asserts 2xx) in bounded time; the takeover happened.
    assert max(t for _, t, _ in run.timings) < COMMAND_BOUND, run.timings
    after = [(step, t) for step, t, ended in run.timings if ended > killed["at"]]
    takeover = after[0][1]
    assert await last_task_worker(client, run.case_id) == topology.procs[survivor].pid
    await topology.wait_for(lambda: topology.sweeper_pids(after=killed["at"]), 40, "the sweeper to move")
    moved = min(stamp for r in topology.lines(survivor, "stuck sweeper running here")
                if (stamp := datetime.fromisoformat(r["at"]).timestamp()) >= killed["at"]) - killed["at"]
    assert topology.current_sweeper()[1] == survivor
    expected_walkthrough_answers(script.answers)
    expected_walkthrough_answers(run.answers)
    gaps = [b[0] - a[0] for a, b in zip(script.lines, script.lines[1:], strict=False)]

    # The same two runs on the embedded default (SQLite), nothing killed.
    stack = topology.embedded
    embedded_tokens = await register_driver_staff(stack.base_url)
    began = time.monotonic()
    embedded_script, embedded_reading = await walkthrough(stack.base_url)
    embedded_run = await drive_case(stack.base_url, embedded_tokens, "embedded")
    await embedded_reading
    embedded_wall = time.monotonic() - began
    assert script.answers == embedded_script.answers
    assert run.answers == embedded_run.answers
    assert script.answers == run.answers  # the script and the httpx driver: the same lifecycle

    steady = [t for step, t, _ in run.timings if (step, t) not in after[:1]]
    api_records = topology.records("api")[0]
    embedded_access = [json.loads(ln) for ln in (stack.data_dir / "api.log").read_text().splitlines()
                       if ln.startswith("{")]
    record_figures(
        topology_walkthrough_wall_s=round(script.wall, 2),
        topology_both_runs_wall_s=round(wall, 2),
        topology_driver_p50_ms=p50(steady),
        topology_driver_max_s=round(max(t for _, t, _ in run.timings), 2),
        topology_server_command_p50_ms=access_p50(api_records),
        takeover_command_s=round(takeover, 2),
        takeover_step=after[0][0],
        walkthrough_longest_gap_s=round(max(gaps), 2) if gaps else 0.0,
        sweeper_moved_after_s=round(moved, 2),
        embedded_walkthrough_wall_s=round(embedded_script.wall, 2),
        embedded_both_runs_wall_s=round(embedded_wall, 2),
        embedded_driver_p50_ms=p50([t for _, t, _ in embedded_run.timings]),
        embedded_server_command_p50_ms=access_p50(embedded_access),
        commands_per_run=len(run.timings),
    )


# ---------------------------------------------------------------- 3. the documents worker down


async def test_the_documents_worker_down_holds_up_only_the_pdfs(topology: Topology) -> None:
    topology.kill("documents")
    async with httpx.AsyncClient(base_url=topology.base_url + "/api/v1", timeout=30) as c:
        tokens = {p["id"]: (await c.post("/auth/tokens", auth=(p["id"], password(p["id"])))).json()["token"]
                  for p in DRIVER_STAFF[:3]}
        slowest = 0.0

        async def command(method: str, path: str, who: str, body: dict | None = None) -> dict:
            nonlocal slowest
            began = time.monotonic()
            r = await c.request(method, path, json=body, headers={"Authorization": f"Bearer {tokens[who]}"})
            slowest = max(slowest, time.monotonic() - began)
            assert r.status_code < 300, r.text
            return r.json()

        case = (await command("POST", "/cases", "kim", case_body()))["id"]
        await command("POST", f"/cases/{case}/coordinator", "pia", {"coordinator_id": "kim"})
        await command("POST", f"/cases/{case}/team", "kim", {"members": [
            {"staff_id": "lars", "discipline": "adult_services", "department": "adult_services"}]})
        soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT10:00:00Z")
        await command("POST", f"/cases/{case}/assessment/meeting", "kim",
                      {"at": soon, "location": "Library room", "participants": ["kim", "lars", "family"]})
        await command("PUT", f"/cases/{case}/assessment", "kim", {
            "ics": {"child_development": [{"dimension": "health", "strengths": "Sleeps well"}]},
            "child_views": "Sofie rides the bus alone."})
        done = await command("POST", f"/cases/{case}/assessment/complete", "kim")
        assert done["stage"] == "planning"
        assert slowest < 5, "a command waited for the documents worker"
        await asyncio.sleep(1.5)
        listed = await command("GET", f"/cases/{case}/documents", "kim")
        assert listed["total"] == 0, "no documents worker, no document yet"
        restarted = time.monotonic()
        topology._spawn("documents", [sys.executable, "-m", "worker", "--role", "documents"])
        deadline = time.monotonic() + 45
        while not (await command("GET", f"/cases/{case}/documents", "kim"))["total"]:
            assert time.monotonic() < deadline, "the assessment report was never rendered"
            await asyncio.sleep(0.5)
        kinds = [d["kind"] for d in (await command("GET", f"/cases/{case}/documents", "kim"))["items"]]
        assert "assessment_report" in kinds
        record_figures(documents_down_slowest_command_s=round(slowest, 2),
                       pdf_after_documents_worker_restart_s=round(time.monotonic() - restarted, 2))


# ---------------------------------------------------------------- 4. PostgreSQL down


async def test_postgresql_down_answers_503_and_loses_no_accepted_command(topology: Topology) -> None:
    from models.case import Actor, CaseAnswer
    from models.commands import CommandInput
    from workflows.client import connect

    async with httpx.AsyncClient(base_url=topology.base_url + "/api/v1", timeout=30) as c:
        tokens = {p["id"]: (await c.post("/auth/tokens", auth=(p["id"], password(p["id"])))).json()["token"]
                  for p in DRIVER_STAFF[:3]}

        def auth(who: str) -> dict:
            return {"Authorization": f"Bearer {tokens[who]}"}

        case = (await c.post("/cases", json=case_body(), headers=auth("kim"))).json()["id"]
        assert (await c.post(f"/cases/{case}/coordinator", json={"coordinator_id": "kim"},
                             headers=auth("pia"))).status_code == 200
        engine = create_engine(topology.database_url)

        def projected() -> int:
            with engine.connect() as conn:
                query = text("SELECT version FROM cases WHERE id = :id")
                return conn.execute(query, {"id": case}).scalar_one()

        before = projected()
        engine.dispose()
        temporal = await connect(topology.settings)  # sealed, as an API process's client
        topology.pg.halt()
        down_at = time.monotonic()
        try:
            began = time.monotonic()
            r = await c.get(f"/cases/{case}", headers=auth("kim"))
            assert r.status_code == 503 and "database" in r.json()["detail"], r.text
            assert time.monotonic() - began < 10
            r = await c.post(f"/cases/{case}/contacts", headers=auth("kim"),
                             json={"kind": "phone", "at": now_iso(), "notes": "Karen called about the bus"})
            assert r.status_code == 503 and r.json()["detail"].endswith("when it is back."), r.text
            assert r.headers.get("retry-after") == "5"
            ready = await c.get(topology.base_url + "/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False
            # A command the case accepts while the read model is down (e.g. sent by an API
            # process that had checked access a moment before): the workflow keeps it.
            handle = temporal.get_workflow_handle(f"case-{case}")
            state = await handle.execute_update("record_contact", CommandInput(
                actor=Actor(id="kim", roles=["coordinator"], unit="children_disability"),
                body={"kind": "phone", "at": now_iso(), "notes": "Karen called about the bus"}),
                result_type=CaseAnswer)
            accepted = state.version
            assert accepted > before
            # Its projection (after the case's quiet spell, PROJECTION_QUIET) fails and is
            # retried while the database is down.
            deadline = time.monotonic() + 20
            while not [pa for pa in (await handle.describe()).raw_description.pending_activities
                       if pa.activity_type.name == "project_case" and pa.attempt >= 2]:
                assert time.monotonic() < deadline, "the projection was never retried"
                await asyncio.sleep(0.3)
        finally:
            topology.pg.resume()
        outage = time.monotonic() - down_at
        back = time.monotonic()
        engine = create_engine(topology.database_url)
        deadline = time.monotonic() + 45
        while projected() < accepted:
            assert time.monotonic() < deadline, "the accepted command was never projected"
            await asyncio.sleep(0.5)
        caught_up = time.monotonic() - back
        engine.dispose()
        r = await c.get(f"/cases/{case}", headers=auth("kim"))
        assert r.status_code == 200 and r.json()["version"] >= accepted, r.text
        listed = await c.get("/cases", headers=auth("kim"))
        assert listed.status_code == 200
        record_figures(pg_outage_s=round(outage, 2), projected_after_restart_s=round(caught_up, 2))


# ---------------------------------------------------------------- 5. the logs


async def test_every_log_line_is_json_without_personal_data(topology: Topology) -> None:
    total = 0
    for name in ("api", "cases-1", "cases-2", "documents"):
        good, bad = topology.records(name)
        assert not bad, f"{name}: lines that are not JSON objects: {bad[:3]}"
        text_all = (topology.logs / f"{name}.log").read_text()
        leaked = [p for p in PERSONAL if p in text_all]
        assert not leaked, f"{name}.log holds personal data: {leaked}"
        assert all({"at", "level", "logger", "pid"} <= r.keys() for r in good)
        total += len(good)
    assert any(r.get("logger") == "onefamily.access" and "?" not in r["path"]
               for r in topology.records("api")[0])
    record_figures(log_lines_checked=total)
