"""FamilyCaseWorkflow: the single writer of one case's process state (DESIGN §3, §8).

The workflow only orchestrates: the rules live in `domain.lifecycle`. Every command is an
Update whose validator runs the rule on a copy of the state, so a refused command leaves no
trace in the history. Handlers never await, so they cannot interleave.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.document_context import NoSuchContent, document_context
    from domain import clocks, command_seal, effects, family_effects, retries
    from domain import consent as cs
    from domain import deadlines as dl
    from domain.lifecycle import (
        Ctx,
        Refusal,
        after_clocks,
        blocked_on,
        execute,
        new_case,
        working_copy,
    )
    from domain.shared_policy import digest as policy_digest
    from domain.shared_policy import shared as shared_policy
    from models import search
    from models.case import Actor, CaseAnswer, CaseState, DeadlineStatus, EscalationItem, Stage
    from models.commands import CaseWorkflowInput, CommandInput
    from models.compact import Frozen, freeze, share_fields_sets, thaw
    from models.messaging import NotificationRequest, NotificationResult, Recipient
    from models.policy import Policy

PROJECTION_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# Start-to-close timeouts that fit the work (issue 13 point 6): an attempt on a worker that
# died is retried when its timeout passes, so the case waits seconds, not a minute. A
# projection or a committee signal is one short database write or RPC (measured: well under a
# second), so 10 s; a PDF render 0.1-0.3 s of CPU, so 30 s. Only the timeout changes: the
# commands keep their kind and order, so running cases replay unchanged (no patch needed).
QUICK_ACTIVITY = timedelta(seconds=10)
RENDER_TIMEOUT = timedelta(seconds=30)
PROJECTION_QUIET = timedelta(seconds=5)
EFFECT_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=10))
# Patch: new runs check the seal of their start input (cases started before seals replay as
# they ran). Update validators need no patch: they never run on replay.
SEALED_INPUT = "sealed-input"
# Patch: new runs apply the family's consent (DESIGN §11) in the workflow — renewal clocks and
# expiry, no votes, invitations or reminders for members it does not cover, "blocked on" the
# family's consent. Runs started before it replay as they ran; a consent command given to such
# a run switches the rules on from that command on (domain.consent.enable).
CONSENT_RULES = "consent-rules"
# Patch: a command repeated with nothing in between is answered as its first try was, and a
# plan draft equal to the pending draft makes no new version (domain.retries, issue 13).
RETRY_ANSWERS = "retry-answers"
# Patch: new runs check the close body's free-form `outcomes` against the outcome instruments
# and map it to measurements (DESIGN §3.8; a bad score is refused). Runs started before it
# replay as they ran; a command recording measurements switches the check on from then on.
OUTCOME_INSTRUMENTS = "outcome-instruments"
# Patch: a notice is keyed by its event and its recipients are fixed when the event fires
# (issue 13 point 5); a notice whose deadline was met before it left is dropped. Runs started
# before it keep the old keys (their next continue-as-new switches it on).
NOTICE_BY_EVENT = "notice-by-event"
# Patch: METHOD:CANCEL to the invitees of a meeting the case no longer holds for them (the
# case closed with it ahead; a member no longer covered by consent) — domain.effects.
MEETING_CANCEL = "meeting-cancel"
# Patch: the family's SMS reminder the day before each meeting, out of the policy's quiet
# hours (domain.family_effects): one more timer instant and one more kind of effect.
FAMILY_SMS_REMINDER = "family-sms-reminder"
# Rules generation 2 (models.commands.CASE_RULES; new cases only, so no patch): an idle cached
# case keeps no task but its run. Messages and documents are started where the case changes
# (a command, a clock, a finished hand-over) instead of by a task of their own that waits for
# them, and the one durable timer is a bare Temporal timer, not a task sleeping on it (issue
# 13: memory per cached case; each task held ~2 KiB of coroutines, futures and closures).
# And while the case waits, its state is kept frozen (models.compact.freeze), thawed at the
# first touch.
LEAN_LOOP = 2


def _refusal_error(refusal: Refusal) -> ApplicationError:
    return ApplicationError(refusal.message, type=refusal.kind, non_retryable=True)


def _forged() -> ApplicationError:
    return ApplicationError(command_seal.FORGED, type="forbidden", non_retryable=True)


class _Alarm:
    """The case's durable timer in generation 2: `loop.call_later` on the workflow's event
    loop is a Temporal timer (StartTimer; `cancel()` sends CancelTimer), without the task and
    coroutines `asyncio.create_task(workflow.sleep(...))` keeps while it waits."""

    __slots__ = ("_handle", "_rang")

    def __init__(self, seconds: float) -> None:
        self._rang = False
        self._handle = asyncio.get_running_loop().call_later(seconds, self._ring)

    def _ring(self) -> None:
        self._rang = True

    def done(self) -> bool:
        return self._rang

    def cancel(self) -> None:
        self._handle.cancel()


@workflow.defn
class FamilyCaseWorkflow:
    @workflow.init
    def __init__(self, inp: CaseWorkflowInput) -> None:
        # The state, live or frozen while the case waits (generation 2); see `state`.
        self._state: CaseState | None = None
        self._frozen: Frozen | None = None
        self._frozen_version = 0
        self._commanded_at = -1  # the history length of the last workflow task with a command
        self._start_sealed = self._start_is_sealed(inp)
        # Equal policies share one object per worker process (domain.shared_policy: memory
        # per cached case); same content, so no change in behaviour and no patch.
        inp.policy = shared_policy(inp.policy)
        if inp.state is not None:
            inp.state.policy = shared_policy(inp.state.policy)
        self.inp = inp
        self.projected_version = inp.projected_version
        # What the committee workflow has been told about each escalation item (id -> status).
        self.announced: dict[str, str] = dict(inp.committee_announced)
        consent_rules = self._patched(CONSENT_RULES)
        self._by_event = self._patched(NOTICE_BY_EVENT)
        self._cancels = self._patched(MEETING_CANCEL)
        self._reminders = self._patched(FAMILY_SMS_REMINDER)
        # The next instant a family SMS reminder falls due, and a counter bumped whenever it
        # changes (time passing it makes reminders due without a new state version).
        self._reminder_next: datetime | None = None
        self._reminder_epoch = 0
        if inp.state is not None:
            self.state = inp.state
            if consent_rules and not self.state.consent_rules:
                # Continued from a run before consents: the rules apply from this run on.
                cs.enable(self.state, workflow.now())
                self.state.version += 1
                self.state.blocked_on = blocked_on(self.state)
        else:
            assert inp.create is not None, "a new case needs its referral"
            ctx = Ctx(actor=inp.actor, now=inp.created_at or workflow.now(), policy=inp.policy)
            # Outcome rules by their own patch, just below (the order of patches replayed).
            self.state = new_case(inp.case_id, inp.create, ctx, inp.possible_duplicates,
                                  consent_rules=consent_rules)
        if self._patched(OUTCOME_INSTRUMENTS):
            self.state.outcome_rules = True
        # The referral is in the state now; the input keeps no second copy of it for the
        # run's life (memory per cached case; continue-as-new passes `create=None` anyway).
        inp.create = None
        share_fields_sets(inp, skip=(Policy,))
        self._compact()
        self._search_attributes: dict[str, object] = {}
        # A change nobody else writes to the read model: projected at once. Generation 1: a
        # new case is not one, because the API writes its first state itself (api/cases.py,
        # the same `new_case`); the safety-net projection waits for the quiet spell.
        self._own_change = ((inp.state is None and inp.rules < 1)
                            or (inp.state is not None and self.state.version > inp.projected_version))
        # The run holds a continued state (frozen while it waits); the input keeps no copy of it.
        inp.state = None
        self._projection_due: datetime | None = None
        # The one durable timer the main loop sleeps on, and the instant it is set for.
        self._timer: asyncio.Task[None] | _Alarm | None = None
        self._timer_at: datetime | None = None
        # Candidate states computed by validators, reused by their handlers (update id ->
        # (version it was computed from, state)). Validators do not run on replay; then the
        # handler computes the same state itself.
        self._validated: dict[str, tuple[int, CaseState]] = {}
        # Business keys of the messages and documents already handed to their services.
        self.effects_done: set[str] = set(inp.effects_done)
        self._effects_cache: tuple[object, int, list[effects.Effect]] = (-1, -1, [])
        self._effects_busy = False
        # Generation 1: the effects being handed over (key -> its task, kept so it is not
        # collected while it waits), and those judged no longer wanted at a state version
        # (key -> version; looked at again once the case changes).
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._passed: dict[str, int] = {}
        # Set when the start input is forged: the run fails before it projects anything.
        self._refused = False
        # The fingerprint of the last command applied (domain.retries): the same command again,
        # with nothing in between, is its retry. Rebuilt on replay by the handlers; a new run
        # (continue-as-new) starts without one.
        self._last_command: str | None = None

    @property
    def state(self) -> CaseState:
        """The case's state; thawed here when it was frozen while the case waited."""
        if self._state is None:
            assert self._frozen is not None
            self._state = thaw(self._frozen)  # type: ignore[assignment]
            self._frozen = None
        return self._state  # type: ignore[return-value]

    @state.setter
    def state(self, value: CaseState) -> None:
        self._state, self._frozen = value, None

    def _state_version(self) -> int:
        """The state's version without thawing it (the wait conditions ask at every step)."""
        return self._state.version if self._state is not None else self._frozen_version

    def _freeze(self) -> None:
        """Generation 2: the state as bytes while the case waits (models.compact: ~1.5 KB
        instead of ~11 KB of objects for a new case). A value for value copy, the policy
        shared: whoever touches `state` next gets the same case."""
        if self._state is not None:
            self._frozen = freeze(self._state, self._state.policy)
            self._frozen_version = self._state.version
            self._state = None

    def _commanded_now(self) -> bool:
        """Did a command (an Update) reach the case in this workflow task? Then it stays
        thawed: the next command of a burst follows within moments, and freezing and thawing
        the whole state on every command cost ~40 % of the worker's time per command (issue
        13, latency). It freezes once a later task finds it quiet (its quiet spell's timer,
        at the latest). The history length is the same for every step of one workflow task
        and grows with the next, also on replay; either way only memory depends on it."""
        return self._commanded_at == workflow.info().get_current_history_length()

    def _note_command(self) -> None:
        self._commanded_at = workflow.info().get_current_history_length()

    def _compact(self) -> None:
        """One fields set per model class in the state (models.compact: memory per cached
        case). Not behaviour: nothing reads those sets, so no patch. Generation 2's freeze
        shares them itself, when the case waits."""
        if self.inp.rules < LEAN_LOOP:
            share_fields_sets(self.state, skip=(Policy,))

    def _patched(self, patch_id: str) -> bool:
        """Is this behaviour change in force? In a case of rules generation 1 or later (the
        API's CASE_RULES) every patch of this module is, and Temporal is not asked: a
        `workflow.patched` costs a new run a marker event and an upsert of the
        TemporalChangeVersion search attribute (a visibility write) each, six at every case's
        start. A case started before generations (0) asks, as it always did, so its history
        replays unchanged. A behaviour change after generation 1 is a patch again (or a new
        generation for new cases only)."""
        return self.inp.rules >= 1 or workflow.patched(patch_id)

    def _ctx(self, actor: Actor) -> Ctx:
        return Ctx(actor=actor, now=workflow.now(), policy=self.state.policy)

    # ------------------------------------------------------------ main loop

    @workflow.run
    async def run(self, inp: CaseWorkflowInput) -> CaseState:
        # Behind a patch: cases started before seals replay as they ran. A forged start fails
        # here, before its first activity: nothing reaches the read model.
        if self._patched(SEALED_INPUT) and not self._start_sealed:
            self._refused = True
            workflow.logger.warning("refused a workflow start without OneFamily's seal")
            raise _forged()
        lean = self.inp.rules >= LEAN_LOOP
        runner = None if lean else asyncio.create_task(self._effects_loop())
        while True:
            self._fire_clocks()
            if lean:
                self._start_effects()
            self._upsert_search_attributes()
            if self._committee_changes():
                await self._tell_committee()
                continue
            if self.state.version > self.projected_version and self._projection_now():
                await self._project()
                continue
            if self.state.stage is Stage.closed:
                if not await self._settled():
                    continue
                if self.state.version == self.projected_version and not self._committee_changes():
                    if runner is not None:
                        runner.cancel()
                    return self.state
                continue
            if self._history_too_long():
                if not await self._settled():
                    continue
                if self.state.version > self.projected_version or self._committee_changes():
                    continue
                workflow.continue_as_new(
                    self.inp.model_copy(
                        update={
                            "state": self.state,
                            "create": None,
                            "projected_version": self.projected_version,
                            "committee_announced": self.announced,
                            "effects_done": sorted(self.effects_done),
                        }
                    )
                )
            await self._sleep_until_change_or_due()

    async def _settled(self) -> bool:
        """Wait until no handler runs and no message or document is on its way. False when,
        in generation 2, effects came up that nobody has started yet: the main loop starts
        them (in generation 1 the effects loop does, so that never happens there)."""
        lean = self.inp.rules >= LEAN_LOOP
        await workflow.wait_condition(
            lambda: (workflow.all_handlers_finished() and self._effects_idle())
            or (lean and bool(self._effects_to_start()))
        )
        return not (lean and self._effects_to_start())

    @staticmethod
    def _start_is_sealed(inp: CaseWorkflowInput) -> bool:
        """Does this run's input come from the API (DESIGN §9; domain.command_seal)? Decided
        in `__init__`, before any handler can touch the input, and enforced in `run()`.

        Workflow code, so it runs on replay too, with the keys kept to read old history. A run
        that Temporal continued from one of ours is not checked: its input is the state this
        workflow built, and no client can start a run that claims to be continued; retried or
        cron runs (which a forger could ask for) are checked like any start."""
        info = workflow.info()
        if info.continued_run_id is not None and info.attempt == 1 and not info.cron_schedule:
            return True
        target = command_seal.Target("start", info.workflow_id, info.workflow_type)
        return command_seal.admitted(target, inp, inp.seal, replaying=workflow.unsafe.is_replaying())

    def _projection_now(self) -> bool:
        """Project now, or after a quiet spell? The API writes the read model itself from each
        command's answer, so after a command this activity is only the safety net, run once
        the case has been quiet for a while. Changes the workflow makes on its own (clocks,
        the end of the case) have no one else to write them: project at once."""
        if self._own_change or self.state.stage is Stage.closed or self._history_too_long():
            return True
        now = workflow.now()
        if self._projection_due is None:
            self._projection_due = now + PROJECTION_QUIET
        return now >= self._projection_due

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.inp.max_history_events
        )

    async def _sleep_until_change_or_due(self) -> None:
        """Sleep until the next instant (a clock's reminder/due/ladder step, or the projection's
        quiet spell) or until a command changes the case. The durable timer is kept across
        commands: only a command that moves the next instant replaces it."""
        targets = [t for t in (clocks.next_instant(self.state), self._projection_due,
                               self._reminder_next) if t]
        target = min(targets) if targets else None
        if target != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = None, target
            if target is not None:
                delay = max(target - workflow.now(), timedelta(0)) + timedelta(seconds=1)
                if self.inp.rules >= LEAN_LOOP:
                    self._timer = _Alarm(delay.total_seconds())
                else:
                    self._timer = asyncio.create_task(workflow.sleep(delay))
        version, timer = self.state.version, self._timer
        lean = self.inp.rules >= LEAN_LOOP
        if lean and not self._commanded_now():
            self._freeze()
        await workflow.wait_condition(
            lambda: self._state_version() != version
            or self._history_too_long()
            or (timer is not None and timer.done())
            or (lean and bool(self._effects_to_start()))
        )
        if timer is not None and timer.done():
            self._timer, self._timer_at = None, None

    def _fire_clocks(self) -> None:
        now = workflow.now()
        recorded = clocks.fire(self.state, now)
        if recorded and self._by_event:
            effects.stamp_recipients(self.state, now)
        if recorded:
            self._own_change = True
            self.state.version += 1
            after_clocks(self.state, now)  # a consent whose end came expires; "blocked on"
            self._compact()
        if self._reminders:
            upcoming = family_effects.next_reminder(self.state, self.effects_done, now)
            if upcoming != self._reminder_next:
                self._reminder_next, self._reminder_epoch = upcoming, self._reminder_epoch + 1

    # ------------------------------------------------------------ messages and documents

    def _pending_effects(self) -> list[effects.Effect]:
        version, done, cached = self._effects_cache
        stamp = (self._state_version(), self._reminder_epoch)
        if version != stamp or done != len(self.effects_done):
            cached = effects.pending(self.state, self.effects_done, self._by_event, self._cancels,
                                     workflow.now() if self._reminders else None)
            self._effects_cache = (stamp, len(self.effects_done), cached)
        return cached

    def _effects_idle(self) -> bool:
        return not self._effects_busy and not self._in_flight and not self._pending_effects()

    async def _effects_loop(self) -> None:
        """Hand every pending message and document to its service, one at a time, beside the
        main loop (a message deferred by quiet hours must not hold up the case)."""
        if self.inp.rules >= 1:
            await self._effects_side_by_side()
            return
        while True:
            await workflow.wait_condition(lambda: bool(self._pending_effects()))
            self._effects_busy = True
            for effect in list(self._pending_effects()):
                if self._by_event and not effects.still_wanted(self.state, effect):
                    continue  # its deadline was met (or cancelled) while it waited
                try:
                    await self._perform(effect)
                except ActivityError:
                    # Delivery or rendering failed for good; the outbox row says why.
                    workflow.logger.warning("effect failed: %s", effect.key.split(":", 1)[-1])
                self.effects_done.add(effect.key)
            self._effects_busy = False

    async def _effects_side_by_side(self) -> None:
        """Generation 1: every pending effect is handed over at once, each in a task of its
        own. Their activities are scheduled in one workflow task and their completions share
        workflow tasks, instead of one workflow task per message (issue 13: a command that
        invites three people cost four). Each message has its own business key, so their order
        never mattered for what arrives; one deferred by quiet hours waits alone."""
        while True:
            await workflow.wait_condition(lambda: bool(self._effects_to_start()))
            self._start_effects()

    def _start_effects(self) -> None:
        """Hand every pending effect over, each in a task of its own (generation 1: from the
        effects loop; generation 2: wherever the case changes, and from the main loop)."""
        for effect in self._effects_to_start():
            if self._by_event and not effects.still_wanted(self.state, effect):
                self._passed[effect.key] = self.state.version  # until the case changes
                continue
            self._in_flight[effect.key] = asyncio.create_task(self._hand_over(effect))

    def _effects_to_start(self) -> list[effects.Effect]:
        return [e for e in self._pending_effects() if e.key not in self._in_flight
                and self._passed.get(e.key) != self._state_version()]

    async def _hand_over(self, effect: effects.Effect) -> None:
        try:
            await self._perform(effect)
        except ActivityError:
            # Delivery or rendering failed for good; the outbox row says why.
            workflow.logger.warning("effect failed: %s", effect.key.split(":", 1)[-1])
        self.effects_done.add(effect.key)
        self._in_flight.pop(effect.key, None)
        if self.inp.rules >= LEAN_LOOP:
            self._start_effects()  # what waited for this one (a fan-out, a follow-up)

    async def _perform(self, effect: effects.Effect) -> None:
        if effect.document is not None:
            kind, version = effect.document
            try:
                context = document_context(self.state, kind, version)
            except NoSuchContent:
                return
            await workflow.execute_activity(
                "render_document",
                effects.document_request(self.state, kind, version, context),
                # Documents have their own worker process (see worker.py).
                task_queue=f"{workflow.info().task_queue}-documents",
                start_to_close_timeout=RENDER_TIMEOUT,
                schedule_to_close_timeout=timedelta(days=1),
                retry_policy=EFFECT_RETRY,
            )
            return
        request = effect.notification
        assert request is not None
        targets = [request]
        if effect.fan_out is not None:
            recipients = await workflow.execute_activity(
                "resolve_recipients", effect.fan_out, result_type=list[Recipient],
                start_to_close_timeout=QUICK_ACTIVITY,
                schedule_to_close_timeout=timedelta(hours=1), retry_policy=EFFECT_RETRY,
            )
            targets = [request.model_copy(update={"recipient": r, "key": f"{request.key}:{r.id}"})
                       for r in recipients]
        for target in targets:
            await self._send(target)

    async def _send(self, request: NotificationRequest) -> None:
        while True:
            result = await workflow.execute_activity(
                "send_notification", request, result_type=NotificationResult,
                # Not shorter: an attempt holds its outbox row for the channel's socket
                # timeout + 30 s (activities/notifications.py lease), and a retry before the
                # lease ends only finds the row busy (docs/operations.md).
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(days=1), retry_policy=EFFECT_RETRY,
            )
            if result.status != "deferred" or result.not_before is None:
                return
            # Quiet hours (no SMS to families at night): deferred, not dropped.
            await workflow.sleep(max(result.not_before - workflow.now(), timedelta(seconds=1)))

    def _committee_changes(self) -> list[EscalationItem]:
        return [i for i in self.state.escalations if self.announced.get(i.id) != i.status]

    async def _tell_committee(self) -> None:
        """Escalations join the committee's queue (signal-with-start); decisions and withdrawals
        reach it too. Idempotent: the committee keys items by id."""
        for item in self._committee_changes():
            await workflow.execute_activity(
                "committee_item_changed",
                args=[item, self.state.policy],
                start_to_close_timeout=QUICK_ACTIVITY,
                schedule_to_close_timeout=timedelta(days=7),
                retry_policy=PROJECTION_RETRY,
            )
            self.announced[item.id] = item.status

    async def _project(self) -> None:
        version = self.state.version
        try:
            await workflow.execute_activity(
                "project_case",
                self.state,
                start_to_close_timeout=QUICK_ACTIVITY,
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PROJECTION_RETRY,
            )
        except ActivityError:
            # The read model is behind; the next change (or this retry timer) projects again.
            workflow.logger.warning("projection failed for version %s", version)
            await workflow.sleep(timedelta(minutes=5))
            return
        self.projected_version = max(self.projected_version, version)
        self._projection_due = None
        if self.projected_version >= self.state.version:
            self._own_change = False

    def _search_attributes_due(self) -> bool:
        """Generation 1: search attributes follow the projection. They are written at a run's
        first task (the start back-pressure reads "started" from them, api/backlog.py), on the
        workflow's own changes (a deadline overdue shows at once), and once the case is quiet
        and projected; a command's changes wait for that quiet spell (PROJECTION_QUIET), so a
        burst of commands costs one visibility write instead of one each. Visibility is
        eventually consistent anyway; the lists read the read model, which the API writes with
        every answer. Generation 0 writes them after every change, as it always did."""
        return (self.inp.rules < 1 or not self._search_attributes or self._own_change
                or self.state.version <= self.projected_version)

    def _upsert_search_attributes(self) -> None:
        if not self._search_attributes_due():
            return
        state = self.state
        due = dl.next_due(state)
        wanted: dict[str, object] = {
            search.STAGE.name: state.stage.value,
            search.COORDINATOR.name: state.coordinator_id or "",
            search.NEXT_DEADLINE.name: due,
            search.OVERDUE.name: any(d.status is DeadlineStatus.overdue for d in state.deadlines),
            search.BLOCKED_ON.name: state.blocked_on.what if state.blocked_on else "",
        }
        if wanted == self._search_attributes:
            return
        updates = [
            search.STAGE.value_set(state.stage.value),
            search.COORDINATOR.value_set(state.coordinator_id or ""),
            search.OVERDUE.value_set(bool(wanted[search.OVERDUE.name])),
            search.BLOCKED_ON.value_set(str(wanted[search.BLOCKED_ON.name])),
            search.NEXT_DEADLINE.value_set(due.astimezone(UTC)) if due
            else search.NEXT_DEADLINE.value_unset(),
        ]
        workflow.upsert_search_attributes(updates)
        self._search_attributes = wanted

    # ------------------------------------------------------------ queries and updates

    @workflow.query
    def case(self) -> CaseState:
        if self._refused:  # a forged start: its state is the forger's, never shown as a case
            raise _forged()
        return self.state

    @workflow.query
    def policy(self) -> Policy:
        """The case's policy, for a process that meets its digest in an answer for the first
        time (api/gateway.py)."""
        if self._refused:
            raise _forged()
        return self.state.policy

    @workflow.update
    def snapshot(self) -> CaseAnswer:
        """No-op update used with update-with-start, so creating a case answers with it."""
        self._note_command()
        return self._answer()

    @workflow.update
    def note_duplicates(self, inp: CommandInput) -> CaseAnswer:
        """A registration of the same person, made at the same time, names this case too
        (api/duplicates.py): the possible-duplicate flag gets its id. Not a user's command
        (no history entry, no retry rule); new, so no history before it holds one."""
        self._note_command()
        ids = list((inp.body or {}).get("case_ids") or [])
        if retries.note_possible_duplicates(self.state, ids):
            self.state.version += 1
        return self._answer()

    @note_duplicates.validator
    def _v_note_duplicates(self, inp: CommandInput) -> None:
        update_id = workflow.current_update_info().id
        target = command_seal.Target("update", workflow.info().workflow_id, "note_duplicates",
                                     update_id)
        if not command_seal.admitted(target, inp, inp.seal, replaying=False):
            raise _forged()
        ids = (inp.body or {}).get("case_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 100:
            raise ApplicationError("case_ids must be a list of case ids", type="invalid",
                                   non_retryable=True)

    def _validate(self, name: str, inp: CommandInput) -> None:
        # First of all: only OneFamily's API commands a case (DESIGN §9). Validators run on
        # first delivery only, never on replay, so a refusal leaves no trace in the history.
        update_id = workflow.current_update_info().id
        target = command_seal.Target("update", workflow.info().workflow_id, name, update_id)
        if not command_seal.admitted(target, inp, inp.seal, replaying=False):
            raise _forged()
        if retries.keyless(update_id) and retries.fingerprint(name, inp) == self._last_command:
            return  # a retry of the last command: accepted, answered with the case as it is
        candidate = working_copy(self.state)
        try:
            execute(candidate, name, inp, self._ctx(inp.actor))
        except Refusal as refusal:
            raise _refusal_error(refusal) from None
        except ValidationError as error:
            raise ApplicationError(
                f"Invalid {name} body: {error.error_count()} error(s)", type="invalid",
                non_retryable=True,
            ) from None
        self._validated[update_id] = (self.state.version, candidate)

    def _apply(self, name: str, inp: CommandInput) -> CaseAnswer:
        self._note_command()
        self._change(name, inp)
        return self._answer()

    def _answer(self) -> CaseAnswer:
        """The case as a command's answer: the policy by its digest (models.case.CaseAnswer).
        The answer is not replayed, so its form needs no patch."""
        state = self.state
        return CaseAnswer.model_construct(**{**state.__dict__, "policy": None},
                                          policy_digest=policy_digest(state.policy))

    def _change(self, name: str, inp: CommandInput) -> None:
        info = workflow.current_update_info()
        cached = self._validated.pop(info.id, None) if info else None
        fingerprint = retries.fingerprint(name, inp)
        # Behind a patch (domain.retries): a retry gets the first try's answer, and a plan
        # draft equal to the pending one is that draft. Runs that applied such a command
        # before the patch replay as they ran.
        if (fingerprint == self._last_command and retries.keyless(info.id if info else None)
                and self._patched(RETRY_ANSWERS)):
            return
        if cached is not None and cached[0] == self.state.version:
            candidate = cached[1]
        else:
            candidate = working_copy(self.state)
            try:
                execute(candidate, name, inp, self._ctx(inp.actor))
            except Refusal as refusal:  # state changed since validation: refuse, change nothing
                raise _refusal_error(refusal) from None
        self._last_command = fingerprint
        if (name == "put_plan" and retries.same_as_pending_draft(self.state, inp.body)
                and self._patched(RETRY_ANSWERS)):
            return  # checked like any draft (who, stage), but no new version
        self.state = candidate
        self._compact()
        if self.inp.rules >= LEAN_LOOP:
            self._start_effects()  # the command's messages leave now, whatever the loop does

    @workflow.update
    def assign_coordinator(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("assign_coordinator", inp)

    @assign_coordinator.validator
    def _v_assign_coordinator(self, inp: CommandInput) -> None:
        self._validate("assign_coordinator", inp)

    @workflow.update
    def form_team(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("form_team", inp)

    @form_team.validator
    def _v_form_team(self, inp: CommandInput) -> None:
        self._validate("form_team", inp)

    @workflow.update
    def record_contact(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("record_contact", inp)

    @record_contact.validator
    def _v_record_contact(self, inp: CommandInput) -> None:
        self._validate("record_contact", inp)

    @workflow.update
    def triage(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("triage", inp)

    @triage.validator
    def _v_triage(self, inp: CommandInput) -> None:
        self._validate("triage", inp)

    @workflow.update
    def schedule_assessment_meeting(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("schedule_assessment_meeting", inp)

    @schedule_assessment_meeting.validator
    def _v_schedule_assessment_meeting(self, inp: CommandInput) -> None:
        self._validate("schedule_assessment_meeting", inp)

    @workflow.update
    def put_assessment(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("put_assessment", inp)

    @put_assessment.validator
    def _v_put_assessment(self, inp: CommandInput) -> None:
        self._validate("put_assessment", inp)

    @workflow.update
    def complete_assessment(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("complete_assessment", inp)

    @complete_assessment.validator
    def _v_complete_assessment(self, inp: CommandInput) -> None:
        self._validate("complete_assessment", inp)

    @workflow.update
    def put_plan(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("put_plan", inp)

    @put_plan.validator
    def _v_put_plan(self, inp: CommandInput) -> None:
        self._validate("put_plan", inp)

    @workflow.update
    def vote(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("vote", inp)

    @vote.validator
    def _v_vote(self, inp: CommandInput) -> None:
        self._validate("vote", inp)

    @workflow.update
    def family_response(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("family_response", inp)

    @family_response.validator
    def _v_family_response(self, inp: CommandInput) -> None:
        self._validate("family_response", inp)

    @workflow.update
    def committee_decision(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("committee_decision", inp)

    @committee_decision.validator
    def _v_committee_decision(self, inp: CommandInput) -> None:
        self._validate("committee_decision", inp)

    @workflow.update
    def status_meeting(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("status_meeting", inp)

    @status_meeting.validator
    def _v_status_meeting(self, inp: CommandInput) -> None:
        self._validate("status_meeting", inp)

    @workflow.update
    def close(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("close", inp)

    @close.validator
    def _v_close(self, inp: CommandInput) -> None:
        self._validate("close", inp)

    @workflow.update
    def pause(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("pause", inp)

    @pause.validator
    def _v_pause(self, inp: CommandInput) -> None:
        self._validate("pause", inp)

    @workflow.update
    def resume(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("resume", inp)

    @resume.validator
    def _v_resume(self, inp: CommandInput) -> None:
        self._validate("resume", inp)

    @workflow.update
    def provisional_assessment(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("provisional_assessment", inp)

    @provisional_assessment.validator
    def _v_provisional_assessment(self, inp: CommandInput) -> None:
        self._validate("provisional_assessment", inp)

    @workflow.update
    def extend_assessment(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("extend_assessment", inp)

    @extend_assessment.validator
    def _v_extend_assessment(self, inp: CommandInput) -> None:
        self._validate("extend_assessment", inp)

    @workflow.update
    def schedule_status_meeting(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("schedule_status_meeting", inp)

    @schedule_status_meeting.validator
    def _v_schedule_status_meeting(self, inp: CommandInput) -> None:
        self._validate("schedule_status_meeting", inp)

    @workflow.update
    def give_consent(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("give_consent", inp)

    @give_consent.validator
    def _v_give_consent(self, inp: CommandInput) -> None:
        self._validate("give_consent", inp)

    @workflow.update
    def change_consent(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("change_consent", inp)

    @change_consent.validator
    def _v_change_consent(self, inp: CommandInput) -> None:
        self._validate("change_consent", inp)

    @workflow.update
    def revoke_consent(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("revoke_consent", inp)

    @revoke_consent.validator
    def _v_revoke_consent(self, inp: CommandInput) -> None:
        self._validate("revoke_consent", inp)

    @workflow.update
    def set_contact_preference(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("set_contact_preference", inp)

    @set_contact_preference.validator
    def _v_set_contact_preference(self, inp: CommandInput) -> None:
        self._validate("set_contact_preference", inp)

    @workflow.update
    def family_focus_points(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("family_focus_points", inp)

    @family_focus_points.validator
    def _v_family_focus_points(self, inp: CommandInput) -> None:
        self._validate("family_focus_points", inp)

    @workflow.update
    def confirm_focus_points(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("confirm_focus_points", inp)

    @confirm_focus_points.validator
    def _v_confirm_focus_points(self, inp: CommandInput) -> None:
        self._validate("confirm_focus_points", inp)

    @workflow.update
    def request_pause(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("request_pause", inp)

    @request_pause.validator
    def _v_request_pause(self, inp: CommandInput) -> None:
        self._validate("request_pause", inp)

    @workflow.update
    def record_outcomes(self, inp: CommandInput) -> CaseAnswer:
        return self._apply("record_outcomes", inp)

    @record_outcomes.validator
    def _v_record_outcomes(self, inp: CommandInput) -> None:
        self._validate("record_outcomes", inp)
