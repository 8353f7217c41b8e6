"""The case workflow really hands its messages and documents to the services, once each."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from models.case import Stage
from models.db import get_engine
from models.tables import StaffRow
from models.tables_outbox import DocumentRow, NotificationRow
from tests.conftest import running_worker
from tests.test_workflow_lifecycle import ADMIN, ANNA, OLE, PLAN, cmd, drive_to_planning, start_case
from workflows.case import FamilyCaseWorkflow


def _seed_staff(settings) -> None:
    from datetime import UTC, datetime

    with Session(get_engine(settings.db_url)) as s:
        for sid, roles in [("anna", ["coordinator"]), ("ole", ["team_member"]),
                           ("per", ["team_member"]), ("mia", ["manager"])]:
            s.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                           department="children_disability", roles=roles,
                           email=f"{sid}@example.org", created_at=datetime.now(UTC)))
        s.commit()


def _rows(settings, model, case_id: str):
    with Session(get_engine(settings.db_url)) as s:
        return list(s.exec(select(model).where(model.case_id == case_id)).all())


async def test_messages_and_documents_once_each(ts_env: WorkflowEnvironment, settings) -> None:
    _seed_staff(settings)
    async with running_worker(ts_env.client, settings):
        now = await ts_env.get_current_time()
        handle = await start_case(ts_env, settings, (now - timedelta(days=20)).isoformat())
        case_id = (await handle.query(FamilyCaseWorkflow.case)).id
        state = await drive_to_planning(ts_env, handle)
        assert state.stage is Stage.planning
        await cmd(handle, "put_plan", ANNA, PLAN | {"services": []})
        await cmd(handle, "vote", ANNA, {"staff_id": "anna", "vote": "agree"})
        await cmd(handle, "vote", OLE, {"staff_id": "ole", "vote": "agree"})
        await cmd(handle, "vote", ADMIN | {} if False else ADMIN.model_copy(update={"id": "per"}),
                  {"staff_id": "per", "vote": "agree"})
        state = await cmd(handle, "family_response", ANNA, {"approved": True})
        assert state.stage is Stage.active
        at = await ts_env.get_current_time() + timedelta(days=10)
        await cmd(handle, "schedule_status_meeting", ANNA, {
            "at": at.isoformat(), "location": "Family home", "participants": ["anna", "family"]})
        await ts_env.sleep(timedelta(days=11))  # the pre-meeting contact goes overdue meanwhile
        await cmd(handle, "close", ANNA, {"reason": "goals_reached"})
        await handle.result()

    notes = _rows(settings, NotificationRow, case_id)
    purposes = [n.purpose for n in notes]
    # The backdated first-contact deadline went overdue: the manager was told (no coordinator yet).
    assert any(p.startswith("deadline:first_contact#1:overdue") for p in purposes), sorted(purposes)
    invitations = [n for n in notes if n.purpose == "assessment_meeting_invitation"]
    assert {n.recipient_id for n in invitations} >= {"anna", "ole"}
    assert all(n.ics and "BEGIN:VCALENDAR" in n.ics for n in invitations)
    assert any(p.startswith("plan_for_approval:v1") for p in purposes)
    status_invites = [n for n in notes if n.purpose == "status-1_invitation"]
    assert {n.recipient_id for n in status_invites} >= {"anna", "family:1"}
    assert all("status-1@onefamily" in n.ics for n in status_invites)
    assert any(p.startswith("deadline:pre_meeting_contact#2:") for p in purposes), sorted(purposes)
    assert len(purposes) == len(set(n.key for n in notes)), "one row per key"

    docs = {(d.kind, d.version) for d in _rows(settings, DocumentRow, case_id)}
    assert {("assessment_report", 1), ("joint_plan", 1), ("closing_summary", 1)} <= docs
    pdfs = [d for d in _rows(settings, DocumentRow, case_id) if d.kind == "joint_plan"]
    assert pdfs[0].pdf.startswith(b"%PDF") and "Emil goes to school" in pdfs[0].html
