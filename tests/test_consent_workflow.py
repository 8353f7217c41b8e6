"""The family's consent inside FamilyCaseWorkflow, on the time-skipping server (DESIGN §11):
the renewal reminder fires `consent_renewal_days` before a consent ends, the consent expires
at its end by a durable timer (the `consent_renewal` deadline), access narrows at once (the
read model the workflow projects, read over HTTP), the coordinator is told. The run is kept as
a recorded history for the replay test (tests/histories/case_consent_rules.json).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api import cases as cases_api
from api import consents as consents_api
from domain.access import NOT_CONSENTED
from domain.policy import DK
from models.case import Actor, CaseAnswer, CaseCreate, CaseState, ConsentStatus, DeadlineKind, DeadlineStatus
from models.commands import CaseWorkflowInput, CommandInput
from models.db import get_engine
from models.tables import CaseRow
from models.tables_outbox import NotificationRow
from settings import Settings
from tests.apps import engine_client
from tests.conftest import running_worker, save_history
from tests.factories import case_create_body, whole
from workflows.case import FamilyCaseWorkflow

CPH = ZoneInfo("Europe/Copenhagen")
ADMIN = Actor(id="admin", roles=["admin"])
ANNA = Actor(id="anna", roles=["coordinator"])
MOTHER_ROLES = ["family"]
TEAM = {"members": [
    {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"},
    {"staff_id": "lise", "discipline": "school_coordinator", "department": "school"},
]}
SLACK = timedelta(seconds=3)
MINUTE = timedelta(minutes=1)


async def cmd(handle: WorkflowHandle, name: str, actor: Actor, body: dict | None = None,
              **extra: Any) -> CaseState:
    return whole(await handle.execute_update(name, CommandInput(actor=actor, body=body, **extra),
                                             result_type=CaseAnswer))


async def query(handle: WorkflowHandle) -> CaseState:
    return await handle.query(FamilyCaseWorkflow.case)


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def sleep_until(env: WorkflowEnvironment, instant: datetime) -> None:
    delta = instant - await env.get_current_time()
    if delta > timedelta(0):
        await env.sleep(delta)


def renewal(state: CaseState, consent_id: str) -> Any:
    return next(d for d in state.deadlines
                if d.kind is DeadlineKind.consent_renewal and d.ref == consent_id and d.is_open())


def outbox(settings: Settings, case_id: str, purpose: str) -> set[str]:
    with Session(get_engine(settings.db_url)) as session:
        return set(session.exec(select(NotificationRow.recipient_id).where(
            NotificationRow.case_id == case_id, NotificationRow.purpose == purpose)).all())


def http_app(settings: Settings, env: WorkflowEnvironment) -> httpx.AsyncClient:
    return engine_client(settings, env.client, [("anna", ["coordinator"], "children_disability"),
                                                ("ole", ["team_member"], "adult_services"),
                                                ("lise", ["team_member"], "school")],
                         cases_api.router, consents_api.router)

async def test_renewal_reminder_and_expiry_on_the_durable_timer(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    t0 = await ts_env.get_current_time()
    valid_until = t0.astimezone(CPH).date() + timedelta(days=45)
    body = case_create_body(received_at=t0.isoformat())
    body["consent"] = {"coordinated_handling": True, "valid_until": valid_until.isoformat()}
    case_id = str(uuid.uuid4())
    async with running_worker(ts_env.client, settings), http_app(settings, ts_env) as http:
        handle = await ts_env.client.start_workflow(
            FamilyCaseWorkflow.run,
            CaseWorkflowInput(case_id=case_id, policy=DK, actor=ADMIN,
                              create=CaseCreate.model_validate(body)),
            id=f"case-{case_id}", task_queue=settings.task_queue)
        started.append(handle)
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        state = await cmd(handle, "form_team", ANNA, TEAM)
        assert state.consent_rules and {m.status for m in state.team} == {"active"}

        d = renewal(state, "c1")
        due = datetime.combine(valid_until + timedelta(days=1), datetime.min.time(), tzinfo=CPH)
        assert d.due_at == due and d.owner == "family"
        [remind] = d.remind_at
        assert remind == (due - timedelta(days=DK.consent_renewal_days))  # 30 calendar days
        assert remind.astimezone(CPH).date() == valid_until + timedelta(days=1 - 30)

        # A minute before the reminder: nothing; just after: recorded at its instant, and the
        # family (the parents) is asked to renew.
        await sleep_until(ts_env, remind - MINUTE)
        assert renewal(await query(handle), "c1").reminders_sent == []
        await sleep_until(ts_env, remind + MINUTE)
        sent = renewal(await query(handle), "c1").reminders_sent
        assert [(r["kind"], r["step"], r["skipped"]) for r in sent] == [("reminder", 0, False)]
        assert remind <= datetime.fromisoformat(sent[0]["at"]) <= remind + SLACK
        await eventually(lambda: asyncio.to_thread(outbox, settings, case_id, "consent_renewal:c1#1:0"),
                         "the renewal reminder in the outbox")
        assert outbox(settings, case_id, "consent_renewal:c1#1:0") == {"family:1"}
        ole = (await http.get(f"/cases/{case_id}", headers={"X-User": "ole"}))
        assert ole.status_code == 200, ole.text  # still covered

        # A minute before the end: still active; just after: expired by the timer.
        await sleep_until(ts_env, due - MINUTE)
        assert (await query(handle)).consents[0].status is ConsentStatus.active
        await sleep_until(ts_env, due + MINUTE)
        state = await query(handle)
        c1 = state.consents[0]
        assert c1.status is ConsentStatus.expired
        assert due <= c1.expired_at <= due + SLACK
        assert {m.staff_id: m.status for m in state.team} == {"ole": "pending_consent",
                                                              "lise": "pending_consent"}
        assert state.blocked_on.what == (
            "the family's consent to share with ole (adult_services), lise (school)")
        assert all(d.status is not DeadlineStatus.overdue for d in state.deadlines
                   if d.kind is DeadlineKind.consent_renewal)  # a fact, not an overdue case
        notice = state.notices[-1]
        assert (notice.event, notice.to) == ("consent_expired", "anna")

        # The read model (projected by the workflow on its own): the very next read refuses.
        def projected() -> bool:
            with Session(get_engine(settings.db_url)) as session:
                row = session.get(CaseRow, case_id)
                return row is not None and row.uncovered_text == ",lise,ole,"
        await eventually(lambda: asyncio.to_thread(projected), "the expiry in the read model")
        for who in ("ole", "lise"):
            r = await http.get(f"/cases/{case_id}", headers={"X-User": who})
            assert r.status_code == 403 and r.json()["detail"] == NOT_CONSENTED
        assert (await http.get(f"/cases/{case_id}", headers={"X-User": "anna"})).status_code == 200
        await eventually(lambda: asyncio.to_thread(outbox, settings, case_id,
                                                   f"family_update#{notice.number}"),
                         "the coordinator told")
        assert outbox(settings, case_id, f"family_update#{notice.number}") == {"anna"}

        # The family gives a new consent for lise in the portal, then revokes it (the history
        # kept for the replay test holds every consent command).
        mother = Actor(id="family:m2", roles=MOTHER_ROLES, case_id=case_id, member_id="m2")
        later = (await ts_env.get_current_time()).astimezone(CPH).date() + timedelta(days=90)
        state = await cmd(handle, "give_consent", mother, {
            "member_id": "m2", "staff_ids": ["lise"], "expires_at": later.isoformat()},
            known_departments=["school", "adult_services"])
        assert {m.staff_id: m.status for m in state.team}["lise"] == "active"
        state = await cmd(handle, "change_consent", mother, {
            "consent_id": "c2", "expires_at": (later + timedelta(days=30)).isoformat()})
        assert renewal(state, "c2").due_at.astimezone(CPH).date() == later + timedelta(days=31)
        state = await cmd(handle, "set_contact_preference", mother, {"preference": "close"})
        state = await cmd(handle, "family_focus_points", mother, {"text": "Emil's mornings"})
        state = await cmd(handle, "request_pause", mother, {"reason": "A summer break"})
        state = await cmd(handle, "confirm_focus_points", ANNA, {"number": 1})
        state = await cmd(handle, "revoke_consent", mother, {"consent_id": "c2"})
        assert state.consents[-1].status is ConsentStatus.revoked
        assert {m.staff_id: m.status for m in state.team}["lise"] == "pending_consent"
        await eventually(lambda: asyncio.to_thread(outbox, settings, case_id,
                                                   f"family_update#{state.notices[-1].number}"),
                         "the coordinator told of the revocation")
        await save_history(handle, "case_consent_rules")


async def test_a_consent_ending_before_its_reminder_would_fire_is_reminded_at_once(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    """Given with 10 days left (less than consent_renewal_days): the family is asked to renew
    at once, the consent still expires at its end."""
    t0 = await ts_env.get_current_time()
    body = case_create_body(received_at=t0.isoformat())
    case_id = str(uuid.uuid4())
    async with running_worker(ts_env.client, settings):
        handle = await ts_env.client.start_workflow(
            FamilyCaseWorkflow.run,
            CaseWorkflowInput(case_id=case_id, policy=DK, actor=ADMIN,
                              create=CaseCreate.model_validate(body)),
            id=f"case-{case_id}", task_queue=settings.task_queue)
        started.append(handle)
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        await cmd(handle, "form_team", ANNA, TEAM)
        ends: date = t0.astimezone(CPH).date() + timedelta(days=10)
        state = await cmd(handle, "give_consent", ANNA, {
            "member_id": "m2", "staff_ids": ["ole"], "expires_at": ends.isoformat()},
            known_departments=["school", "adult_services"])
        await eventually(lambda: asyncio.to_thread(outbox, settings, case_id, "consent_renewal:c2#1:0"),
                         "the reminder sent at once")
        d = renewal(await query(handle), "c2")
        assert datetime.fromisoformat(d.reminders_sent[0]["at"]) < t0 + timedelta(minutes=5)
        await sleep_until(ts_env, d.due_at + MINUTE)
        state = await query(handle)
        assert state.consents[1].status is ConsentStatus.expired
        assert state.consents[0].status is ConsentStatus.active  # the referral's: no end
        assert {m.status for m in state.team} == {"active"}  # c1 still covers the whole team
