"""Need-to-know over HTTP against the real stack (issue 8, DESIGN §9): one test per finding
about who sees or does what. Identity is not the subject here, so the stack runs in
trusted-header mode on purpose: `X-User` from 127.0.0.1 is the caller.

Two units: A (`children_disability`: coordinators anna and bo, team member ole, manager mia)
and B (`adult_disability`: coordinator carl, manager mads); `board` is the committee, and
`an_a` a team member whose id is a LIKE pattern that matches `anna`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e_stack import Stack
from tests.factories import case_create_body, plan_body

UNIT_A, UNIT_B = "children_disability", "adult_disability"
STAFF = [
    ("anna", ["coordinator"], UNIT_A), ("bo", ["coordinator"], UNIT_A),
    ("ole", ["team_member"], UNIT_A), ("mia", ["manager"], UNIT_A),
    ("board", ["committee"], UNIT_A), ("an_a", ["team_member"], UNIT_A),
    ("carl", ["coordinator"], UNIT_B), ("mads", ["manager"], UNIT_B),
]
PLAN = plan_body()
# Every case this module registers, with its unit: what each unit's lists may show.
CREATED: dict[str, str] = {}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("need-to-know")) / "data", auth="trusted-header")
    try:
        await s.start()
        async with httpx.AsyncClient(base_url=s.base_url, headers={"X-User": "admin"}) as c:
            for sid, roles, unit in STAFF:
                r = await c.post("/api/v1/staff", json={
                    "id": sid, "name": sid.title(), "discipline": "social_worker",
                    "department": unit, "unit": unit, "roles": roles})
                assert r.status_code == 201, r.text
        yield s
    finally:
        s.stop()


def http(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers={"X-User": user}, timeout=60)


def pages(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url, headers={"X-User": user}, timeout=60)


def iso(dt: datetime) -> str:
    return dt.isoformat()


def referral(family: str, child: str = "Emil", birth_date: str = "2015-03-02") -> dict:
    body = case_create_body()
    body["family"]["name"] = family
    body["family"]["members"] = [
        {"name": child, "role": "child", "birth_date": birth_date, "diagnoses": ["ADHD"]},
        {"name": f"Parent of {child}", "role": "parent", "birth_date": "1985-01-10"}]
    return body


async def register(c: httpx.AsyncClient, unit: str, body: dict, key: str | None = None) -> dict:
    headers = {"Idempotency-Key": key} if key else {}
    r = await c.post("/cases", json=body, headers=headers)
    assert r.status_code == 201, r.text
    CREATED[r.json()["id"]] = unit
    return r.json()


def unit_cases(unit: str) -> set[str]:
    return {cid for cid, u in CREATED.items() if u == unit}


@pytest.fixture(scope="module")
async def escalated(stack: Stack) -> dict:
    """A case of unit A, coordinated by anna with ole on the team, waiting for the committee."""
    async with http(stack, "mia") as mia, http(stack, "anna") as anna, http(stack, "ole") as ole:
        case = await register(mia, UNIT_A, referral("Family Escalated", child="Asta"))
        cid = case["id"]
        r = await mia.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text
        r = await anna.post(f"/cases/{cid}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        r = await anna.post(f"/cases/{cid}/contacts", json={"kind": "phone", "at": iso(now)})
        assert r.status_code == 200, r.text
        r = await anna.post(f"/cases/{cid}/assessment/meeting", json={
            "at": iso(now + timedelta(days=3)), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        assert r.status_code == 200, r.text
        r = await anna.put(f"/cases/{cid}/assessment", json={
            "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
            "child_views": "Asta wants to go to school without stomach aches."})
        assert r.status_code == 200, r.text
        assert (await anna.post(f"/cases/{cid}/assessment/complete")).status_code == 200
        assert (await anna.put(f"/cases/{cid}/plan", json=PLAN)).status_code == 200
        assert (await anna.post(f"/cases/{cid}/plan/votes",
                                json={"staff_id": "anna", "vote": "agree"})).status_code == 200
        r = await ole.post(f"/cases/{cid}/plan/votes", json={"staff_id": "ole", "vote": "agree"})
        assert r.status_code == 200 and r.json()["stage"] == "escalated", r.text
        return {"id": cid, "item_id": r.json()["escalations"][-1]["id"]}


# ---------------------------------------------------------------- Idempotency-Key


async def test_a_replayed_idempotency_key_of_another_caller_gets_no_foreign_case(stack: Stack) -> None:
    async with http(stack, "mia") as mia, http(stack, "carl") as carl:
        body = referral("Family Replay", child="Rune")
        first = await register(mia, UNIT_A, body, key="shared-key-1")
        again = await mia.post("/cases", json=body, headers={"Idempotency-Key": "shared-key-1"})
        assert again.status_code == 201 and again.json()["id"] == first["id"], "same caller: same case"
        # Another caller replays the key: a new request, checked like any other.
        other = await carl.post("/cases", json=body, headers={"Idempotency-Key": "shared-key-1"})
        assert other.status_code == 201, other.text
        assert other.json()["id"] != first["id"], "another caller's replay returned the first case"
        CREATED[other.json()["id"]] = UNIT_B
        assert (await carl.get(f"/cases/{first['id']}")).status_code == 403


async def test_a_replayed_command_key_of_another_caller_gets_no_foreign_case(stack: Stack) -> None:
    async with http(stack, "mia") as mia, http(stack, "anna") as anna, http(stack, "bo") as bo:
        case = await register(mia, UNIT_A, referral("Family Command Replay", child="Sune"))
        cid = case["id"]
        r = await mia.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text
        contact = {"kind": "phone", "at": iso(datetime.now(UTC))}
        key = {"Idempotency-Key": "contact-key-1"}
        r1 = await anna.post(f"/cases/{cid}/contacts", json=contact, headers=key)
        assert r1.status_code == 200, r1.text
        r2 = await anna.post(f"/cases/{cid}/contacts", json=contact, headers=key)
        assert r2.status_code == 200 and r2.json()["version"] == r1.json()["version"], \
            "the same caller's replay answers the first answer"
        assert len(r2.json()["contacts"]) == 1
        # bo does not work on the case: the same key is a new command from him, refused.
        foreign = await bo.post(f"/cases/{cid}/contacts", json=contact, headers=key)
        assert foreign.status_code == 403, foreign.text
        assert "family" not in foreign.json() and "contacts" not in foreign.json()


# ---------------------------------------------------------------- managers of another unit


async def test_a_manager_of_another_unit_cannot_read_close_decide_or_assign(
        stack: Stack, escalated: dict) -> None:
    cid, item_id = escalated["id"], escalated["item_id"]
    async with http(stack, "mads") as mads, http(stack, "mia") as mia, http(stack, "board") as board:
        assert (await mads.get(f"/cases/{cid}")).status_code == 403
        r = await mads.post(f"/cases/{cid}/close", json={"reason": "other"})
        assert r.status_code == 403, r.text
        r = await mads.post(f"/committee/items/{item_id}/decision", json={"decision": "rejected"})
        assert r.status_code == 403, r.text
        r = await mads.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "carl"})
        assert r.status_code == 403, r.text
        for path in (f"/cases/{cid}/documents", f"/notifications?case_id={cid}"):
            assert (await mads.get(path)).status_code == 403, path
        async with pages(stack, "mads") as browser:
            assert (await browser.get(f"/cases/{cid}")).status_code == 403
        # Nothing changed; the unit's own manager reads it.
        case = (await mia.get(f"/cases/{cid}")).json()
        assert case["stage"] == "escalated" and case["coordinator_id"] == "anna"
        # A manager assigns coordinators of their own unit only.
        fresh = await register(mia, UNIT_A, referral("Family Assign", child="Tove"))
        r = await mia.post(f"/cases/{fresh['id']}/coordinator", json={"coordinator_id": "carl"})
        assert r.status_code == 403, r.text
        r = await mia.post(f"/cases/{fresh['id']}/coordinator", json={"coordinator_id": "bo"})
        assert r.status_code == 200, r.text
        # The committee decides the item of the case it may read.
        r = await board.post(f"/committee/items/{item_id}/decision", json={
            "decision": "approved", "notes": "Approved",
            "funding": [{"department": "children_disability", "share": 0.6},
                        {"department": "adult_services", "share": 0.4}]})
        assert r.status_code == 200 and r.json()["stage"] == "planning", r.text


async def test_only_an_administrator_changes_the_municipal_policy(stack: Stack) -> None:
    async with http(stack, "mads") as mads, http(stack, "mia") as mia, http(stack, "admin") as admin:
        cap = (await mads.get("/policy")).json()["caseload_cap"]
        change = {"overrides": {"caseload_cap": cap + 100}, "note": "raise the cap"}
        assert (await mads.put("/policy", json=change)).status_code == 403
        assert (await mia.put("/policy", json=change)).status_code == 403
        assert (await admin.get("/policy")).json()["caseload_cap"] == cap
        r = await admin.put("/policy", json={"overrides": {"caseload_cap": cap}, "note": "same cap"})
        assert r.status_code == 200 and r.json()["caseload_cap"] == cap


# ---------------------------------------------------------------- the committee


async def test_a_committee_member_reads_only_cases_with_an_escalation_item(
        stack: Stack, escalated: dict) -> None:
    async with http(stack, "mia") as mia, http(stack, "board") as board:
        plain = await register(mia, UNIT_A, referral("Family Not Escalated", child="Ulla"))
        assert (await board.get(f"/cases/{plain['id']}")).status_code == 403
        assert (await board.get(f"/cases/{plain['id']}/documents")).status_code == 403
        assert (await board.get(f"/cases/{escalated['id']}")).status_code == 200  # decided by board
        listed = {i["id"] for i in (await board.get("/cases", params={"limit": 500})).json()["items"]}
        assert plain["id"] not in listed and escalated["id"] in listed


# ---------------------------------------------------------------- LIKE patterns


async def test_a_staff_id_with_an_underscore_sees_no_foreign_cases(stack: Stack, escalated: dict) -> None:
    async with http(stack, "an_a") as an_a:
        listed = (await an_a.get("/cases", params={"limit": 500})).json()
        assert listed == {"items": [], "total": 0}, "`an_a` matched anna's cases as a LIKE pattern"
        assert (await an_a.get("/dashboard/stuck")).json()["total"] == 0
        notes = (await an_a.get("/notifications")).json()["items"]
        assert not {n["case_id"] for n in notes} & set(CREATED)
        assert (await an_a.get(f"/cases/{escalated['id']}")).status_code == 403
    async with pages(stack, "an_a") as browser:
        html = (await browser.get("/cases")).text
        assert escalated["id"] not in html


# ---------------------------------------------------------------- possible duplicates


def _duplicate_flags(case: dict) -> list[dict]:
    return [f for f in case["flags"] if f["kind"] == "possible_duplicate"]


async def test_the_duplicate_hint_is_shown_only_to_the_units_manager(stack: Stack) -> None:
    person = {"child": "Liv", "birth_date": "2016-01-01"}
    async with http(stack, "mia") as mia, http(stack, "carl") as carl, \
            http(stack, "mads") as mads, http(stack, "bo") as bo, http(stack, "admin") as admin:
        first = await register(mia, UNIT_A, referral("Family Holm", **person))
        # A coordinator of another unit registers a referral naming the same child.
        second = await register(carl, UNIT_B, referral("Family Holm-Berg", **person))
        assert _duplicate_flags(second) == [], "the answer named another team's case to carl"
        assert _duplicate_flags((await carl.get(f"/cases/{second['id']}")).json()) == []
        # The manager of the second case's unit (and admin) see it.
        for reader in (mads, admin):
            flags = _duplicate_flags((await reader.get(f"/cases/{second['id']}")).json())
            assert flags and first["id"] in flags[0]["case_ids"]
        assert (await mia.get(f"/cases/{second['id']}")).status_code == 403
        # Within one unit too: the coordinator does not see it, the unit's manager does.
        third = await register(bo, UNIT_A, referral("Family Holm", **person))
        assert _duplicate_flags(third) == []
        assert _duplicate_flags((await bo.get(f"/cases/{third['id']}")).json()) == []
        flags = _duplicate_flags((await mia.get(f"/cases/{third['id']}")).json())
        assert flags and first["id"] in flags[0]["case_ids"]
        assert (await mads.get(f"/cases/{third['id']}")).status_code == 403


# ---------------------------------------------------------------- committee data and caseload


async def test_team_members_and_coordinators_get_403_on_agenda_funding_and_caseload(stack: Stack) -> None:
    paths = ["/committee/agenda", "/committee/funding", "/committee/meetings", "/dashboard/caseload"]
    for user in ("ole", "anna"):
        async with http(stack, user) as c:
            for path in paths:
                assert (await c.get(path)).status_code == 403, (user, path)
    async with http(stack, "mia") as mia, http(stack, "board") as board:
        for path in paths:
            assert (await mia.get(path)).status_code == 200, path
        assert (await board.get("/committee/agenda")).status_code == 200
        assert (await board.get("/dashboard/caseload")).status_code == 403
    async with pages(stack, "ole") as browser:
        for path in ("/stuck", "/reports", "/reports/2026-11"):
            assert (await browser.get(path)).status_code == 403, path


# ---------------------------------------------------------------- lists and counts


async def test_lists_and_counts_of_another_units_manager_show_nothing_of_this_unit(
        stack: Stack, escalated: dict) -> None:
    async with http(stack, "carl") as carl:
        await register(carl, UNIT_B, referral("Family Of Unit B", child="Vera"))
    mine, theirs = unit_cases(UNIT_B), unit_cases(UNIT_A)
    assert mine and theirs
    async with http(stack, "mads") as mads:
        listed = (await mads.get("/cases", params={"limit": 500})).json()
        assert {i["id"] for i in listed["items"]} == mine and listed["total"] == len(mine)
        stuck = (await mads.get("/dashboard/stuck", params={"limit": 1000})).json()
        assert not {i["case_id"] for i in stuck["items"]} & theirs
        caseload = (await mads.get("/dashboard/caseload")).json()
        assert {i["coordinator_id"] for i in caseload["items"]} == {"carl"}
        agenda = (await mads.get("/committee/agenda", params={"status": "all"})).json()
        assert agenda == {"items": [], "total": 0}
        funding = (await mads.get("/committee/funding")).json()
        assert funding["total"] == 0
        notes = (await mads.get("/notifications", params={"limit": 500})).json()["items"]
        assert not {n["case_id"] for n in notes} & theirs
    async with pages(stack, "mads") as browser:
        overview = (await browser.get("/dashboard")).text
        total = int(re.search(r'id="open-total">(\d+)<', overview).group(1))
        assert total == len(mine), "the overview counted another unit's cases"
        for path in ("/", "/dashboard", "/cases", "/stuck"):
            html = (await browser.get(path)).text
            assert not [cid for cid in theirs if cid in html], path
    # The unit's own manager sees their unit, and not unit B.
    async with http(stack, "mia") as mia:
        listed = {i["id"] for i in (await mia.get("/cases", params={"limit": 500})).json()["items"]}
        assert theirs <= listed and not listed & mine
        caseload = {i["coordinator_id"] for i in (await mia.get("/dashboard/caseload")).json()["items"]}
        assert caseload == {"anna", "bo"}
        agenda = (await mia.get("/committee/agenda", params={"status": "all"})).json()["items"]
        assert escalated["item_id"] in {i["id"] for i in agenda}


# ---------------------------------------------------------------- the codec


async def test_the_codec_decrypts_only_for_an_administrator(stack: Stack) -> None:
    payloads = {"payloads": []}
    ui = f"http://127.0.0.1:{stack.settings.temporal_ui_port}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as c:
        # The Temporal UI's Origin from this machine is no identity.
        r = await c.post("/codec/decode", json=payloads, headers={"Origin": ui, "X-Namespace": "default"})
        assert r.status_code == 401
        r = await c.post("/codec/decode", json=payloads, headers={"X-User": "mia"})
        assert r.status_code == 403
        r = await c.post("/codec/decode", json=payloads, headers={"X-User": "admin"})
        assert r.status_code == 200
