"""Adapters between case workflows and the committee workflow, and the committee's read model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.client import Client

from activities.document_context import agenda_context
from activities.documents import DocumentActivities
from models.case import CaseState, EscalationItem
from models.messaging import DocumentKind, DocumentRequest
from models.policy import Policy
from models.projection import case_from_document
from models.tables import CaseRow, CommitteeItemRow, CommitteeMeetingRow
from workflows.committee import (
    CommitteeMeeting,
    CommitteeState,
    VisitationCommitteeWorkflow,
    committee_workflow_id,
)


class CommitteeActivities:
    def __init__(self, client: Client, engine: Engine, committee_id: str, task_queue: str) -> None:
        self.client = client
        self.engine = engine
        self.committee_id = committee_id
        self.task_queue = task_queue

    @activity.defn(name="committee_item_changed")
    async def committee_item_changed(self, item: EscalationItem, policy: Policy) -> None:
        """Signal-with-start: the committee workflow exists from the first escalation on.
        The worker's client (`connect()`) seals the start and the signal; the committee
        obeys nothing else (DESIGN §9, domain.command_seal)."""
        await self.client.start_workflow(
            VisitationCommitteeWorkflow.run,
            CommitteeState(committee_id=self.committee_id, policy=policy),
            id=committee_workflow_id(self.committee_id),
            task_queue=self.task_queue,
            start_signal="item_changed",
            start_signal_args=[item],
        )

    @activity.defn(name="committee_meeting_held")
    def committee_meeting_held(
        self, committee_id: str, meeting: CommitteeMeeting, items: list[EscalationItem]
    ) -> None:
        at = datetime.fromisoformat(meeting.at)
        with Session(self.engine) as session:
            row_id = f"{committee_id}-{meeting.number}"
            if session.get(CommitteeMeetingRow, row_id) is None:
                session.add(CommitteeMeetingRow(id=row_id, committee_id=committee_id,
                                                number=meeting.number, at=at,
                                                item_ids=meeting.item_ids))
            for item in items:
                row = session.get(CommitteeItemRow, item.id)
                if row is not None and row.status == "waiting":
                    row.meeting_at = at
            session.commit()
            cases = []
            for item in items:
                case = session.get(CaseRow, item.case_id)
                if case is not None:
                    cases.append((case_from_document(case.document), item.id))
        if cases:
            self._render_agenda(committee_id, meeting, at, cases)

    def _render_agenda(self, committee_id: str, meeting: CommitteeMeeting, at: datetime,
                       cases: list[tuple[CaseState, str]]) -> None:
        """The frozen agenda, handed to the document service (one version per meeting)."""
        policy = cases[0][0].policy
        context = agenda_context(committee_id, at, cases, policy.country)
        DocumentActivities(self.engine).render(DocumentRequest(
            case_id=f"committee-{committee_id}", kind=DocumentKind.committee_agenda,
            version=meeting.number, language=policy.default_language, context=context,
            created_by="committee",
        ))
