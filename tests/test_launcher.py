"""The embedded Temporal dev server: starts, registers our search attributes, restarts on
the same SQLite file (the --search-attribute flags must be repeatable), also after a crash.
The launcher supervises (issue 13): a dead child is restarted with backoff and logged, the
others keep serving, SIGTERM stops them all."""

import asyncio
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from temporalio.api.operatorservice.v1 import (
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.client import Client

import launcher
import logjson
from launcher import (
    HEALTHY_AFTER,
    EmbeddedTemporal,
    LauncherError,
    Supervised,
    Supervisor,
    free_port,
    spawn,
    stop_process,
    wait_for_temporal,
)
from models.search import CLI_TYPES, STAGE
from tests.factories import STAFF, case_create_body


async def _custom_attributes(client: Client, namespace: str) -> set[str]:
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return set(resp.custom_attributes)


async def test_embedded_temporal_restarts_on_same_db(tmp_path: Path) -> None:
    server = EmbeddedTemporal(tmp_path / "data", free_port(), free_port(), "onefamily-test")
    try:
        server.start()
        client = await server.wait_ready()
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)
        server.stop()
        assert not server.running
        assert server.db_path.exists()

        server.start()  # same db file, same --search-attribute flags
        client = await server.wait_ready()
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)

        server.kill()  # unclean shutdown: SQLite must recover
        server.start()
        await server.wait_ready()

        # External-server path: a missing attribute gets registered again.
        await client.operator_service.remove_search_attributes(
            RemoveSearchAttributesRequest(namespace=server.namespace, search_attributes=[STAGE.name])
        )
        client = await wait_for_temporal(server.target, server.namespace, register=True)
        assert set(CLI_TYPES) <= await _custom_attributes(client, server.namespace)

        # A second server on the same port is refused before it starts.
        with pytest.raises(LauncherError, match="in use"):
            EmbeddedTemporal(tmp_path / "clash", server.port, free_port()).start()
    finally:
        server.stop()
    assert not server.running


async def test_wait_ready_reports_a_dead_server(tmp_path: Path) -> None:
    server = EmbeddedTemporal(tmp_path, free_port(), free_port())
    server.db_path.mkdir()  # SQLite can't open a directory: the server exits at once
    server.start()
    try:
        with pytest.raises(LauncherError, match="exited with code"):
            await server.wait_ready(timeout=20)
    finally:
        server.stop()


# ---------------------------------------------------------------- supervision (issue 13)


class _FakeProc:
    """Stands in for a Popen: dies when told to."""

    pids = iter(range(40_000, 50_000))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, _timeout: float | None = None) -> int | None:
        return self.returncode


def test_supervisor_backoff_doubles_to_the_cap_and_resets_after_a_healthy_run(caplog) -> None:
    now = [1000.0]
    supervisor = Supervisor(clock=lambda: now[0])
    procs: list[_FakeProc] = []

    def start() -> _FakeProc:
        procs.append(_FakeProc())
        return procs[-1]

    reaped: list[int] = []
    child = supervisor.add(Supervised("worker", start, reap_fn=lambda p: reaped.append(p.pid)))
    supervisor.start(child)
    delays = []
    with caplog.at_level(logging.INFO, logger="onefamily.launcher"):
        for _ in range(9):
            procs[-1].returncode = -9  # SIGKILL, right after its start
            supervisor.tick()
            assert child.proc is None and child.restart_at is not None
            delays.append(child.restart_at - now[0])
            now[0] = child.restart_at - 0.01
            supervisor.tick()
            assert child.proc is None  # not before its time
            now[0] = child.restart_at
            supervisor.tick()
            assert child.proc is procs[-1] and child.started_at == now[0]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert reaped == [p.pid for p in procs[:-1]]
    # A run of a minute or more: the next restart is quick again.
    now[0] += HEALTHY_AFTER
    procs[-1].returncode = 3
    supervisor.tick()
    assert child.restart_at - now[0] == 0.5

    died = [r for r in caplog.records if getattr(r, "event", None) == "child_died"]
    restarted = [r for r in caplog.records if getattr(r, "event", None) == "child_restarted"]
    assert len(died) == 10 and len(restarted) == 9
    assert died[0].child == "worker" and died[0].signal == "SIGKILL" and died[0].restart_in_s == 0.5
    assert died[-1].exit_code == 3 and died[-1].uptime_s == HEALTHY_AFTER
    line = json.loads(logjson.JsonFormatter("launcher").format(died[0]))
    assert {"event", "child", "child_pid", "signal", "uptime_s", "restart_in_s", "deaths"} <= set(line)
    assert line["msg"].startswith("worker (pid ") and "restarting in 0.5 s" in line["msg"]


def test_a_child_that_cannot_be_restarted_is_tried_again_later(caplog) -> None:
    now = [0.0]
    supervisor = Supervisor(clock=lambda: now[0])
    first = _FakeProc()
    attempts = iter([LauncherError("port 1234 on 127.0.0.1 is already in use")])

    def start() -> _FakeProc:
        error = next(attempts, None)
        if error is not None:
            raise error
        return _FakeProc()

    child = supervisor.add(Supervised("temporal", start, reap_fn=lambda _p: None))
    child.proc, child.started_at = first, 0.0
    first.returncode = 1
    supervisor.tick()  # died: restart in 0.5 s
    now[0] = 0.5
    with caplog.at_level(logging.INFO, logger="onefamily.launcher"):
        supervisor.tick()  # the port is taken: next try 1 s later
        assert child.proc is None and child.restart_at == 1.5
        now[0] = 1.5
        supervisor.tick()
    assert child.proc is not None and child.proc.poll() is None
    assert [getattr(r, "event", None) for r in caplog.records] == [
        "child_died", "child_restart_failed", "child_restarted"]


def test_stop_all_ends_the_children_in_reverse_start_order() -> None:
    supervisor, stopped = Supervisor(), []
    for name in ("temporal", "worker", "documents worker", "api"):
        child = supervisor.add(Supervised(name, _FakeProc, stop_fn=lambda _p, n=name: stopped.append(n)))
        supervisor.start(child)
    supervisor.stop_all()
    assert stopped == ["api", "documents worker", "worker", "temporal"]
    assert all(c.proc is None for c in supervisor.children)


def test_ctrl_c_while_a_child_is_spawned_waits_until_it_is_recorded() -> None:
    previous = signal.signal(signal.SIGINT, launcher._on_signal)
    reached = False
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGINT"), launcher.calm():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler ran here and did not interrupt
            reached = True
        assert reached
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):  # outside calm(): at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- `python -m launcher`, end to end

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"temporal": "start-dev", "worker": "cases", "documents worker": "documents", "api": "uvicorn"}


def _children(parent: int) -> dict[str, int]:
    """The launcher's direct children by kind, from /proc."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) != parent or fields[0] == "Z":
            continue
        words = [a.decode(errors="replace") for a in argv]
        for kind, mark in KINDS.items():
            if mark in words or (mark == "uvicorn" and "uvicorn" in words):
                found[kind] = int(entry.name)
    return found


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # nobody left in its process group either
    except ProcessLookupError:
        return True
    return False


async def _until(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_launcher_restarts_each_child_it_loses_and_stops_all_on_sigterm(tmp_path: Path) -> None:
    began = time.monotonic()
    data = tmp_path / "data"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEFAMILY_", "TEMPORAL_"))}
    env.pop("DATABASE_URL", None)
    env.update(ONEFAMILY_DATA_DIR=str(data), ONEFAMILY_API_PORT=str(api_port),
               ONEFAMILY_TEMPORAL_PORT=str(free_port()), ONEFAMILY_TEMPORAL_UI_PORT=str(free_port()),
               ONEFAMILY_AUTH="trusted-header")
    out = tmp_path / "launcher.out"
    with open(out, "ab") as log:
        launched = spawn([sys.executable, "-m", "launcher"], env=env, cwd=ROOT, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{api_port}"
    seen: set[int] = set()
    figures: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as root, \
                httpx.AsyncClient(base_url=base + "/api/v1", headers={"X-User": "anna"}, timeout=30) as anna:

            async def ready() -> bool:
                try:
                    return (await root.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await _until("the system to come up", ready, 60)
            figures["start"] = time.monotonic() - began
            for person in STAFF:
                r = await root.post("/api/v1/staff", json=person, headers={"X-User": "admin"})
                assert r.status_code == 201, r.text
            r = await anna.post("/cases", json=case_create_body())
            assert r.status_code == 201, r.text
            case_id = r.json()["id"]
            r = await root.post(f"/api/v1/cases/{case_id}/coordinator", json={"coordinator_id": "anna"},
                                headers={"X-User": "mia"})
            assert r.status_code == 200, r.text
            keys: list[str] = []
            late: dict[str, int] = {}  # key -> how many 503s before its 200

            async def contact(key: str) -> None:
                """One command on the case, retried with its key until it is answered."""
                keys.append(key)

                async def answered() -> bool:
                    try:
                        r = await anna.post(f"/cases/{case_id}/contacts", headers={"Idempotency-Key": key},
                                            json={"kind": "phone", "at": datetime.now(UTC).isoformat()})
                    except httpx.TransportError:
                        return False
                    assert r.status_code in (200, 503), r.text
                    if r.status_code == 503:  # the deadline: retried with the same key
                        assert "a retry with the same Idempotency-Key is safe" in r.json()["detail"]
                        late[key] = late.get(key, 0) + 1
                    return r.status_code == 200
                await _until(f"command {key}", answered, 40)

            await contact("before")
            for kind in ("api", "worker", "temporal"):
                before = _children(launched.pid)
                assert set(before) == set(KINDS), before
                seen.update(before.values())
                os.kill(before[kind], signal.SIGKILL)
                killed = time.monotonic()

                async def replaced(kind=kind, old=before[kind]) -> bool:
                    now = _children(launched.pid)
                    return kind in now and now[kind] != old

                await _until(f"a new {kind}", replaced, 40)
                figures[f"{kind} respawned"] = time.monotonic() - killed
                await _until(f"ready after the {kind} was killed", ready, 40)
                figures[f"{kind} ready"] = time.monotonic() - killed
                await contact(f"after-{kind}")
                figures[f"{kind} command"] = time.monotonic() - killed
                after = _children(launched.pid)
                assert {k: v for k, v in after.items() if k != kind} == \
                       {k: v for k, v in before.items() if k != kind}, "the others kept running"

            r = await anna.get(f"/cases/{case_id}")
            assert r.status_code == 200 and r.json()["coordinator_id"] == "anna", r.text
            assert len(r.json()["contacts"]) == len(keys), "each command applied once, none lost"
        seen.update(_children(launched.pid).values())
        launched.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert launched.wait(40) == 0
        figures["sigterm"] = time.monotonic() - stopping
        assert all(_gone(pid) for pid in seen), "no orphans, of this run or of the killed ones"
    finally:
        stop_process(launched)
    lines = [json.loads(line) for line in out.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    events = [(line.get("event"), line.get("child")) for line in lines
              if line.get("logger") == "onefamily.launcher"]
    for kind in ("api", "worker", "temporal"):
        assert ("child_died", kind) in events and ("child_restarted", kind) in events, events
    print("\nlauncher figures (s): " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
          + f"; 503s before the answer: {late}")
    assert time.monotonic() - began < 90
