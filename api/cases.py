"""Cases: register a referral, read a case, and every command of the lifecycle (DESIGN §5)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api import examples
from api.backlog import note_created, refuse_when_over
from api.deps import (
    Caller,
    get_caller,
    get_client,
    get_engine_dep,
    get_session,
    get_settings_dep,
    lookup_staff,
)
from api.duplicates import claim_persons, release_persons, tell_each_other
from api.gateway import live_state, project, send, start_case, utcnow, workflow_id
from api.policy import latest_policy, policy_version
from api.readmodel import case_summary, least_loaded, list_cases, open_caseloads
from api.scope import load_facts
from api.views import case_view
from domain import shared_policy
from domain.access import (
    CaseFacts,
    case_scope,
    command_refusal,
    facts_from_state,
    may_assign,
    may_see_duplicates,
    read_refusal,
    unit_of,
)
from domain.lifecycle import Ctx, new_case
from models import search
from models.case import (
    Actor,
    AssessmentContent,
    AssignCoordinator,
    CaseCreate,
    CaseState,
    CastVote,
    CloseCase,
    CompleteAssessment,
    ExtendAssessment,
    FamilyResponse,
    FormTeam,
    PauseCase,
    PlanDraft,
    ProvisionalAssessmentIn,
    RecordContact,
    RecordStatusMeeting,
    ScheduleAssessmentMeeting,
    ScheduleStatusMeeting,
    Stage,
    Triage,
)
from models.commands import CASE_RULES, CaseWorkflowInput, CommandInput
from models.outcomes import RecordOutcomes
from models.tables import CaseRow
from settings import Settings
from workflows.case import FamilyCaseWorkflow

router = APIRouter(prefix="/api/v1/cases", tags=["cases"])
# uuid5 namespace: the same caller's Idempotency-Key always names the same case.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3a52-8c1e-4f55-9d55-0ff1ce0fa111")


@dataclass
class Commands:
    caller: Caller
    session: Session
    client: Client
    engine: Engine
    settings: Settings
    idempotency_key: str | None
    # Set by the pages: the case version the page showed (a stale page applies nothing).
    expected_version: int | None = None

    def staff(self, ids: list[str], what: str) -> None:
        unknown = [i for i in dict.fromkeys(ids) if lookup_staff(self.session, i) is None]
        if unknown:
            raise HTTPException(422, f"Unknown staff id(s) in {what}: {', '.join(unknown)}.")

    async def facts(self, case_id: str) -> tuple[CaseFacts, CaseState | None]:
        """The case's need-to-know facts from the read model (404 for an unknown case); the
        live state only when the read model does not have the case yet."""
        _check_case_id(case_id)
        facts = load_facts(self.session, case_id)
        if facts is not None:
            return facts, None
        state = await live_state(self.client, self.engine, case_id)  # 404 when unknown
        return facts_from_state(state), state

    async def gate(self, case_id: str, actor: Actor) -> CaseFacts:
        """The access policy before anything reaches the case, in the contract's order:
        404 unknown case, then 403 for a caller it keeps out (the workflow's rules decide
        the rest: roles, stage, 409)."""
        facts, _ = await self.facts(case_id)
        refusal = command_refusal(actor, facts)
        if refusal:
            raise HTTPException(403, refusal)
        return facts

    async def run(self, case_id: str, name: str, inp: CommandInput,
                  facts: CaseFacts | None = None) -> dict:
        if facts is None:
            facts = await self.gate(case_id, inp.actor)
        # Give the database connection back before waiting on the case: commands queue per
        # case, and a held connection per queued request would drain the pool.
        self.session.close()
        # The key is the caller's (DESIGN §5): another caller's replay is a new command.
        if self.expected_version is not None:
            inp.expected_version = self.expected_version
        key = self.idempotency_key
        update_id = f"{inp.actor.id}:{key}" if key else None
        state = await send(self.client, self.engine, case_id, name, inp, update_id,
                           self.settings.command_timeout)
        return case_view(state, utcnow(), may_see_duplicates(inp.actor, facts))


async def get_commands(
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    client: Client = Depends(get_client),
    engine: Engine = Depends(get_engine_dep),
    settings: Settings = Depends(get_settings_dep),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Commands:
    return Commands(caller, session, client, engine, settings, idempotency_key)


Cmd = Annotated[Commands, Depends(get_commands)]


def _check_case_id(case_id: str) -> None:
    try:
        uuid.UUID(case_id)
    except ValueError:
        raise HTTPException(404, "No such case (case ids are UUIDs).") from None


def _body(model) -> dict:
    return model.model_dump(mode="json")


# ---------------------------------------------------------------- register and read


@router.post("", status_code=201)
async def register_referral(
    body: Annotated[CaseCreate, Body(openapi_examples=examples.CASE_CREATE)], cmd: Cmd
) -> dict:
    actor = cmd.caller.require()
    key = cmd.idempotency_key
    # Scoped to the caller: another caller's replay of the key names another (new) case.
    case_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{actor.id}\n{key}") if key else uuid.uuid4())
    if key and cmd.session.get(CaseRow, case_id) is not None:  # the same caller retried
        return await _read(cmd, actor, case_id)
    # Back-pressure (api/backlog.py): creation must not run away from the case workers.
    await refuse_when_over(cmd.client, cmd.settings.start_backlog_limit,
                           timedelta(seconds=cmd.settings.not_started_seconds))
    # This case's persons are claimed (committed) before others are looked for, so two
    # registrations at the same time cannot both miss each other (api/duplicates.py).
    duplicates = await asyncio.to_thread(claim_persons, cmd.engine, case_id, body, key is not None)
    # The process's one object of this content: the commands' answers name it by its digest.
    policy = shared_policy.shared(latest_policy(cmd.session, cmd.settings.country))
    now = utcnow()
    inp = CaseWorkflowInput(case_id=case_id, policy=policy, actor=actor, create=body,
                            possible_duplicates=duplicates, created_at=now, rules=CASE_RULES)
    cmd.session.close()
    # Within the command deadline, or a 503 saying whether the case may exist (api/gateway.py).
    try:
        await start_case(
            cmd.client,
            FamilyCaseWorkflow.run,
            inp,
            timeout=cmd.settings.command_timeout,
            keyed=key is not None,
            id=workflow_id(case_id),
            task_queue=cmd.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(search.STAGE, Stage.referred.value)]
            ),
        )
    except HTTPException:
        # A case that does exist after all gets its rows back from its first projection.
        await asyncio.to_thread(release_persons, cmd.engine, case_id)
        raise
    note_created(cmd.client)
    # Registrations of the same person that claimed meanwhile, and those found, are told.
    await tell_each_other(cmd.client, cmd.engine, case_id, body, duplicates, actor,
                          cmd.settings.command_timeout)
    # The workflow builds the same state from the same input (new_case is pure), so the answer
    # need not wait for the workflow's first task.
    state = new_case(case_id, body, Ctx(actor=actor, now=now, policy=policy), duplicates,
                     outcome_rules=True)  # as the workflow of a new case has it
    await project(cmd.engine, state)
    return case_view(state, utcnow(), may_see_duplicates(actor, facts_from_state(state)))


@router.get("")
async def list_all(
    cmd: Cmd,
    stage: Stage | None = None,
    coordinator_id: str | None = None,
    overdue: bool | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict:
    actor = cmd.caller.require()
    now = utcnow()
    rows, total = await asyncio.to_thread(
        list_cases, cmd.session, now, stage=stage, coordinator_id=coordinator_id,
        overdue=overdue, q=q, scope=case_scope(actor), limit=limit, offset=offset,
    )
    return {"items": [case_summary(r, now) for r in rows], "total": total}


@router.get("/{case_id}")
async def get_case(case_id: str, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await _read(cmd, actor, case_id)


async def _read(cmd: Commands, actor: Actor, case_id: str) -> dict:
    """The case as this reader may see it: 404 unknown, 403 outside need-to-know."""
    facts, state = await cmd.facts(case_id)
    refusal = read_refusal(actor, facts)
    if refusal:
        raise HTTPException(403, refusal)
    cmd.session.close()
    if state is None:
        state = await live_state(cmd.client, cmd.engine, case_id)
    return case_view(state, utcnow(), may_see_duplicates(actor, facts))


# ---------------------------------------------------------------- commands


@router.post("/{case_id}/coordinator")
async def assign_coordinator(case_id: str, body: AssignCoordinator, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    target = lookup_staff(cmd.session, body.coordinator_id)
    if target is None:
        raise HTTPException(422, f"Unknown staff id '{body.coordinator_id}'.")
    if "coordinator" not in target.roles:
        raise HTTPException(422, f"'{body.coordinator_id}' does not have the coordinator role.")
    facts = await cmd.gate(case_id, actor)
    refusal = may_assign(actor, unit_of(target))
    if refusal:
        raise HTTPException(403, refusal)
    cap = latest_policy(cmd.session, cmd.settings.country).caseload_cap
    load = open_caseloads(cmd.session).get(body.coordinator_id, 0)
    suggestion = (least_loaded(cmd.session, cap, exclude=body.coordinator_id, unit=facts.unit)
                  if load >= cap else None)
    inp = CommandInput(actor=actor, body=_body(body), coordinator_load=load, suggestion=suggestion)
    return await cmd.run(case_id, "assign_coordinator", inp, facts)


@router.post("/{case_id}/team")
async def form_team(case_id: str, body: FormTeam, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    cmd.staff([m.staff_id for m in body.members], "the team")
    return await cmd.run(case_id, "form_team", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/contacts")
async def record_contact(case_id: str, body: RecordContact, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "record_contact", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/triage")
async def triage(case_id: str, body: Triage, cmd: Cmd) -> dict:
    """Concern reports: the 24-hour triage, and the receipt to a reporting professional."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "triage", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/assessment/meeting")
async def schedule_assessment_meeting(case_id: str, body: ScheduleAssessmentMeeting, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(
        case_id, "schedule_assessment_meeting", CommandInput(actor=actor, body=_body(body))
    )


@router.put("/{case_id}/assessment")
async def put_assessment(
    case_id: str, body: Annotated[AssessmentContent, Body(openapi_examples=examples.ASSESSMENT)],
    cmd: Cmd,
) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "put_assessment", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/assessment/complete")
async def complete_assessment(
    case_id: str, cmd: Cmd, body: Annotated[CompleteAssessment | None, Body()] = None,
) -> dict:
    """Finish the assessment (renders the report); optionally with the outcome instruments
    filled in at the assessment (`measurements`, see POST .../outcomes)."""
    actor = cmd.caller.require()
    data = _body(body) if body is not None and body.measurements else None
    return await cmd.run(case_id, "complete_assessment", CommandInput(actor=actor, body=data))


@router.post("/{case_id}/outcomes")
async def record_outcomes(case_id: str, body: RecordOutcomes, cmd: Cmd) -> dict:
    """Record outcome measures (SDQ, family climate, ASI extract, goal attainment; the
    instruments are the case's policy data) outside a meeting: occasion `assessment` until the
    plan is active, then `status_meeting`. Totals are computed, never sent. A score out of
    range, an unknown instrument, informant or scale: 422 with a sentence, nothing applied."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "record_outcomes", CommandInput(actor=actor, body=_body(body)))


@router.put("/{case_id}/plan")
async def put_plan(
    case_id: str, body: Annotated[PlanDraft, Body(openapi_examples=examples.PLAN)], cmd: Cmd
) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "put_plan", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/plan/votes")
async def vote(case_id: str, body: CastVote, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    cmd.staff([body.staff_id], "the vote")
    return await cmd.run(case_id, "vote", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/plan/family-response")
async def family_response(case_id: str, body: FamilyResponse, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "family_response", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/status-meetings")
async def status_meeting(case_id: str, body: RecordStatusMeeting, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    policy = None
    if body.policy_version is not None:
        policy = policy_version(cmd.session, cmd.settings.country, body.policy_version)
        if policy is None:
            raise HTTPException(422, f"There is no policy version {body.policy_version}.")
    inp = CommandInput(actor=actor, body=_body(body), policy=policy)
    return await cmd.run(case_id, "status_meeting", inp)


@router.post("/{case_id}/status-meetings/schedule")
async def schedule_status_meeting(case_id: str, body: ScheduleStatusMeeting, cmd: Cmd) -> dict:
    """Plan the next status meeting: starts the pre-meeting contact with the family and sends
    the invitations (with an .ics) to the participants and the family."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "schedule_status_meeting",
                         CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/pause")
async def pause(case_id: str, body: PauseCase, cmd: Cmd) -> dict:
    """The family asked for a break, or the case waits for the family (e.g. consent): the
    clocks the policy pauses stop, recorded; statutory clocks keep running."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "pause", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/resume")
async def resume(case_id: str, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "resume", CommandInput(actor=actor))


@router.post("/{case_id}/assessment/provisional")
async def provisional_assessment(case_id: str, body: ProvisionalAssessmentIn, cmd: Cmd) -> dict:
    """The recorded provisional assessment the law asks for when the deadline is missed."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "provisional_assessment",
                         CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/assessment/extension")
async def extend_assessment(case_id: str, body: ExtendAssessment, cmd: Cmd) -> dict:
    """Sweden: the committee (nämnd) extends the assessment deadline by a recorded decision."""
    actor = cmd.caller.require()
    return await cmd.run(case_id, "extend_assessment", CommandInput(actor=actor, body=_body(body)))


@router.post("/{case_id}/close")
async def close(case_id: str, body: CloseCase, cmd: Cmd) -> dict:
    actor = cmd.caller.require()
    return await cmd.run(case_id, "close", CommandInput(actor=actor, body=_body(body)))


