"""`make rebuild-read-model` (rebuild.py) against the real stack (dev server, worker and API
processes; trusted-header mode, chosen on purpose: this is about the read model, not identity).

Cases in several stages, one escalated (a committee item) and one closed (its workflow
completed: its state comes from the run's result, the others' from the `case` Query); the read
model's case rows are deleted while the system runs; `python -m rebuild` (what the make target
runs) brings back the same rows: ids, stages, versions, documents, persons, committee items;
the API lists the same cases; a second run writes nothing.

Then the whole system's backup (`python -m backup`, what `make backup` runs) is taken while it
runs, restored into a fresh data dir (`--restore`), and a second stack started on it answers
the same: the list from the restored read model, each case live from the restored Temporal
history (decrypted with the restored key), and `rebuild --replace` finds every case.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.client import WorkflowExecutionStatus

from models import sealed
from tests.e2e_stack import Stack
from tests.factories import STAFF, case_create_body, plan_body
from workflows.client import connect
from workflows.codec import load_keys

ROOT = Path(__file__).resolve().parent.parent
PLAN = plan_body()
CASE_TABLES = ("cases", "case_persons", "committee_items")


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("rebuild")) / "data", auth="trusted-header")
    try:
        await s.start()
        async with httpx.AsyncClient(base_url=s.base_url, headers={"X-User": "admin"}) as c:
            for person in STAFF:
                assert (await c.post("/api/v1/staff", json=person)).status_code == 201
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
async def ids(stack: Stack) -> dict[str, str]:
    """The four cases, settled (see `settled`)."""
    seeded = await seed(stack)
    await settled(stack, seeded)
    return seeded


def http(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers={"X-User": user}, timeout=60)


async def seed(stack: Stack) -> dict[str, str]:
    now = datetime.now(UTC)
    ids: dict[str, str] = {}
    async with http(stack, "mia") as mia, http(stack, "anna") as anna, http(stack, "ole") as ole:
        async def command(client: httpx.AsyncClient, method: str, path: str, body=None) -> dict:
            r = await client.request(method, path, json=body)
            assert r.status_code in (200, 201), (path, r.text)
            return r.json()

        for key, name in (("referred", "Family Referred"), ("assigned", "Family Assigned"),
                          ("escalated", "Family Escalated"), ("closed", "Family Closed")):
            body = case_create_body(received_at=now.isoformat())
            body["family"]["name"] = name
            ids[key] = (await command(mia, "POST", "/cases", body))["id"]
        for key in ("assigned", "escalated"):
            await command(mia, "POST", f"/cases/{ids[key]}/coordinator", {"coordinator_id": "anna"})
        await command(anna, "POST", f"/cases/{ids['assigned']}/contacts",
                      {"kind": "phone", "at": now.isoformat(), "notes": "Mother called back"})
        cid = ids["escalated"]
        await command(anna, "POST", f"/cases/{cid}/team", {"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        await command(anna, "POST", f"/cases/{cid}/contacts", {"kind": "phone", "at": now.isoformat()})
        await command(anna, "POST", f"/cases/{cid}/assessment/meeting", {
            "at": (now + timedelta(days=3)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        await command(anna, "PUT", f"/cases/{cid}/assessment", {
            "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
            "child_views": "Emil wants to go to school."})
        await command(anna, "POST", f"/cases/{cid}/assessment/complete")
        await command(anna, "PUT", f"/cases/{cid}/plan", PLAN)
        await command(anna, "POST", f"/cases/{cid}/plan/votes", {"staff_id": "anna", "vote": "agree"})
        state = await command(ole, "POST", f"/cases/{cid}/plan/votes", {"staff_id": "ole", "vote": "agree"})
        assert state["stage"] == "escalated"
        await command(mia, "POST", f"/cases/{ids['closed']}/close", {"reason": "duplicate"})
    return ids


async def settled(stack: Stack, ids: dict[str, str]) -> None:
    """The closed case's workflow has completed (its state is its result) and every open one
    has been projected at its current version (nothing still on its way to the read model)."""
    client = await connect(stack.settings)
    deadline = time.monotonic() + 30
    while True:
        described = await client.get_workflow_handle(f"case-{ids['closed']}").describe()
        if described.status == WorkflowExecutionStatus.COMPLETED:
            break
        assert time.monotonic() < deadline, f"closed case still {described.status}"
        await asyncio.sleep(0.2)
    for key, cid in ids.items():
        state = await client.get_workflow_handle(f"case-{cid}").query("case") if key != "closed" else None
        while state is not None:
            (version,), = db_rows(stack, "SELECT version FROM cases WHERE id = ?", cid)
            if version == state["version"]:
                break
            assert time.monotonic() < deadline, f"{key}: read model at {version}, case at {state['version']}"
            await asyncio.sleep(0.2)


def db_rows(stack: Stack, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(stack.settings.db_url.split("///", 1)[1]) as conn:
        return conn.execute(sql, args).fetchall()


def opener(stack: Stack):
    """Decrypts a sealed column of the stack's read model with its data dir's key (a pure
    function: this test process keeps its own read-model keys)."""
    _, keys = load_keys(stack.settings)

    def open_value(purpose: str, value: str) -> str:
        _, key_id, blob = value.split(":", 2)
        data = base64.b64decode(blob)
        key = sealed.derive_key(keys[key_id], sealed.SEAL_INFO)
        return AESGCM(key).decrypt(data[:12], data[12:], f"v1:{key_id}:{purpose}".encode()).decode()
    return open_value


def snapshot(stack: Stack) -> dict:
    open_value = opener(stack)
    with sqlite3.connect(stack.settings.db_url.split("///", 1)[1]) as conn:
        cursor = conn.execute("SELECT * FROM cases ORDER BY id")
        columns = [d[0] for d in cursor.description]
        cases = {}
        for row in cursor.fetchall():
            record = dict(zip(columns, row, strict=True))
            record.pop("updated_at")  # when it was written: the rebuild's now
            record["family_name"] = open_value("cases.family_name", record["family_name"])
            record["document"] = json.loads(open_value("cases.document", json.loads(record["document"])))
            cases[record["id"]] = record
        persons = sorted(conn.execute("SELECT case_id, person_key FROM case_persons").fetchall())
        items = sorted(conn.execute("SELECT * FROM committee_items").fetchall())
    return {"cases": cases, "persons": persons, "items": items}


async def api_list(stack: Stack) -> list[tuple]:
    async with http(stack, "admin") as admin:
        r = await admin.get("/cases", params={"limit": 500})
        assert r.status_code == 200, r.text
        return sorted((i["id"], i["stage"], i["version"], i["family_name"], i["coordinator_id"])
                      for i in r.json()["items"])


def run(stack: Stack, module: str, *args: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or stack.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_rebuild(stack: Stack, *args: str) -> str:
    return run(stack, "rebuild", *args)


async def test_the_read_model_is_rebuilt_from_the_workflows(stack: Stack, ids: dict[str, str]) -> None:
    before, listed = snapshot(stack), await api_list(stack)
    assert set(before["cases"]) == set(ids.values()) and len(listed) == 4
    stages = {key: before["cases"][cid]["stage"] for key, cid in ids.items()}
    assert stages["referred"] == "referred" and stages["escalated"] == "escalated"
    assert stages["closed"] == "closed" and stages["assigned"] not in ("referred", "closed")
    assert len(before["items"]) == 1 and before["persons"]

    with sqlite3.connect(stack.settings.db_url.split("///", 1)[1]) as conn:  # the read model lost
        for table in CASE_TABLES:
            conn.execute(f"DELETE FROM {table}")
    assert await api_list(stack) == []

    out = run_rebuild(stack)
    assert "4 cases in Temporal (3 running, 1 closed); 4 written, 0 already current, 0 skipped, " \
           "0 failed" in out, out
    after = snapshot(stack)
    assert after["cases"].keys() == before["cases"].keys()
    for cid, row in before["cases"].items():
        assert after["cases"][cid] == row, cid  # stage, version, dates, hashes, the whole document
    assert after["persons"] == before["persons"] and after["items"] == before["items"]
    assert await api_list(stack) == listed

    again = run_rebuild(stack)  # the version check: nothing older or equal is written again
    assert "0 written, 4 already current" in again, again


async def test_a_backup_of_the_running_system_restores_and_starts_in_a_fresh_data_dir(
        stack: Stack, ids: dict[str, str], tmp_path: Path) -> None:
    listed = await api_list(stack)
    assert {i[0] for i in listed} == set(ids.values())
    out = run(stack, "backup", "--to", str(tmp_path / "backups"))
    (folder,) = (tmp_path / "backups").glob("onefamily-*")
    assert {p.name for p in folder.iterdir()} == {"temporal.db", "onefamily.db", "encryption.key",
                                                  "manifest.json"}, out

    restored = Stack(tmp_path / "restored", auth="trusted-header")
    out = run(restored, "backup", "--restore", str(folder))
    assert "restored payload key" in out and "rebuild-read-model ARGS=--replace" in out
    try:
        await restored.start()
        assert await api_list(restored) == listed  # the restored read model
        async with http(stack, "admin") as old, http(restored, "admin") as new:
            for cid, *_ in listed:  # live from the restored history, through the restored key
                a, b = (await old.get(f"/cases/{cid}")).json(), (await new.get(f"/cases/{cid}")).json()
                assert (b["id"], b["stage"], b["version"], b["family"]) == \
                    (a["id"], a["stage"], a["version"], a["family"])
        assert "4 cases in Temporal (3 running, 1 closed); 4 written" in run_rebuild(restored, "--replace")
        assert await api_list(restored) == listed
    finally:
        restored.stop()
