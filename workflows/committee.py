"""VisitationCommitteeWorkflow: one per committee (`committee-<id>`), meeting on its cadence.

Escalated cases join its queue by signal-with-start; at each meeting the agenda is frozen and
handed to the document service. Decisions are recorded on the case (which owns the decision
rule) and reach the committee as item changes, so both always agree.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain import command_seal
    from domain.calendar import next_weekly_meeting
    from models.case import EscalationItem
    from models.policy import Policy

RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# Patch: new runs check the seals of their start input and of every item signal
# (domain.command_seal); runs started before seals replay as they ran.
SEALED_INPUT = "sealed-input"


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
    # The sender's seal over this start input (a continued run keeps its first run's).
    seal: str | None = None


def committee_workflow_id(committee_id: str) -> str:
    return f"committee-{committee_id}"


@workflow.defn
class VisitationCommitteeWorkflow:
    @workflow.init
    def __init__(self, state: CommitteeState) -> None:
        self._start_sealed = self._start_is_sealed(state)
        self.state = state
        self.meetings_this_run = 0
        self._legacy_signals = 0  # item signals taken by a run from before seals

    @workflow.signal
    def item_changed(self, item: EscalationItem, seal: str | None = None) -> None:
        """From the case workflows (activities.committee), sealed; anything else is dropped.
        Signals replay, so the check is behind patches and uses the keys kept for history."""
        if not isinstance(item, EscalationItem):
            # Sent without the seal argument (an old history, or a forger): the SDK applies
            # type hints only when the argument count matches, so this is the raw JSON.
            try:
                item = EscalationItem.model_validate(item)
            except ValidationError:
                workflow.logger.warning("dropped a malformed item signal")
                return
        if self._check_signal():
            target = command_seal.Target("signal", workflow.info().workflow_id, "item_changed")
            if not command_seal.admitted(target, [item], seal, replaying=workflow.unsafe.is_replaying()):
                workflow.logger.warning("dropped an item signal without OneFamily's seal")
                return
        self.state.items[item.id] = item

    def _check_signal(self) -> bool:
        """A new run checks every item signal. A run started before seals (its patch is off for
        good: `patched` is memoized) replays the signals it took then as they ran, and checks
        each one it takes from the upgrade on, behind a patch of its own: no year-long window
        until its next continue-as-new."""
        if workflow.patched(SEALED_INPUT):
            return True
        self._legacy_signals += 1
        return workflow.patched(f"{SEALED_INPUT}-signal-{self._legacy_signals}")

    @workflow.query
    def agenda(self) -> CommitteeState:
        return self.state

    @workflow.run
    async def run(self, state: CommitteeState) -> None:
        if workflow.patched(SEALED_INPUT) and not self._start_sealed:
            workflow.logger.warning("refused a committee start without OneFamily's seal")
            raise ApplicationError(command_seal.FORGED, type="forbidden", non_retryable=True)
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

    @staticmethod
    def _start_is_sealed(state: CommitteeState) -> bool:
        """As FamilyCaseWorkflow._start_is_sealed: a new run needs the sender's seal; a run
        that Temporal continued from ours carries our own state. Decided in `__init__`: the
        item signal of a signal-with-start is applied to this same state before `run()`."""
        info = workflow.info()
        if info.continued_run_id is not None and info.attempt == 1 and not info.cron_schedule:
            return True
        target = command_seal.Target("start", info.workflow_id, info.workflow_type)
        return command_seal.admitted(target, state, state.seal, replaying=workflow.unsafe.is_replaying())

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
