"""VisitationCommitteeWorkflow: one per committee (`committee-<id>`), meeting on its cadence.

Escalated cases join its queue by signal-with-start; at each meeting the agenda is frozen and
handed to the document service. Decisions are recorded on the case (which owns the decision
rule) and reach the committee as item changes, so both always agree.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.calendar import next_weekly_meeting
    from models.case import EscalationItem
    from models.policy import Policy

RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


class CommitteeMeeting(BaseModel):
    number: int
    at: str  # ISO 8601 with offset
    item_ids: list[str]


class CommitteeState(BaseModel):
    committee_id: str
    policy: Policy
    items: dict[str, EscalationItem] = {}
    meetings: list[CommitteeMeeting] = []
    meetings_held: int = 0
    max_meetings_per_run: int = 52


def committee_workflow_id(committee_id: str) -> str:
    return f"committee-{committee_id}"


@workflow.defn
class VisitationCommitteeWorkflow:
    @workflow.init
    def __init__(self, state: CommitteeState) -> None:
        self.state = state
        self.meetings_this_run = 0

    @workflow.signal
    def item_changed(self, item: EscalationItem) -> None:
        self.state.items[item.id] = item

    @workflow.query
    def agenda(self) -> CommitteeState:
        return self.state

    @workflow.run
    async def run(self, state: CommitteeState) -> None:
        while True:
            policy = self.state.policy
            meeting_at = next_weekly_meeting(
                workflow.now(), policy.committee_weekday, policy.committee_time, policy.timezone
            )
            await workflow.sleep(meeting_at - workflow.now())
            await self._hold_meeting()
            if (
                self.meetings_this_run >= self.state.max_meetings_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._forget_settled()
                workflow.continue_as_new(self.state)

    async def _hold_meeting(self) -> None:
        """Freeze the agenda: every item waiting now is on it, in the order of escalation."""
        now = workflow.now()
        waiting = sorted(
            (i for i in self.state.items.values() if i.status == "waiting" and i.escalated_at <= now),
            key=lambda i: i.escalated_at,
        )
        meeting = CommitteeMeeting(
            number=self.state.meetings_held + 1,
            at=now.isoformat(),
            item_ids=[i.id for i in waiting],
        )
        self.state.meetings.append(meeting)
        self.state.meetings_held += 1
        self.meetings_this_run += 1
        await workflow.execute_activity(
            "committee_meeting_held",
            args=[self.state.committee_id, meeting, waiting],
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(days=1),
            retry_policy=RETRY,
        )

    def _forget_settled(self) -> None:
        # Decided and withdrawn items live on in the cases and the read model.
        self.state.items = {k: v for k, v in self.state.items.items() if v.status == "waiting"}
        self.state.meetings = self.state.meetings[-10:]
