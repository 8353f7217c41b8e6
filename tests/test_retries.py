"""Retries are safe (issue 13 point 3, domain/retries.py): a command sent again whose first
try was applied gets the first answer, not a 409 and not a second application; `PUT /plan`
with the pending draft's content makes no new version; the pages send a key with every form;
concurrent registrations of the same person are flagged as possible duplicates of each other."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from api.credentials import set_password
from api.main import create_app
from domain import retries
from domain.lifecycle import execute, new_case
from models.case import Actor, CaseAnswer
from models.commands import CommandInput
from models.db import get_engine, init_read_model, migrate
from models.projection import write_case
from models.tables import StaffRow
from models.tables_outbox import NotificationRow
from models.tables_reporting import StuckNudgeRow
from settings import Settings
from tests.conftest import running_worker, save_history
from tests.factories import admin, case_create, case_create_body, ctx
from tests.family_world import family_world
from tests.test_workflow_lifecycle import ADMIN, ANNA, OLE, PLAN, cmd, drive_to_planning, start_case
from workflows.case import FamilyCaseWorkflow

# ---------------------------------------------------------------- the rules, pure


def test_only_a_keyless_command_is_judged_by_its_body() -> None:
    assert retries.keyless(str(uuid.uuid4()))  # what the SDK names a keyless Update
    assert not retries.keyless("anna:2c5e8a4e-1d1b-4c44-9a53-1e0b8c1f3a77")
    assert not retries.keyless("anna:k1") and not retries.keyless(None) and not retries.keyless("")


def test_the_fingerprint_leaves_out_what_only_the_api_computes() -> None:
    body = {"coordinator_id": "anna"}
    first = CommandInput(actor=admin(), body=body, coordinator_load=3, seal="s1")
    retry = CommandInput(actor=admin(), body=dict(body), coordinator_load=4, seal="s2",
                         expected_version=7)
    assert retries.fingerprint("assign_coordinator", first) == retries.fingerprint(
        "assign_coordinator", retry)
    other = CommandInput(actor=Actor(id="mia", roles=["manager"]), body=body)
    assert retries.fingerprint("assign_coordinator", other) != retries.fingerprint(
        "assign_coordinator", first), "another caller's command is not a retry"
    assert retries.fingerprint("form_team", first) != retries.fingerprint("assign_coordinator", first)
    assert retries.fingerprint("vote", CommandInput(actor=admin(), body={"vote": "agree"})) != \
        retries.fingerprint("vote", CommandInput(actor=admin(), body={"vote": "disagree"}))


def test_same_as_pending_draft() -> None:
    state = new_case("8a0c1f7e-2222-4333-8444-555566667777", case_create(), ctx(admin()), [])
    assert not retries.same_as_pending_draft(state, PLAN), "no plan yet"
    state.stage = state.stage.planning
    execute(state, "put_plan", CommandInput(actor=admin(), body=PLAN), ctx(admin()))
    assert retries.same_as_pending_draft(state, PLAN)
    changed = {**PLAN, "family_goals": ["Emil sleeps at home"]}
    assert not retries.same_as_pending_draft(state, changed)
    assert not retries.same_as_pending_draft(state, {"family_goals": []}), "invalid: not the draft"
    state.plans[-1].status = "active"
    assert not retries.same_as_pending_draft(state, PLAN), "an active plan is no pending draft"


# ---------------------------------------------------------------- in the case workflow


async def test_retries_get_the_first_answer_and_a_repeated_draft_no_new_version(
    ts_env: WorkflowEnvironment, settings, started
) -> None:
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(days=1)).isoformat())
        started.append(handle)
        await drive_to_planning(ts_env, handle)

        drafted = await cmd(handle, "put_plan", ANNA, PLAN)
        assert [p.version for p in drafted.plans] == [1]
        # The same draft again (another coordinator's tab, a retry after a crash): that draft.
        again = await cmd(handle, "put_plan", ADMIN, PLAN)
        assert [p.version for p in again.plans] == [1] and again.version == drafted.version
        changed = await cmd(handle, "put_plan", ANNA, {**PLAN, "family_goals": ["Emil sleeps"]})
        assert [p.version for p in changed.plans] == [1, 2], "a changed draft is a new version"

        # A keyless retry of an applied vote: the first answer, not "already voted" (409).
        voted = await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        retried = await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        assert retried.version == voted.version
        assert retried.model_dump() == voted.model_dump()
        assert len(retried.plans[-1].votes) == 1
        # The same vote under a new key is a command sent again on purpose (a form shown
        # again): checked like any other.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "vote", CommandInput(actor=ANNA, body={"staff_id": "anna", "vote": "agree"}),
                id="anna:another-form", result_type=CaseAnswer)
        assert refused.value.cause.type == "conflict"

        # Not a retry once another command came in between: checked as a new command.
        at = (await ts_env.get_current_time()).isoformat()
        await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": at})
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        assert refused.value.cause.type == "conflict"

        # With a key (the Update id), Temporal answers the recorded result exactly, even
        # after other commands: the first try's case, not today's.
        keyed = await handle.execute_update(
            "record_contact", CommandInput(actor=ANNA, body={"kind": "home_visit", "at": at}),
            id="anna:visit-1", result_type=CaseAnswer)
        await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "agree"})
        replayed = await handle.execute_update(
            "record_contact", CommandInput(actor=ANNA, body={"kind": "home_visit", "at": at}),
            id="anna:visit-1", result_type=CaseAnswer)
        assert replayed.version == keyed.version
        now_state = await handle.query(FamilyCaseWorkflow.case)
        assert now_state.version > keyed.version
        assert sum(1 for c in now_state.contacts if c.kind.value == "home_visit") == 1

        await cmd(handle, "close", ANNA, {"reason": "duplicate"})
        await handle.result()
        await save_history(handle, "case_retry_answers")


# ---------------------------------------------------------------- over HTTP (in process)


def _referral(child: str, birth_date: str) -> dict:
    body = case_create_body()
    body["family"]["members"] = [
        {"name": child, "role": "child", "birth_date": birth_date, "diagnoses": ["ADHD"]},
        {"name": f"Parent of {child}", "role": "parent", "birth_date": "1985-01-10"}]
    return body


def _duplicate_ids(case: dict) -> set[str]:
    return {cid for f in case["flags"] if f["kind"] == "possible_duplicate" for cid in f["case_ids"]}


async def test_concurrent_registrations_of_one_person_flag_each_other(
    ts_env: WorkflowEnvironment, tmp_path
) -> None:
    async with family_world(ts_env, tmp_path) as world:
        mia, anna = world.client("mia"), world.client("anna")
        body = _referral("Sofie Concurrent", "2016-05-04")
        # Sent at the same instant: each registration's check runs while the other's is in
        # flight (before this change both read the read model before either wrote it).
        answers = await asyncio.gather(*(c.post("/api/v1/cases", json=body) for c in (mia, anna, mia)))
        assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
        ids = [a.json()["id"] for a in answers]
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # the late finders tell the early ones (an Update each, in the background)
            cases = [(await mia.get(f"/api/v1/cases/{cid}")).json() for cid in ids]
            flagged = [_duplicate_ids(c) for c in cases]
            if all(flagged[i] == set(ids) - {cid} for i, cid in enumerate(ids)):
                break
            assert asyncio.get_running_loop().time() < deadline, flagged
            await asyncio.sleep(0.2)
        # A later registration of another child flags nobody.
        other = await mia.post("/api/v1/cases", json=_referral("Karl Alone", "2014-01-01"))
        assert other.status_code == 201 and not _duplicate_ids(other.json())


async def test_keyless_and_keyed_command_retries_over_http(ts_env: WorkflowEnvironment, tmp_path) -> None:
    async with family_world(ts_env, tmp_path) as world:
        mia = world.client("mia")
        r = await mia.post("/api/v1/cases", json=_referral("Ida Retry", "2017-02-02"))
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        first = await mia.post(f"/api/v1/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
        assert first.status_code == 200, first.text
        # The client lost the answer and sends it again without a key: the first answer.
        again = await mia.post(f"/api/v1/cases/{cid}/coordinator", json={"coordinator_id": "anna"})
        assert again.status_code == 200, again.text
        assert again.json()["version"] == first.json()["version"]
        assert [h["event"] for h in again.json()["history"]].count("coordinator_assigned") == 1
        key = {"Idempotency-Key": "close-1"}
        closed = await mia.post(f"/api/v1/cases/{cid}/close", json={"reason": "duplicate"}, headers=key)
        assert closed.status_code == 200, closed.text
        # Retried after the case closed: the recorded answer, not "the case is closed" (409).
        replay = await mia.post(f"/api/v1/cases/{cid}/close", json={"reason": "duplicate"}, headers=key)
        assert replay.status_code == 200, replay.text
        assert replay.json()["version"] == closed.json()["version"]


# ---------------------------------------------------------------- the pages send a key


# Forms that are no command on a case or the directory: signing in and out, the language,
# one-time links (each carries its own token), filters (GET).
NO_KEY_NEEDED = {"/login", "/logout", "/language", "/set-password", "/family/login",
                 "/family/logout", "/family/welcome", "/family/oidc/login"}
# Idempotent by what they do: acknowledging a reason (its case, kind and since), a new
# password link (it replaces the last), deactivating, recomputing a month's report; and the
# referral's confirmation, which carries the first form's key among its values.
IDEMPOTENT = {"/cases/{{ case_id }}/acknowledge", "/staff/{{ r.id }}/password-link",
              "/staff/{{ r.id }}/deactivate", "/reports/{{ r.month }}", "/cases/new"}


def test_every_command_form_sends_one_key_per_form_shown() -> None:
    root = Path(__file__).parent.parent / "templates" / "pages"
    missing = []
    for path in sorted(root.rglob("*.j2")):
        for form in re.finditer(r"<form\b([^>]*)>(.*?)</form>", path.read_text(), re.S):
            tag, inner = form.groups()
            if 'method="get"' in tag:
                continue
            action = re.search(r'action="([^"]*)"', tag).group(1)
            has_key = "form.hidden(" in inner or 'name="idempotency_key"' in inner
            if not has_key and action not in NO_KEY_NEEDED | IDEMPOTENT:
                missing.append(f"{path.relative_to(root)} {action}")
    assert not missing, f"forms without an Idempotency-Key: {missing}"


@pytest.fixture
def site(tmp_path):
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), TEMPORAL_ADDRESS="127.0.0.1:1",
                        ONEFAMILY_ALLOWED_HOSTS="testserver", ONEFAMILY_TEMPORAL_CONNECT_WAIT="0")
    migrate(settings.db_url)
    init_read_model(settings)
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for pid, roles in (("maria", ["manager"]), ("anna", ["coordinator"])):
            session.add(StaffRow(id=pid, name=pid.title(), discipline="social_worker",
                                 department="children_disability", roles=roles,
                                 created_at=datetime.now(UTC)))
            set_password(session, pid, f"{pid} password 123")
        session.commit()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client, engine


def test_a_resubmitted_nudge_form_is_one_nudge(site) -> None:
    client, engine = site
    state = new_case(str(uuid.uuid4()), case_create(), ctx(admin()), [])
    with Session(engine) as session:
        write_case(session, state, datetime.now(UTC))
        session.commit()
    r = client.post("/login", data={"staff_id": "maria", "password": "maria password 123"})
    assert r.status_code == 303, r.text
    html = client.get(f"/cases/{state.id}").text
    keys = re.findall(r'name="idempotency_key" value="([0-9a-f]+)"', html)
    assert keys and len(keys) == len(set(keys)), "one key per form shown"
    start = html.index('id="nudge-form"')
    form = html[start:html.index("</form>", start)]
    hidden = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', form))
    assert hidden.get("idempotency_key"), form
    data = {**hidden, "recipient_id": "anna", "message": "Please call the family"}
    for _ in range(2):  # the answer was lost; the browser sends the same form again
        r = client.post(f"/cases/{state.id}/nudge", data=data)
        assert r.status_code == 303, r.text
    with Session(engine) as session:
        nudges = session.exec(select(StuckNudgeRow).where(StuckNudgeRow.case_id == state.id)).all()
        messages = session.exec(select(NotificationRow).where(
            NotificationRow.case_id == state.id, NotificationRow.purpose == "manager_nudge")).all()
    assert len(nudges) == 1 and len(messages) == 1
    fresh = client.get(f"/cases/{state.id}").text  # a form shown again is a new nudge
    start = fresh.index('id="nudge-form"')
    again = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"',
                            fresh[start:fresh.index("</form>", start)]))
    assert again["idempotency_key"] != hidden["idempotency_key"]
    r = client.post(f"/cases/{state.id}/nudge", data={**again, "recipient_id": "anna"})
    assert r.status_code == 303
    with Session(engine) as session:
        assert len(session.exec(select(StuckNudgeRow).where(StuckNudgeRow.case_id == state.id)).all()) == 2
