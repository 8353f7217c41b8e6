"""End to end over HTTP against the real dev server, worker and API processes: the README's
walk-through, bad input, a worker killed mid-case, and the dev server restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e_stack import Stack
from tests.factories import STAFF, case_create_body, plan_body

PLAN = plan_body()


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("e2e")) / "data", auth="trusted-header")
    try:
        await s.start()
        async with httpx.AsyncClient(base_url=s.base_url, headers={"X-User": "admin"}) as c:
            for person in STAFF:
                assert (await c.post("/api/v1/staff", json=person)).status_code == 201
        yield s
    finally:
        s.stop()


def http(stack: Stack, user: str = "anna") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers={"X-User": user},
                             timeout=60)


def iso(dt: datetime) -> str:
    return dt.isoformat()


async def poll(fn, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        result = await fn()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def new_case(c: httpx.AsyncClient, **referral) -> dict:
    r = await c.post("/cases", json=case_create_body(**referral))
    assert r.status_code == 201, r.text
    return r.json()


async def to_planning(stack: Stack, case_id: str, assign: bool = True) -> None:
    async with http(stack, "mia") as m, http(stack) as a:
        if assign:
            r = await m.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"})
            assert r.status_code == 200, r.text
        r = await a.post(f"/cases/{case_id}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        r = await a.post(f"/cases/{case_id}/contacts", json={"kind": "phone", "at": iso(now)})
        assert r.status_code == 200, r.text
        r = await a.post(f"/cases/{case_id}/assessment/meeting", json={
            "at": iso(now + timedelta(days=3)), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        assert r.status_code == 200 and r.json()["stage"] == "assessment", r.text
        r = await a.put(f"/cases/{case_id}/assessment", json={
            "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
            "child_views": "Emil wants to go to school without stomach aches."})
        assert r.status_code == 200, r.text
        r = await a.post(f"/cases/{case_id}/assessment/complete")
        assert r.status_code == 200 and r.json()["stage"] == "planning", r.text


async def test_walkthrough(stack: Stack) -> None:
    async with http(stack, "admin") as admin, http(stack) as anna, http(stack, "ole") as ole, \
            http(stack, "board") as board:
        body = case_create_body()
        r1 = await admin.post("/cases", json=body, headers={"Idempotency-Key": "walk-1"})
        r2 = await admin.post("/cases", json=body, headers={"Idempotency-Key": "walk-1"})
        assert r1.status_code == r2.status_code == 201
        case = r1.json()
        assert r2.json()["id"] == case["id"], "the same Idempotency-Key creates one case"
        assert case["stage"] == "referred"
        # The API's first answer is the workflow's first state (api/cases.py, new_case).
        assert case["outcome_rules"] is True and case["consent_rules"] is True
        kinds = {d["kind"]: d for d in case["deadlines"]}
        assert {"first_contact", "assessment"} <= set(kinds)
        # 20 Nov + 4 months = Saturday 20 Mar 2027 -> Monday 22 Mar, to its end (docs/deadlines.md).
        assert kinds["assessment"]["due_at"].startswith("2027-03-22T23:59:59")
        cid = case["id"]

        await to_planning(stack, cid)
        r = await anna.put(f"/cases/{cid}/plan", json=PLAN)
        assert r.status_code == 200 and r.json()["plan"]["version"] == 1
        assert (await anna.post(f"/cases/{cid}/plan/votes",
                                json={"staff_id": "anna", "vote": "agree"})).status_code == 200
        r = await ole.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        # 12000 jointly funded > team_funding_limit 10000: the committee decides.
        assert r.status_code == 200 and r.json()["stage"] == "escalated", r.text
        item_id = r.json()["escalations"][-1]["id"]

        async def on_agenda():
            items = (await board.get("/committee/agenda")).json()["items"]
            return [i for i in items if i["id"] == item_id]
        assert await poll(on_agenda), "the escalation must reach the committee agenda"

        r = await board.post(f"/committee/items/{item_id}/decision", json={
            "decision": "approved", "notes": "Approved",
            "funding": [{"department": "children_disability", "share": 0.6},
                        {"department": "adult_services", "share": 0.4}]})
        assert r.status_code == 200 and r.json()["stage"] == "planning", r.text
        r = await anna.post(f"/cases/{cid}/plan/family-response",
                            json={"approved": True, "comment": "This is our plan"})
        assert r.status_code == 200 and r.json()["stage"] == "active", r.text

        r = await anna.post(f"/cases/{cid}/status-meetings", json={
            "at": iso(datetime.now(UTC)), "participants": ["anna", "ole", "family"],
            "minutes": "Good progress", "goal_progress": [{"goal_id": "g1", "status": "on_track"}]})
        assert r.status_code == 200 and len(r.json()["status_meetings"]) == 1

        async def listed():
            r = await anna.get("/cases", params={"stage": "active", "coordinator_id": "anna",
                                                 "q": "jensen"})
            return [i for i in r.json()["items"] if i["id"] == cid]
        assert await poll(listed), "the read model lists the active case"

        r = await anna.post(f"/cases/{cid}/close", json={"reason": "goals_reached"})
        assert r.status_code == 200 and r.json()["stage"] == "closed"
        r = await anna.post(f"/cases/{cid}/contacts", json={"kind": "phone",
                                                           "at": iso(datetime.now(UTC))})
        assert r.status_code == 409, r.text
        r = await anna.get(f"/cases/{cid}")
        assert r.status_code == 200 and r.json()["stage"] == "closed"
        assert [h["event"] for h in r.json()["history"]][-1] == "stage_changed"


async def test_bad_input_gets_clear_4xx(stack: Stack) -> None:
    async with http(stack, "admin") as admin, http(stack) as anna, http(stack, "bo") as bo, \
            http(stack, "ole") as ole:
        r = await admin.post("/cases", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid" in r.json()["detail"]
        bad = case_create_body()
        bad["referral"]["received_at"] = "yesterday"
        r = await admin.post("/cases", json=bad)
        assert r.status_code == 422 and "received_at" in r.json()["detail"]
        async with http(stack, "nobody") as nobody:
            r = await nobody.post("/cases", json=case_create_body())
            assert r.status_code == 401 and "no active staff member" in r.json()["detail"]
            # 401 comes before 422 in the contract's order (credentials before the body).
            assert (await nobody.post("/cases", json={})).status_code == 401
        r = await anna.post("/cases/00000000-0000-0000-0000-000000000000/team",
                            json={"members": [{"staff_id": "ole", "discipline": "x",
                                               "department": "y"}]})
        assert r.status_code == 404
        assert (await anna.get("/cases/not-a-uuid")).status_code == 404

        cid = (await new_case(admin))["id"]
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ole", "discipline": "x", "department": "y"}]})
        assert r.status_code == 403, r.text  # not (yet) the coordinator
        r = await admin.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "ghost"})
        assert r.status_code == 422 and "ghost" in r.json()["detail"]
        r = await admin.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200
        r = await bo.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "bo"})
        assert r.status_code == 403 and "manager" in r.json()["detail"]
        r = await anna.post(f"/cases/{cid}/assessment/complete")
        assert r.status_code == 409 and "coordinator_assigned" in r.json()["detail"]
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ghost", "discipline": "x", "department": "y"}]})
        assert r.status_code == 422 and "ghost" in r.json()["detail"]
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}],
            "extra": 1})
        assert r.status_code == 422
        assert (await bo.get(f"/cases/{cid}")).status_code == 403

        await to_planning(stack, cid, assign=False)
        assert (await anna.put(f"/cases/{cid}/plan", json=PLAN)).status_code == 200
        r = await bo.post(f"/cases/{cid}/plan/votes", json={"staff_id": "bo", "vote": "agree"})
        assert r.status_code == 403 and "core team" in r.json()["detail"]
        r = await anna.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        assert r.status_code == 403, r.text  # a vote is cast by the voter
        ok = await anna.post(f"/cases/{cid}/plan/votes", json={"staff_id": "anna", "vote": "agree"})
        assert ok.status_code == 200
        # A keyless repeat with nothing in between is a retry: the first answer (domain/retries.py).
        r = await anna.post(f"/cases/{cid}/plan/votes", json={"staff_id": "anna", "vote": "agree"})
        assert r.status_code == 200 and r.json()["version"] == ok.json()["version"], r.text
        # Sent again on purpose (a key of its own): refused.
        r = await anna.post(f"/cases/{cid}/plan/votes", json={"staff_id": "anna", "vote": "agree"},
                            headers={"Idempotency-Key": "vote-again"})
        assert r.status_code == 409 and "already voted" in r.json()["detail"]
        r = await ole.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "maybe"})
        assert r.status_code == 422
        # Nothing half-applied: the refused commands left the case as it was.
        after = (await anna.get(f"/cases/{cid}")).json()
        assert after["version"] == ok.json()["version"]


async def test_twenty_concurrent_commands_to_one_case(stack: Stack) -> None:
    async with http(stack, "admin") as admin, http(stack) as anna:
        cid = (await new_case(admin))["id"]
        assert (await admin.post(f"/cases/{cid}/coordinator",
                                 json={"coordinator_id": "anna"})).status_code == 200
        now = datetime.now(UTC)
        results = await asyncio.gather(*[
            anna.post(f"/cases/{cid}/contacts", json={"kind": "phone", "at": iso(now),
                                                      "notes": f"call {n}"})
            for n in range(20)])
        assert [r.status_code for r in results] == [200] * 20
        assert len((await anna.get(f"/cases/{cid}")).json()["contacts"]) == 20


async def test_worker_killed_mid_case_continues(stack: Stack) -> None:
    async with http(stack, "admin") as admin, http(stack) as anna:
        cid = (await new_case(admin))["id"]
        await to_planning(stack, cid)
        stack.kill_worker()
        key = {"Idempotency-Key": "plan-while-no-worker"}
        pending = asyncio.create_task(anna.put(f"/cases/{cid}/plan", json=PLAN, headers=key))
        await asyncio.sleep(1.0)
        assert not pending.done(), "with no worker the command waits, it is not lost"
        stack.start_worker()
        r = await pending
        # Within its deadline (ONEFAMILY_COMMAND_TIMEOUT) the command answers, or says it may
        # still be applied; the retry with its key gets the first answer (issue 13).
        deadline = time.monotonic() + 30
        while r.status_code == 503 and time.monotonic() < deadline:
            assert "may still be applied later" in r.json()["detail"], r.text
            r = await anna.put(f"/cases/{cid}/plan", json=PLAN, headers=key)
        assert r.status_code == 200 and r.json()["plan"]["version"] == 1, r.text
        case = (await anna.get(f"/cases/{cid}")).json()
        assert case["stage"] == "planning" and case["assessment_completed_at"]


async def test_dev_server_restart_keeps_cases(stack: Stack) -> None:
    async with http(stack, "admin") as admin, http(stack) as anna:
        cid = (await new_case(admin))["id"]
        assert (await admin.post(f"/cases/{cid}/coordinator",
                                 json={"coordinator_id": "anna"})).status_code == 200
        before = (await anna.get(f"/cases/{cid}")).json()
        stack.temporal.stop()
        stack.temporal.start()
        await stack.temporal.wait_ready()
        await stack.wait_ready()

        async def readable():
            r = await anna.get(f"/cases/{cid}")
            return r.json() if r.status_code == 200 else None
        after = await poll(readable, timeout=60)
        assert after and after["version"] == before["version"]
        assert after["deadlines"] == before["deadlines"]
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200 and r.json()["stage"] == "team_formed", r.text


async def test_reads_and_writes_are_audited(stack: Stack) -> None:
    from sqlmodel import Session, select

    from models.db import get_engine
    from models.tables import AuditRow

    async with http(stack, "admin") as admin:
        cid = (await new_case(admin))["id"]
        assert (await admin.get(f"/cases/{cid}")).status_code == 200
    with Session(get_engine(stack.settings.db_url)) as session:
        rows = session.exec(select(AuditRow).where(AuditRow.case_id == cid)).all()
    assert [(r.actor, r.method, r.outcome) for r in rows] == [("admin", "GET", 200)]


async def test_backdated_referral_is_overdue_and_stuck_within_seconds(stack: Stack) -> None:
    async with http(stack, "mia") as mia:
        received = (datetime.now(UTC) - timedelta(days=150)).isoformat()
        case = await new_case(mia, received_at=received)
        cid = case["id"]

        async def fired():
            state = (await mia.get(f"/cases/{cid}")).json()
            by_kind = {d["kind"]: d for d in state["deadlines"]}
            done = all(by_kind[k]["status"] == "overdue" for k in ("first_contact", "assessment"))
            return state if done and by_kind["first_contact"]["reminders_sent"] else None
        state = await poll(fired, timeout=20)
        assert state, "the overdue deadlines fire by themselves"
        first = next(d for d in state["deadlines"] if d["kind"] == "first_contact")
        assert [r["kind"] for r in first["reminders_sent"] if not r["skipped"]][:1] == ["overdue"]
        assert first["legal_basis"]

        async def listed_overdue():
            r = await mia.get("/cases", params={"overdue": "true"})
            return [i for i in r.json()["items"] if i["id"] == cid]
        assert await poll(listed_overdue)

        async def stuck():
            items = (await mia.get("/dashboard/stuck")).json()["items"]
            return next((i for i in items if i["case_id"] == cid), None)
        entry = await poll(stuck)
        assert entry, "a backdated referral appears in the stuck list"
        assert {"overdue:first_contact", "overdue:assessment"} <= {r["kind"] for r in entry["reasons"]}


async def test_the_documents_worker_yields_the_cpu_to_the_commands(stack: Stack) -> None:
    """A PDF costs ~0.1 s of CPU, a command ~20 ms: the documents worker runs niced
    (ONEFAMILY_DOCUMENT_WORKER_NICE, default 10), the case worker and the API do not."""
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, stack.documents_proc.pid) == min(base + 10, 19)
    assert os.getpriority(os.PRIO_PROCESS, stack.worker_proc.pid) == base
    assert os.getpriority(os.PRIO_PROCESS, stack.api_proc.pid) == base
