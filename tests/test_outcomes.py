"""Outcome instruments (DESIGN §3.8, issue 11 point 2): validation, totals, bands, before/after
within one informant, family climate against the norms — as pure rules, through the lifecycle,
and through the real workflow (time-skipping server) and the API.

The named test of the issue: the Uppsala evaluation's Tyresö subscales for the child (before
5/4/6/3, prosocial 7.8; after 5/7/9/8, prosocial 9) and the mother (2/2/3/1, 7; 5/1/2/3, 6) give
total difficulties 18 -> 29 and 8 -> 11.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from api import cases as cases_api
from domain import outcomes as oc
from domain.lifecycle import Refusal, execute, new_case, working_copy
from domain.policy import DK, SE
from models.case import Actor, CaseAnswer, CaseCreate, CaseState, Stage
from models.commands import CaseWorkflowInput, CommandInput
from models.outcomes import SDQ, OutcomeIn
from settings import Settings
from tests.apps import engine_client
from tests.conftest import running_worker, save_history
from tests.factories import NOW, case_create, case_create_body, coordinator, ctx, whole
from workflows.case import FamilyCaseWorkflow

INSTRUMENTS = DK.outcome_instruments
ANNA = coordinator()
ADMIN = Actor(id="admin", roles=["admin"])
SUBSCALES = ("emotional", "conduct", "hyperactivity", "peer")


def sdq(informant: str, e: float, c: float, h: float, p: float, prosocial: float) -> dict:
    return {"instrument": "sdq", "informant": informant,
            "scores": dict(zip((*SUBSCALES, "prosocial"), (e, c, h, p, prosocial), strict=True))}


TYRESO_BEFORE = [sdq("child", 5, 4, 6, 3, 7.8), sdq("mother", 2, 2, 3, 1, 7)]
TYRESO_AFTER = [sdq("child", 5, 7, 9, 8, 9), sdq("mother", 5, 1, 2, 3, 6)]
CLIMATE = {"instrument": "family_climate", "informant": "mother",
           "scores": {"closeness": 2.6, "distance": 2.1, "spontaneity": 2.4, "chaos": 2.3}}


def items(*raw: dict) -> list[OutcomeIn]:
    return [OutcomeIn.model_validate(r) for r in raw]


def refusal(raw: dict, goal_ids: set[str] | None = None) -> str:
    with pytest.raises(oc.OutcomeRefusal) as error:
        oc.measure(INSTRUMENTS, items(raw), "assessment", NOW, "anna", goal_ids)
    return error.value.message


# ---------------------------------------------------------------- the rules


def test_tyreso_totals_bands_and_comparison_within_the_informant() -> None:
    before = oc.measure(INSTRUMENTS, items(*TYRESO_BEFORE), "assessment", NOW, "anna")
    after = oc.measure(INSTRUMENTS, items(*TYRESO_AFTER), "closing", NOW + timedelta(days=300),
                       "anna")
    assert [m.totals for m in before] == [{"total_difficulties": 18}, {"total_difficulties": 8}]
    assert [m.totals for m in after] == [{"total_difficulties": 29}, {"total_difficulties": 11}]
    child, mother = oc.comparisons(INSTRUMENTS, [*before, *after])
    assert (child.informant, mother.informant) == ("child", "mother")
    assert child.change["total_difficulties"] == 11 and mother.change["total_difficulties"] == 3
    assert child.direction["total_difficulties"] == "worse"
    # Prosocial is a strength: up is better, and it is kept, never added to the total.
    assert child.change["prosocial"] == pytest.approx(1.2) and child.direction["prosocial"] == "better"
    # Bands by the informant's form: the child's self-report, the mother's parent form.
    assert child.bands["total_difficulties"] == ("high", "very_high")
    assert mother.bands["total_difficulties"] == ("close_to_average", "close_to_average")
    assert child.bands["prosocial"] == ("close_to_average", "close_to_average")  # 7.8 -> 8
    assert mother.bands["prosocial"] == ("slightly_lowered", "low")


def test_bands_follow_the_published_four_band_cut_offs() -> None:
    band = oc.band
    # Parent form total difficulties: 0-13, 14-16, 17-19, 20-40.
    assert [band(SDQ, "total_difficulties", "mother", v) for v in (13, 14, 16, 17, 19, 20, 40)] == [
        "close_to_average", "slightly_raised", "slightly_raised", "high", "high", "very_high",
        "very_high"]
    # Teacher: 0-11, 12-15, 16-18, 19-40; self-report: 0-14, 15-17, 18-19, 20-40.
    assert [band(SDQ, "total_difficulties", "teacher", v) for v in (11, 12, 16, 19)] == [
        "close_to_average", "slightly_raised", "high", "very_high"]
    assert [band(SDQ, "total_difficulties", "child", v) for v in (14, 15, 18, 20)] == [
        "close_to_average", "slightly_raised", "high", "very_high"]
    assert band(SDQ, "total_difficulties", "father", 13.5) == "slightly_raised"  # half up
    assert DK.outcome_instruments["sdq"].bands == SE.outcome_instruments["sdq"].bands


@pytest.mark.parametrize(("raw", "words"), [
    ({"instrument": "sdq", "informant": "teacher", "scores": {"total_difficulties": 55}},
     "is computed from the scales"),
    (sdq("teacher", 5, 15, 2, 2, 6), "The sdq scale 'conduct' from the teacher must be between 0 and 10."),
    (sdq("mother", -1, 1, 2, 2, 6), "must be between 0 and 10"),
    ({"instrument": "pedsql", "informant": "mother", "scores": {"x": 1}},
     "Unknown outcome instrument 'pedsql'; this municipality uses: asi, family_climate"),
    (sdq("neighbour", 1, 1, 1, 1, 6), "Unknown informant 'neighbour' for sdq; allowed: child, "
                                      "father, mother, teacher."),
    ({"instrument": "sdq", "informant": "mother", "scores": {"emotional": 2, "conduct": 1}},
     "missing the scale(s) hyperactivity, peer, prosocial"),
    ({**sdq("mother", 1, 1, 1, 1, 6), "scores": {**sdq("mother", 1, 1, 1, 1, 6)["scores"], "mood": 3}},
     "Unknown sdq scale(s) mood"),
    ({**CLIMATE, "scores": {**CLIMATE["scores"], "chaos": 5}}, "between 1 and 4"),
    ({"instrument": "asi", "informant": "father", "scores": {
        "alcohol_days": 31, "drug_days": 0, "relationship_days": 3, "troubled": 2,
        "help_importance": 3}}, "'alcohol_days' from the father must be between 0 and 30"),
    ({"instrument": "goal_attainment", "informant": "team", "scores": {"attainment": 1}},
     "recorded per goal"),
    ({"instrument": "goal_attainment", "informant": "team", "scores": {"attainment": 3},
      "goal_id": "g1"}, "between -2 and 2"),
    ({"instrument": "goal_attainment", "informant": "team", "scores": {"attainment": 1},
      "goal_id": "g9"}, "Goal 'g9' is not in the case's plan."),
])
def test_bad_scores_are_refused_with_a_sentence_that_never_repeats_the_score(
    raw: dict, words: str
) -> None:
    message = refusal(raw, {"g1"})
    assert words in message
    assert "55" not in message and "15" not in message and "31" not in message


def test_all_or_nothing_and_no_double_entry() -> None:
    with pytest.raises(oc.OutcomeRefusal, match="twice"):
        oc.measure(INSTRUMENTS, items(TYRESO_BEFORE[1], TYRESO_BEFORE[1]), "assessment", NOW, "a")


def test_family_climate_against_the_norms_and_goal_attainment_per_goal() -> None:
    first = oc.measure(INSTRUMENTS, items(CLIMATE), "assessment", NOW, "anna")
    later = {**CLIMATE, "scores": {"closeness": 3.0, "distance": 1.8, "spontaneity": 2.7,
                                   "chaos": 1.9}}
    last = oc.measure(INSTRUMENTS, items(later), "closing", NOW, "anna")
    [c] = oc.comparisons(INSTRUMENTS, [*first, *last])
    norms = INSTRUMENTS["family_climate"].norms
    assert c.norms["closeness"] == (round(2.6 - norms["closeness"], 2),
                                    round(3.0 - norms["closeness"], 2))
    assert c.direction == {"closeness": "better", "distance": "better", "spontaneity": "better",
                           "chaos": "better"}
    gas = [{"instrument": "goal_attainment", "informant": "team", "scores": {"attainment": a},
            "goal_id": g} for g, a in (("g1", -1), ("g2", 0))]
    m = oc.measure(INSTRUMENTS, items(*gas), "status_meeting", NOW, "anna", {"g1", "g2"})
    m += oc.measure(INSTRUMENTS, items({**gas[0], "scores": {"attainment": 2}}), "closing", NOW,
                    "anna", {"g1", "g2"})
    g1, g2 = oc.comparisons(INSTRUMENTS, m)
    assert (g1.goal_id, g1.change, g1.bands["attainment"]) == (
        "g1", {"attainment": 3}, ("less_than_expected", "much_more_than_expected"))
    assert (g2.goal_id, g2.latest) == ("g2", None)


def test_the_old_close_object_is_checked_and_mapped_where_it_can_be() -> None:
    def legacy(outcomes: dict) -> list:
        return oc.legacy_outcomes(INSTRUMENTS, outcomes, NOW, "anna", {"g1", "g2"})

    # The page's totals: checked (0-40), kept in closure.outcomes, not measurements.
    assert legacy({"sdq": [{"child": "Emil", "informant": "mother", "before": 18,
                            "after": 12}]}) == []
    for bad, words in [
        ({"sdq": [{"informant": "teacher", "before": 20, "after": 55}]}, "between 0 and 40"),
        ({"sdq": {"Emil (mother)": {"before": 20, "after": 14}}}, "Unknown informant"),
        ({"wellbeing": {"mother": {"before": 1}}}, "Unknown outcome instrument"),
        ({"goal_attainment": {"g1": 4}}, "between -2 and 2"),
        ({"goal_attainment": {"g1": "great"}}, "attainment must be one of"),
    ]:
        with pytest.raises(oc.OutcomeRefusal, match=words):
            legacy(bad)
    # Scales and GAS scores become measurements.
    mapped = legacy({"sdq": {"mother": {"before": TYRESO_BEFORE[1]["scores"],
                                        "after": TYRESO_AFTER[1]["scores"]}},
                     "goal_attainment": {"g1": "achieved", "g2": {"score": 1, "status": "achieved"}}})
    assert [(m.instrument, m.occasion, m.totals) for m in mapped] == [
        ("sdq", "assessment", {"total_difficulties": 8}), ("sdq", "closing",
                                                           {"total_difficulties": 11}),
        ("goal_attainment", "closing", {})]


# ---------------------------------------------------------------- through the lifecycle


def run(state: CaseState, name: str, body: dict | None, now: datetime = NOW,
        who: Actor = ANNA) -> CaseState:
    # On a copy, as the workflow does: a refusal leaves `state` as it was.
    return execute(working_copy(state), name, CommandInput(actor=who, body=body), ctx(who, now))


def in_assessment(outcome_rules: bool = True) -> CaseState:
    admin = Actor(id="admin", roles=["admin"])
    s = new_case(str(uuid.uuid4()), case_create(), ctx(admin), [], outcome_rules=outcome_rules)
    s = run(s, "assign_coordinator", {"coordinator_id": "anna"}, who=admin)
    s = run(s, "form_team", {"members": [{"staff_id": "ole", "discipline": "adult_services",
                                          "department": "adult_services"}]})
    s = run(s, "schedule_assessment_meeting", {
        "at": (NOW + timedelta(days=3)).isoformat(), "location": "Town hall",
        "participants": ["anna", "ole", "family"]})
    return run(s, "put_assessment", {"ics": {"child_development": [
        {"dimension": "health", "concerns": "stomach aches"}]}, "child_views": "School."},
        NOW + timedelta(days=4))


def test_recorded_at_assessment_refused_whole_and_old_cases_keep_the_old_close() -> None:
    s = in_assessment()
    later = NOW + timedelta(days=5)
    with pytest.raises(Refusal) as refused:
        run(s, "complete_assessment",
            {"measurements": [TYRESO_BEFORE[0], sdq("teacher", 5, 15, 2, 2, 6)]}, later)
    assert refused.value.kind == "invalid" and s.stage is Stage.assessment
    assert s.outcome_measurements == [] and s.assessment_completed_at is None
    done = run(s, "complete_assessment", {"measurements": TYRESO_BEFORE}, later)
    assert done.stage is Stage.planning
    assert [(m.informant, m.occasion, m.totals["total_difficulties"])
            for m in done.outcome_measurements] == [("child", "assessment", 18),
                                                    ("mother", "assessment", 8)]
    [entry] = [e for e in done.history if e.event == "outcomes_recorded"]
    assert entry.detail == {"occasion": "assessment", "measurements": ["sdq:child", "sdq:mother"]}
    # Between meetings: the teacher's SDQ that came back later (still occasion assessment).
    done = run(done, "record_outcomes", {"measurements": [sdq("teacher", 3, 2, 5, 2, 6)]}, later)
    assert done.outcome_measurements[-1].occasion == "assessment"
    with pytest.raises(Refusal, match="once the plan is active"):
        run(done, "record_outcomes", {"occasion": "status_meeting",
                                      "measurements": [sdq("teacher", 3, 2, 5, 2, 6)]}, later)
    # Closing: the measurements, and the old object checked too.
    with pytest.raises(Refusal, match="between 0 and 40"):
        run(done, "close", {"reason": "goals_reached", "measurements": TYRESO_AFTER,
                            "outcomes": {"sdq": [{"informant": "teacher", "after": 55}]}}, later)
    closed = run(done, "close", {"reason": "goals_reached", "measurements": TYRESO_AFTER}, later)
    child, mother, teacher = oc.comparisons(closed.policy.outcome_instruments,
                                            closed.outcome_measurements)
    assert (child.change["total_difficulties"], mother.change["total_difficulties"]) == (11, 3)
    assert teacher.latest is None
    # A case from before the instruments keeps the free-form object as it was accepted.
    old = run(in_assessment(outcome_rules=False), "close",
              {"reason": "goals_reached", "outcomes": {"goal_attainment": {"g1": 4}}}, later)
    assert old.closure.outcomes == {"goal_attainment": {"g1": 4}} and not old.outcome_measurements


def test_a_status_meeting_in_the_future_is_refused() -> None:
    from domain.lifecycle import apply_status_meeting
    from models.case import RecordStatusMeeting

    s = in_assessment()
    s.stage = Stage.active
    body = RecordStatusMeeting.model_validate({
        "at": (NOW + timedelta(days=1)).isoformat(), "participants": ["anna"],
        "measurements": TYRESO_AFTER})
    with pytest.raises(Refusal) as refused:
        apply_status_meeting(s, body, ctx(ANNA))
    assert refused.value.kind == "invalid" and "in the future" in refused.value.message


# ---------------------------------------------------------------- the workflow and the API


def http_app(settings: Settings, env: WorkflowEnvironment) -> httpx.AsyncClient:
    return engine_client(settings, env.client, [("anna", ["coordinator"], "children_disability"),
                                                ("ole", ["team_member"], "adult_services")],
                         cases_api.router)

async def cmd(handle: WorkflowHandle, name: str, actor: Actor, body: dict | None = None
              ) -> CaseState:
    return whole(await handle.execute_update(name, CommandInput(actor=actor, body=body),
                                             result_type=CaseAnswer))


async def test_tyreso_through_the_workflow_and_the_api(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    anna = {"X-User": "anna"}
    async with running_worker(ts_env.client, settings), http_app(settings, ts_env) as http:
        t0 = await ts_env.get_current_time()
        case_id = str(uuid.uuid4())
        handle = await ts_env.client.start_workflow(
            FamilyCaseWorkflow.run,
            CaseWorkflowInput(case_id=case_id, policy=DK, actor=ADMIN, create=CaseCreate.model_validate(
                case_create_body(received_at=t0.isoformat()))),
            id=f"case-{case_id}", task_queue=settings.task_queue)
        started.append(handle)
        await cmd(handle, "assign_coordinator", ADMIN, {"coordinator_id": "anna"})
        await cmd(handle, "form_team", ANNA, {"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        await cmd(handle, "record_contact", ANNA, {"kind": "phone", "at": t0.isoformat()})
        await cmd(handle, "schedule_assessment_meeting", ANNA, {
            "at": (t0 + timedelta(days=10)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        await ts_env.sleep(timedelta(days=11))
        state = await cmd(handle, "put_assessment", ANNA, {
            "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
            "child_views": "Emil wants to go to school without stomach aches."})
        assert state.outcome_rules  # a new run: behind the patch

        # Refused through the workflow: nothing applied, a sentence, type invalid.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await cmd(handle, "complete_assessment", ANNA,
                      {"measurements": [*TYRESO_BEFORE, sdq("teacher", 1, 15, 1, 1, 6)]})
        assert refused.value.cause.type == "invalid"
        assert "'conduct' from the teacher must be between 0 and 10" in str(refused.value.cause)
        assert (await handle.query(FamilyCaseWorkflow.case)).version == state.version

        # Refused through the API: 422 with a sentence, nothing applied.
        url = f"/cases/{case_id}"
        for bad, words in [
            ({"instrument": "sdq", "informant": "teacher", "scores": {"total_difficulties": 55}},
             "computed from the scales"),
            (sdq("teacher", 1, 15, 1, 1, 6), "must be between 0 and 10"),
            ({"instrument": "wellbeing", "informant": "mother", "scores": {"x": 1}},
             "Unknown outcome instrument"),
            (sdq("aunt", 1, 1, 1, 1, 6), "Unknown informant 'aunt'"),
        ]:
            r = await http.post(f"{url}/assessment/complete", json={"measurements": [bad]},
                                headers=anna)
            assert r.status_code == 422 and words in r.json()["detail"], r.text
        r = await http.post(f"{url}/outcomes", json={"measurements": [sdq("teacher", 1, 15, 1, 1, 6)]},
                            headers=anna)
        assert r.status_code == 422 and "between 0 and 10" in r.json()["detail"]
        assert (await handle.query(FamilyCaseWorkflow.case)).version == state.version

        # The Tyresö case: at the assessment (through the API), at closing (the workflow).
        r = await http.post(f"{url}/assessment/complete", json={"measurements": TYRESO_BEFORE},
                            headers=anna)
        assert r.status_code == 200 and r.json()["stage"] == "planning", r.text
        r = await http.post(f"{url}/outcomes", headers=anna, json={"measurements": [CLIMATE]})
        assert r.status_code == 200, r.text
        await ts_env.sleep(timedelta(days=200))
        r = await http.post(f"{url}/close", headers=anna, json={
            "reason": "goals_reached", "measurements": [*TYRESO_AFTER, {
                **CLIMATE, "scores": {**CLIMATE["scores"], "closeness": 3.2}}],
            "outcomes": {"sdq": [{"child": "Emil", "informant": "teacher", "before": 14,
                                  "after": 55}]}})
        assert r.status_code == 422 and "between 0 and 40" in r.json()["detail"]
        state = await cmd(handle, "close", ANNA, {
            "reason": "goals_reached", "measurements": [*TYRESO_AFTER, {
                **CLIMATE, "scores": {**CLIMATE["scores"], "closeness": 3.2}}]})
        assert state.stage is Stage.closed
        totals = {(m.informant, m.occasion): m.totals.get("total_difficulties")
                  for m in state.outcome_measurements if m.instrument == "sdq"}
        assert totals == {("child", "assessment"): 18, ("mother", "assessment"): 8,
                          ("child", "closing"): 29, ("mother", "closing"): 11}
        result: CaseState = await handle.result()
        assert result.outcome_measurements == state.outcome_measurements
        r = await http.post(f"{url}/outcomes", headers=anna, json={"measurements": [CLIMATE]})
        assert r.status_code == 409
        await save_history(handle, "case_outcome_instruments")


def test_recorded_at_a_status_meeting_with_goal_attainment_per_goal() -> None:
    from tests import test_workbench as wb

    s = wb.active()
    goal = s.active_plan.goals[0].id
    at = s.stage_since + timedelta(days=30)
    body = {"at": at.isoformat(), "participants": ["anna"], "measurements": [
        TYRESO_AFTER[1], {"instrument": "goal_attainment", "informant": "family",
                          "scores": {"attainment": 1}, "goal_id": goal}]}
    with pytest.raises(Refusal, match="not in the case's plan"):
        run(s, "status_meeting", {**body, "measurements": [
            {**body["measurements"][1], "goal_id": "g99"}]}, at)
    done = run(s, "status_meeting", body, at)
    assert [(m.instrument, m.occasion) for m in done.outcome_measurements] == [
        ("sdq", "status_meeting"), ("goal_attainment", "status_meeting")]
    assert len(done.status_meetings) == len(s.status_meetings) + 1
    # The minutes of that meeting show them (matched by the command's instant).
    from activities.document_context import document_context

    minutes = document_context(done, "status_minutes", done.status_meetings[-1].number)
    assert [o["instrument"] for o in minutes["meeting"]["outcomes"]] == ["sdq", "goal_attainment"]
    # Between meetings the occasion follows the stage: a status meeting once active.
    later = run(done, "record_outcomes", {"measurements": [TYRESO_AFTER[0]]}, at)
    assert later.outcome_measurements[-1].occasion == "status_meeting"


def test_only_the_case_team_records_outcomes() -> None:
    s = in_assessment()
    body = {"measurements": TYRESO_BEFORE}
    for outsider in (Actor(id="bo", roles=["coordinator"]), Actor(id="sif", roles=["team_member"])):
        with pytest.raises(Refusal) as refused:
            run(s, "record_outcomes", body, who=outsider)
        assert refused.value.kind == "forbidden", outsider
    assert not s.outcome_measurements
    ole = run(s, "record_outcomes", body, who=Actor(id="ole", roles=["team_member"]))
    assert len(ole.outcome_measurements) == len(TYRESO_BEFORE)
