"""FamilySignInMessageWorkflow: delivers one family sign-in message (an invitation link or a
one-time code, DESIGN §11) through the notification service: the `send_notification`
activity records it in the outbox first and sends it by e-mail or SMS exactly once per key.

The API starts one run per message (workflow id `family-message-<key>`), so a message that
concerns no case command (a sign-in code) never touches the case's workflow and its history,
and the API never imports the delivery code. The start is sealed by the API's client like
every case start (DESIGN §9): an unsealed start sends nothing. A message deferred by the quiet
hours waits on a durable timer, but never past the link's or code's lifetime (codes are asked
for by the recipient and are not deferred at all: `NotificationRequest.asked_for`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain import command_seal
    from models.family_messages import FamilyMessageInput
    from models.messaging import NotificationResult

WORKFLOW_PREFIX = "family-message-"
RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5))


def workflow_id(key: str) -> str:
    return WORKFLOW_PREFIX + key


@workflow.defn(name="FamilySignInMessage")
class FamilySignInMessageWorkflow:
    @workflow.init
    def __init__(self, inp: FamilyMessageInput) -> None:
        info = workflow.info()
        target = command_seal.Target("start", info.workflow_id, info.workflow_type)
        self._sealed = command_seal.admitted(target, inp, inp.seal,
                                             replaying=workflow.unsafe.is_replaying())

    @workflow.run
    async def run(self, inp: FamilyMessageInput) -> NotificationResult | None:
        if not self._sealed:
            workflow.logger.warning("refused an unsealed family message start")
            raise ApplicationError(command_seal.FORGED, type="forbidden", non_retryable=True)
        until = workflow.now() + timedelta(seconds=inp.valid_seconds)
        while True:
            left = until - workflow.now()
            if left <= timedelta(0):
                return None
            try:
                result = await workflow.execute_activity(
                    "send_notification", inp.request, result_type=NotificationResult,
                    start_to_close_timeout=timedelta(seconds=60),
                    schedule_to_close_timeout=max(left, timedelta(seconds=60)),
                    retry_policy=RETRY,
                )
            except ActivityError:
                workflow.logger.warning("family sign-in message not delivered")
                return None  # the outbox row says why
            if result.status != "deferred" or result.not_before is None:
                return result
            wait = result.not_before - workflow.now()
            if wait >= until - workflow.now():
                return result  # the link or code would be dead before the quiet hours end
            await workflow.sleep(max(wait, timedelta(seconds=1)))
