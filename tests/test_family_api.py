"""The family's JSON API (DESIGN §11, issue 10) against the real stack: the family view and
what is never in it, the family's commands through the case workflow (the plan approved from
the family's session moves the case as the coordinator's family-response does), calendar
files, documents, consents — and a family session that never reads another family's case, on
every family endpoint and every staff endpoint."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from domain import family_view as fv
from domain.lifecycle import Ctx, new_case
from domain.policy import DK
from models.tables_outbox import DocumentRow, NotificationRow
from tests.factories import actor, case_create
from tests.family_world import World, family_world


@pytest.fixture(scope="module")
async def world(ts_env: WorkflowEnvironment,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with family_world(ts_env, Path(tmp_path_factory.mktemp("family-api"))) as w:
        yield w


def _document(world: World, case_id: str, kind: str, version: int = 99, text: str = "") -> str:
    """A stored document (a version the case's own rendering never reaches)."""
    doc_id = uuid.uuid4().hex
    with Session(world.engine) as s:
        s.add(DocumentRow(id=doc_id, case_id=case_id, kind=kind, version=version, language="en",
                          content_hash=doc_id[:16], html=f"<html><body>{kind} {text}</body></html>",
                          pdf=b"%PDF-1.4 test", created_at=datetime.now(UTC), created_by="system"))
        s.commit()
    return doc_id


@pytest.fixture(scope="module")
async def alpha(world: World) -> dict:
    """Family Alpha's case, waiting for the family's approval of plan v1; its family signed in."""
    case = await world.register("Family Alpha", child="Asta")
    await world.to_planning(case["id"])
    family, csrf = await world.family_session(case)
    await _message(world, case["id"], "plan_for_approval:v1")
    docs = {kind: _document(world, case["id"], kind, text="ALPHA-DOC")
            for kind in ("status_minutes", "assessment_report", "joint_plan", "closing_summary")}
    return case | {"family": family, "csrf": csrf, "docs": docs}


@pytest.fixture(scope="module")
async def beta(world: World) -> dict:
    """Another family's case, with documents of its own."""
    case = await world.register("Family Beta", child="Bjørn")
    await world.to_planning(case["id"])
    docs = {"status_minutes": _document(world, case["id"], "status_minutes", text="BETA-DOC")}
    return case | {"docs": docs}


async def _message(world: World, case_id: str, purpose: str) -> None:
    """Wait until the case's workflow handed the message to the outbox."""
    for _ in range(600):
        with Session(world.engine) as s:
            if s.exec(select(NotificationRow).where(NotificationRow.case_id == case_id,
                                                    NotificationRow.purpose == purpose)).first():
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {purpose} message")


def _send(alpha: dict) -> dict:
    return {"X-CSRF-Token": alpha["csrf"]}


# ---------------------------------------------------------------- the view


async def test_the_family_view_shows_what_is_theirs_and_nothing_internal(world: World, alpha: dict,
                                                                         beta: dict) -> None:
    assert (await world.client("anna").get(f"/api/v1/cases/{alpha['id']}")).status_code == 200
    r = await alpha["family"].get("/api/v1/family/case")
    assert r.status_code == 200, r.text
    view = r.json()
    text = r.text
    for never in ("INTERNAL-VOTE-REASON", "INTERNAL-ASSESSMENT-NOTE", "votes", "Family Beta",
                  beta["id"], "possible_duplicate", "stomach"):
        assert never not in text, never
    assert view["family_name"] == "Family Alpha" and view["language"] == "en"
    ball = view["ball"]
    assert ball["key"] == "family_approval" and ball["your_turn"] is True and "version 1" in ball["text"]
    plan = view["plan"]
    assert plan["family_goals"] == ["Emil goes to school every day"] and plan["waiting_for_your_answer"]
    assert plan["goals"][0]["owner_name"] == "Anna Berg"
    owners = {a["id"]: a["owner_name"] for a in plan["actions"]}
    assert owners == {"a1": "school", "a2": "you"}
    assert [a["due"] for a in plan["actions"]] == ["2027-01-15", "2027-02-01"]
    meeting = next(m for m in view["meetings"] if m["kind"] == "assessment")
    assert meeting["you_are_invited"] and meeting["ics_url"] == "/api/v1/family/meetings/assessment.ics"
    assert {p["name"] for p in meeting["participants"]} == {"Anna Berg", "Ole Dam"}
    kinds = {d["kind"] for d in view["documents"]}
    assert kinds == {"status_minutes", "closing_summary"}  # not the assessment, not the voted plan
    purposes = {m["purpose"]: m for m in view["messages"]}
    assert purposes["family_invitation"]["body"] is None and "welcome?token" not in text
    plan_message = next(m for p, m in purposes.items() if p.startswith("plan_for_approval"))
    assert plan_message["to_you"] and "version 1" in plan_message["body"]
    readers = {x["id"]: x for x in view["readers"]}
    assert "anna" in readers and readers["anna"]["name"] == "Anna Berg" and readers["anna"]["reads"] >= 1
    assert not any(x["id"].startswith("family:") for x in view["readers"] + view["reads"])
    assert view["consents"][0]["id"] == "c1" and view["contact_preference"]["value"] == "normal"


async def test_the_meeting_as_a_calendar_file(alpha: dict) -> None:
    r = await alpha["family"].get("/api/v1/family/meetings/assessment.ics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    assert f"UID:{alpha['id']}-assessment@onefamily" in r.text and "BEGIN:VEVENT" in r.text
    assert "Town hall" in r.text and alpha["email"] in r.text
    assert (await alpha["family"].get("/api/v1/family/meetings/7.ics")).status_code == 404


async def test_documents_are_the_familys_own_only(alpha: dict, beta: dict) -> None:
    family = alpha["family"]
    listed = (await family.get("/api/v1/family/documents")).json()
    assert {d["id"] for d in listed["items"]} == {alpha["docs"]["status_minutes"],
                                                  alpha["docs"]["closing_summary"]}
    own = await family.get(f"/api/v1/family/documents/{alpha['docs']['status_minutes']}")
    assert own.status_code == 200 and "ALPHA-DOC" in own.text
    pdf = await family.get(f"/api/v1/family/documents/{alpha['docs']['status_minutes']}?format=pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    for doc_id in (alpha["docs"]["assessment_report"], alpha["docs"]["joint_plan"],
                   beta["docs"]["status_minutes"]):
        r = await family.get(f"/api/v1/family/documents/{doc_id}")
        assert r.status_code == 404 and "BETA" not in r.text and "ALPHA-DOC" not in r.text


# ---------------------------------------------------------------- the family's commands


async def test_the_family_approves_the_plan_from_its_session(world: World, alpha: dict) -> None:
    family = alpha["family"]
    r = await family.post("/api/v1/family/plan/response", json={"approved": True, "comment": "Our plan"},
                          headers=_send(alpha))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["stage"] == "active" and view["plan"]["family_approved"] is True
    assert view["plan"]["status"] == "active" and "votes" not in r.text
    staff = (await world.client("anna").get(f"/api/v1/cases/{alpha['id']}")).json()
    assert staff["stage"] == "active"
    assert any(h["event"] == "family_approved" and h["actor"] == "family:m2" for h in staff["history"])
    # Sent again with a key of its own (on purpose, not a retry: domain/retries.py): 409.
    again = await family.post("/api/v1/family/plan/response", json={"approved": True},
                              headers={**_send(alpha), "Idempotency-Key": "respond-again"})
    assert again.status_code == 409 and again.json()["detail"]
    bad = await family.post("/api/v1/family/plan/response", json={"approved": "maybe"}, headers=_send(alpha))
    assert bad.status_code == 422


async def test_contact_preference_focus_points_and_a_pause_request(alpha: dict) -> None:
    family = alpha["family"]
    r = await family.put("/api/v1/family/contact-preference", json={"preference": "space"},
                         headers=_send(alpha))
    assert r.status_code == 200, r.text
    assert r.json()["contact_preference"]["value"] == "space"
    bad = await family.put("/api/v1/family/contact-preference", json={"preference": "never"},
                           headers=_send(alpha))
    assert bad.status_code == 422
    r = await family.post("/api/v1/family/focus-points", json={"text": "Mornings are hard"},
                          headers=_send(alpha))
    assert r.status_code in (200, 409), r.text  # 409: no meeting planned (the workflow decides)
    if r.status_code == 200:
        assert r.json()["focus_points"][-1]["text"] == "Mornings are hard"
    r = await family.post("/api/v1/family/pause-request", json={"reason": "Summer holiday"},
                          headers=_send(alpha))
    assert r.status_code == 200, r.text
    assert r.json()["pause_requests"][-1] == r.json()["pause_requests"][-1] | {
        "reason": "Summer holiday", "by_you": True}
    blank = await family.post("/api/v1/family/pause-request", json={"reason": "  "}, headers=_send(alpha))
    assert blank.status_code == 422


async def test_consents_give_change_revoke_and_revoke_twice(alpha: dict) -> None:
    family = alpha["family"]
    listed = (await family.get("/api/v1/family/consents")).json()
    assert [c["id"] for c in listed["items"]] == ["c1"]
    until = (datetime.now(UTC) + timedelta(days=200)).date().isoformat()
    r = await family.post("/api/v1/family/consents", json={"staff_ids": ["ole"], "expires_at": until},
                          headers=_send(alpha))
    assert r.status_code == 201, r.text
    consent = r.json()["consents"][-1]
    assert consent["given_by_you"] and consent["staff"][0]["name"] == "Ole Dam"
    cid = consent["id"]
    as_other = await family.post("/api/v1/family/consents", json={"member_id": "m1", "staff_ids": ["ole"],
                                                                   "expires_at": until}, headers=_send(alpha))
    assert as_other.status_code == 422
    shorter = (datetime.now(UTC) + timedelta(days=100)).date().isoformat()
    r = await family.post(f"/api/v1/family/consents/{cid}", json={"expires_at": shorter},
                          headers=_send(alpha))
    assert r.status_code == 200, r.text
    assert next(c for c in r.json()["consents"] if c["id"] == cid)["expires_at"] == shorter
    r = await family.post(f"/api/v1/family/consents/{cid}/revoke", headers=_send(alpha))
    assert r.status_code == 200, r.text
    assert next(c for c in r.json()["consents"] if c["id"] == cid)["status"] == "revoked"
    # A keyless repeat is a retry (domain/retries.py): the first answer, nothing applied again.
    retry = await family.post(f"/api/v1/family/consents/{cid}/revoke", headers=_send(alpha))
    assert retry.status_code == 200 and retry.json()["version"] == r.json()["version"], retry.text
    # Sent again on purpose (a key of its own): a sentence, not a 500.
    twice = await family.post(f"/api/v1/family/consents/{cid}/revoke",
                              headers={**_send(alpha), "Idempotency-Key": "revoke-twice"})
    assert 400 <= twice.status_code < 500 and twice.json()["detail"]
    unknown = await family.post("/api/v1/family/consents/nope/revoke", headers=_send(alpha))
    assert 400 <= unknown.status_code < 500 and unknown.json()["detail"]


# ---------------------------------------------------------------- never another family's case


def _routes(world: World) -> list[tuple[str, str]]:
    """Every operation of the app's API (its OpenAPI document lists them all)."""
    return [(method.upper(), path) for path, ops in world.app.openapi()["paths"].items()
            for method in ops if method in ("get", "post", "put", "delete", "patch")
            and path.startswith(("/api/", "/codec/"))]


def _fill(path: str, beta: dict) -> str:
    values = {"case_id": beta["id"], "doc_id": beta["docs"]["status_minutes"], "ref": "assessment",
              "item_id": f"{beta['id']}-1", "consent_id": "c999", "invitation_id": "x",
              "staff_id": "anna", "token_id": "x", "month": "2026-11"}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path.replace("{", "").replace("}", "")


async def test_a_family_session_never_reads_another_familys_case_on_any_endpoint(
        world: World, alpha: dict, beta: dict) -> None:
    family = alpha["family"]
    routes = _routes(world)
    assert len(routes) > 40, routes  # every API route of the app, not a hand-picked few
    checked = 0
    for method, template in routes:
        path = _fill(template, beta)
        r = await family.request(method, path, json={}, headers=_send(alpha))
        checked += 1
        body = r.text
        assert r.status_code < 500, (method, path, r.status_code, body[:300])
        assert beta["id"] not in body and "Family Beta" not in body and "BETA-DOC" not in body, (method, path)
        if not template.startswith("/api/v1/family/") and template != "/api/v1/auth/session":
            assert r.status_code == 403, (method, path, r.status_code, body[:200])
        elif template.startswith("/api/v1/family/documents/"):
            assert r.status_code == 404, (method, path)
    assert checked == len(routes)
    # The staff's own view of the family's own case is not the family's either.
    for path in ("/api/v1/cases", f"/api/v1/cases/{alpha['id']}", f"/api/v1/cases/{alpha['id']}/documents",
                 f"/api/v1/notifications?case_id={alpha['id']}", f"/api/v1/audit?case_id={alpha['id']}"):
        r = await family.get(path)
        assert r.status_code == 403 and "family portal" in r.json()["detail"], path


async def test_staff_pages_show_a_family_session_nothing(world: World, alpha: dict, beta: dict) -> None:
    family = alpha["family"]
    for path in ("/", "/cases", f"/cases/{beta['id']}", f"/cases/{alpha['id']}", "/dashboard", "/stuck"):
        r = await family.get(path)
        assert r.status_code in (303, 401, 403, 404), (path, r.status_code)
        assert "Family Beta" not in r.text and "Family Alpha" not in r.text, path


async def test_staff_are_not_the_family(world: World, alpha: dict) -> None:
    for staff in ("anna", "admin"):
        r = await world.client(staff).get("/api/v1/family/case")
        assert r.status_code == 403 and "family" in r.json()["detail"]
    assert (await world.client().get("/api/v1/family/case")).status_code == 401


# ---------------------------------------------------------------- the view, pure


def test_the_view_in_the_familys_language_and_without_votes() -> None:
    state = new_case(str(uuid.uuid4()), case_create(), Ctx(actor=actor("anna", "coordinator"),
                                                          now=datetime(2026, 11, 23, tzinfo=UTC), policy=DK))
    view = fv.family_view(state, "m2", datetime(2026, 11, 24, tzinfo=UTC),
                          reads=[fv.ReadInfo("anna", datetime(2026, 11, 24, tzinfo=UTC), "read case"),
                                 fv.ReadInfo("family:m2", datetime(2026, 11, 24, tzinfo=UTC), "read case")],
                          staff={"anna": fv.StaffInfo("anna", "Anna Berg", "social_worker")})
    assert view["language"] == "da"
    assert view["ball"]["text"] == "Kommunen finder en familiekoordinator til jer."
    assert view["ball"]["who"] == "municipality" and view["plan"] is None
    assert [r["name"] for r in view["readers"]] == ["Anna Berg"]
    assert view["reads"][0]["text"] == "læste jeres sag"
    assert view["you"] == {"member_id": "m2", "name": "Mette", "role": "parent"}
    for lang in fv.LANGUAGES:
        assert set(fv.TEXTS[lang]) == set(fv.TEXTS["en"]), lang
