"""The joint plan and everything after it, as forms of the case page (DESIGN §3.5–3.8, §10):
the plan editor, the team's votes, the family's response, planning and recording status
meetings (progress per goal, plan changes, a policy move), closing with outcome measures.

First the editor's field → body rules without a server (percent → share, goal rows, ids,
empty rows, field errors named as the form names them), and the partials rendered from real
case states (every field labelled, prefilled from the draft, what was typed kept). Then the
forms posted as a browser posts them — a signed-in session cookie, the page's own CSRF token,
idempotency key and case version, multipart where the page says so — against the real stack
(dev server, worker and API processes; tests/e2e_stack.py).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import pytest
from markupsafe import escape
from pydantic import ValidationError

from api.pages import i18n
from api.pages.common import FormState, field_errors, page_env
from api.pages.meetings import build_close, build_status_meeting, outcomes_of
from api.pages.plan import build_plan, label_of, number
from api.views import case_view
from domain.lifecycle import STALE
from tests.e2e_stack import Stack, api_as
from tests.factories import NOW, case_create_body
from tests.test_case_forms import Person, forms_of, ok_sentence, stage_of
from tests.test_domain_lifecycle import ASSESSMENT, active, drafted, in_planning

ZONE = ZoneInfo("Europe/Copenhagen")


def en(key: str, **values: object) -> str:
    return i18n.translate("en", key, **values)


# ---------------------------------------------------------------- fields → body, no server

EDITOR = {
    "family_goals.0": "", "family_goals.1": " Emil goes to school every day ",
    "goals.0.id": "", "goals.0.text": "",  # an empty row: dropped
    "goals.1.id": "", "goals.1.text": "Emil attends school 5 days a week by March", "goals.1.owner": "anna",
    "goals.2.id": "g7", "goals.2.text": "Emil sleeps through the night",
    "actions.0.status": "open",  # only what a fresh row carries: dropped
    "actions.1.text": "School adapts the timetable", "actions.1.owner": "ole",
    "actions.1.goal_id": "#1", "actions.1.due": "2027-01-15", "actions.1.status": "open",
    "actions.1.member": "Emil",
    "services.0.name": "", "services.0.funding.0.department": "", "services.0.funding.0.share": "",
    "services.1.name": "Family therapy", "services.1.paragraph": "BL § 32",
    "services.1.department": "children_disability", "services.1.monthly_cost": "12 000",
    "services.1.funding.0.department": "children_disability", "services.1.funding.0.share": "60",
    "services.1.funding.1.department": "", "services.1.funding.1.share": "",
    "services.1.funding.2.department": "adult_services", "services.1.funding.2.share": "40",
    "_extra": "2", "csrf_token": "x", "idempotency_key": "k", "version": "9",
}


def test_the_editor_s_rows_become_the_plan_draft() -> None:
    plan = build_plan(EDITOR, "en")({})
    assert plan.family_goals == ["Emil goes to school every day"]
    assert [(g.id, g.text, g.owner) for g in plan.goals] == [
        ("g1", "Emil attends school 5 days a week by March", "anna"),
        ("g7", "Emil sleeps through the night", None)]
    (action,) = plan.actions
    assert (action.id, action.goal_id, action.owner, action.member, str(action.due)) == (
        "a1", "g1", "ole", "Emil", "2027-01-15")  # the goal of row 2, given its new id
    (service,) = plan.services
    assert service.monthly_cost == 12000
    assert [(f.department, round(f.share, 6)) for f in service.funding] == [
        ("children_disability", 0.6), ("adult_services", 0.4)]


def test_a_funding_split_that_does_not_add_up_is_refused_naming_the_service() -> None:
    with pytest.raises(ValueError, match="The funding of “Family therapy” adds up to 90 %, not 100 %"):
        build_plan({**EDITOR, "services.1.funding.2.share": "30"}, "en")({})
    danish = {**EDITOR, "services.1.funding.2.share": "30"}
    with pytest.raises(ValueError, match="Family therapy") as caught:
        build_plan(danish, "da")({})
    assert str(caught.value) == i18n.translate("da", "plan.error.funding_total",
                                               service="Family therapy", total="90")
    with pytest.raises(ValueError, match="more than 0 and at most 100"):
        build_plan({**EDITOR, "services.1.funding.2.share": "140"}, "en")({})
    # 33.33 % three times is 100 % as people type it; the shares are exactly 1 together.
    thirds = {**EDITOR, "services.1.funding.0.share": "33.33", "services.1.funding.1.department": "school",
              "services.1.funding.1.share": "33,33", "services.1.funding.2.share": "33.34"}
    assert abs(sum(f.share for f in build_plan(thirds, "en")({}).services[0].funding) - 1) < 1e-9


def test_field_errors_name_the_field_the_person_typed_in() -> None:
    values = {**EDITOR, "family_goals.1": "", "goals.2.text": "", "goals.2.owner": "ole",
              "services.1.funding.2.share": "forty", "actions.1.owner": ""}
    with pytest.raises(ValidationError) as caught:
        build_plan(values, "en")({})
    errors = field_errors(caught.value, "en")
    assert errors == {"family_goals.0": en("error.missing"), "goals.2.text": en("error.missing"),
                      "actions.1.owner": en("error.missing"),
                      "services.1.funding.2.share": en("error.number")}
    assert label_of("services.1.funding.2.share", "en") == "Service 2: Share 3 in %"
    assert label_of("plan_changes.goals.0.text", "en") == "Changes to the plan — Goal 1: The goal"
    assert label_of("family_goals.0", "sv") == i18n.translate("sv", "plan.family_goals.label", n=1)
    with pytest.raises(ValueError, match="belongs to goal 1, but that row is empty"):
        build_plan({**EDITOR, "actions.1.goal_id": "#0"}, "en")({})


def test_numbers_as_people_type_them() -> None:
    assert [number(x) for x in ("12000", "12 000", "12.000,50", "12,5", "1,200.5", "50 %", "x", "nan")] == [
        12000, 12000, 12000.5, 12.5, 1200.5, 50, None, None]


def test_a_status_meeting_s_progress_and_plan_changes() -> None:
    values = {"at": "2026-11-23T10:00", "participants.0": "anna", "participants.2": "family",
              "goal_progress.0.goal_id": "g1", "goal_progress.0.status": "on_track",
              "goal_progress.0.note": "Four days last week",
              "goal_progress.1.goal_id": "g2",  # not discussed: dropped
              "plan_changes.family_goals.0": "Emil goes to school", "plan_changes.goals.0.id": "g1",
              "plan_changes.goals.0.text": "Five days a week",
              "plan_changes.services.0.funding.0.share": "100"}
    from api.pages.common import unflatten

    meeting = build_status_meeting(values, "en")(unflatten(values, "Europe/Copenhagen"))
    assert meeting.plan_changes is None  # not ticked: the editor's fields are not a new version
    assert [(g.goal_id, g.status.value) for g in meeting.goal_progress] == [("g1", "on_track")]
    assert meeting.participants == ["anna", "family"]
    with pytest.raises(ValidationError) as caught:  # ticked: the service row is incomplete
        build_status_meeting({**values, "_change_plan": "true"}, "en")(unflatten(values, "Europe/Copenhagen"))
    assert set(field_errors(caught.value, "en")) == {
        "plan_changes.services.0.name", "plan_changes.services.0.paragraph",
        "plan_changes.services.0.department", "plan_changes.services.0.monthly_cost",
        "plan_changes.services.0.funding.0.department"}


def test_outcome_measures_as_the_monthly_report_reads_them() -> None:
    values = {"reason": "goals_reached",
              "outcomes.sdq.0.child": "Emil", "outcomes.sdq.0.informant": "mother",
              "outcomes.sdq.0.before": "18", "outcomes.sdq.0.after": "12",
              "outcomes.sdq.1.child": "Emil",  # a child chosen, no score: nothing measured
              "outcomes.goal_attainment.0.goal_id": "g1", "outcomes.goal_attainment.0.status": "achieved",
              "outcomes.goal_attainment.1.goal_id": "g2", "outcomes.goal_attainment.1.score": "-1",
              "outcomes.goal_attainment.2.goal_id": "g3"}
    outcomes, errors = outcomes_of(values, "en")
    assert errors == []
    assert outcomes == {"sdq": [{"child": "Emil", "informant": "mother", "before": 18, "after": 12}],
                        "goal_attainment": {"g1": "achieved", "g2": {"score": -1}}}
    close = build_close(values, "en")({"reason": "goals_reached"})
    from activities.report import goal_scores, sdq_pairs

    state = SimpleNamespace(closure=SimpleNamespace(outcomes=close.outcomes), status_meetings=[])
    assert sdq_pairs(state) == [("mother", 18.0, 12.0)]
    assert goal_scores(state) == ([-1.0], [True])
    bad = {**values, "outcomes.sdq.0.after": "41", "outcomes.sdq.0.informant": "",
           "outcomes.goal_attainment.1.score": "5"}
    with pytest.raises(ValidationError) as caught:
        build_close(bad, "en")({})  # no reason either: every error at once
    assert field_errors(caught.value, "en") == {
        "reason": en("error.missing"), "outcomes.sdq.0.informant": en("plan.error.informant"),
        "outcomes.sdq.0.after": en("plan.error.sdq_range"),
        "outcomes.goal_attainment.1.score": en("plan.error.gas_range")}


# ---------------------------------------------------------------- the partials, no server

DIRECTORY = [SimpleNamespace(id="anna", name="Anna Berg", department="children_disability", unit="u",
                             discipline="social_worker", roles=["coordinator"]),
             SimpleNamespace(id="ole", name="Ole Dam", department="school", unit="u",
                             discipline="school_psychologist", roles=["team_member"]),
             SimpleNamespace(id="sif", name="Sif Holm", department="children_disability", unit="u",
                             discipline="family_therapist", roles=["team_member"])]


def render(form: str, state, form_state: FormState | None = None, lang: str = "en", **extra) -> str:
    ctx = dict(c=case_view(state, NOW), state=state, allowed={form}, directory=DIRECTORY,
               policy=state.policy, version=state.version, case_id=state.id, lang=lang,
               user=SimpleNamespace(id="anna", name="Anna Berg", roles=["coordinator"]),
               form_state=form_state, now=NOW, csrf_token="token", timezone="Europe/Copenhagen")
    ctx.update(extra)
    return page_env("Europe/Copenhagen").get_template(f"case/forms/{form}.html.j2").render(**ctx)


class Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.legends = 0
        self.fieldsets = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.ids.append(a.get("id") or f"<{tag} name={a.get('name')} without id>")
        elif tag == "label":
            self.labels.add(a.get("for") or "")
        self.fieldsets += tag == "fieldset"
        self.legends += tag == "legend"


@pytest.mark.parametrize(("form", "build"), [
    ("put_plan", in_planning), ("put_plan", drafted), ("vote", drafted), ("family_response", drafted),
    ("schedule_status_meeting", active), ("status_meeting", active), ("close", active)])
@pytest.mark.parametrize("lang", ["da", "sv", "en"])
def test_every_field_has_a_label_and_no_raw_key_shows(form: str, build, lang: str) -> None:
    html = render(form, build(), lang=lang, policy_versions=[{"version": 2, "note": "new rules"}])
    fields = Fields()
    fields.feed(html)
    assert fields.ids and not [i for i in fields.ids if i not in fields.labels]
    assert fields.fieldsets == fields.legends
    assert len(fields.ids) == len(set(fields.ids))
    assert not re.findall(r"\bplan\.[a-z_]+\.[a-z_.]+", html)  # no untranslated key
    assert f'id="form-{form}"' in html and f'data-command="{form}"' in html
    assert html.count('<button type="submit"') == 1
    assert 'style=' not in html and '<script' not in html


def test_the_editor_starts_from_the_draft_in_percent_and_explains_the_committee_rule() -> None:
    state = drafted()
    html = render("put_plan", state)
    forms = forms_of(html)["form-put_plan"]["fields"]
    draft = state.plan
    assert forms["family_goals.0"] == draft.family_goals[0]
    assert forms["goals.0.id"] == "g1" and forms["actions.0.goal_id"] == "#0"
    service = draft.services[0]
    assert forms["services.0.monthly_cost"] == f"{service.monthly_cost:g}"
    assert forms["services.0.funding.0.share"] == f"{service.funding[0].share * 100:g}"
    assert en("plan.editor.submit", next=draft.version + 1) in html
    assert "BL § 47" in html and "10 000" in html  # the policy's rule as a hint
    # ... and a plan over the team's limit says why it goes to the committee.
    from tests.test_domain_lifecycle import JOINT, plan
    from tests.test_domain_lifecycle import service as svc

    over = drafted(plan(svc(cost=12000, funding=JOINT)))
    assert str(escape(en("plan.why.joint", amount="12 000", limit="10 000"))) in render("put_plan", over)


def test_a_refused_editor_keeps_every_typed_value_and_more_rows_adds_rows() -> None:
    state = in_planning()
    typed = {**EDITOR, "services.1.funding.2.share": "30", "goals.5.text": "A sixth goal"}
    html = render("put_plan", state, FormState("put_plan", typed, message="The funding … 90 %"))
    fields = forms_of(html)["form-put_plan"]["fields"]
    for name, value in typed.items():
        if name not in ("csrf_token", "idempotency_key", "version", "_extra"):
            assert fields.get(name) == value, name
    assert "goals.7.text" in fields and "goals.8.text" not in fields  # typed rows + 2 empty
    assert 'id="put_plan-refusal"' in html
    more = render("put_plan", state, FormState("put_plan", {**typed, "_extra": "5"}, status=200))
    assert "goals.10.text" in forms_of(more)["form-put_plan"]["fields"]
    assert 'id="put_plan-refusal"' not in more  # "More rows" is not a refusal


# ---------------------------------------------------------------- the real stack


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return api_as(stack, user)


def local(at: datetime) -> str:
    return at.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body as a browser sends a form with that enctype."""
    boundary = f"----onefamily{uuid.uuid4().hex}"
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode(), f"multipart/form-data; boundary={boundary}"


async def send(person: Person, form: dict, fields: dict[str, str] | None = None,
               more: bool = False) -> httpx.Response:
    """`form` as shown with `fields` typed over it, sent by its submit button (or "More rows");
    multipart for the forms that say so."""
    data = {k: v for k, v in form["fields"].items() if k != "_more"}
    data.update(fields or {})
    if more:
        data["_more"] = "More rows"
    if form["action"].endswith(("/plan", "/status-meetings")):
        body, kind = multipart(data)
        return await person.http.post(form["action"], content=body, headers={"Content-Type": kind})
    return await person.http.post(form["action"], data=data)


async def form_of(person: Person, case_id: str, name: str) -> dict:
    r = await person.http.get(f"/cases/{case_id}")
    assert r.status_code == 200, r.text
    forms = forms_of(r.text)
    assert f"form-{name}" in forms, f"no form-{name} for {person.staff_id}: {sorted(forms)}"
    return forms[f"form-{name}"]


async def submit(person: Person, case_id: str, name: str, fields: dict[str, str] | None = None) -> str:
    r = await send(person, await form_of(person, case_id, name), fields)
    assert r.status_code == 303, f"{name}: {r.status_code} {refusal_text(r.text)}"
    assert r.headers["location"].startswith(f"/cases/{case_id}?ok="), r.headers["location"]
    return ok_sentence(r)


def refusal_text(html: str) -> str:
    found = re.search(r'class="alert alert-error".*?</div>\s*</div>', html, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))) if found else html[:1500]


async def case(stack: Stack, case_id: str) -> dict:
    async with api(stack, "mia") as mia:
        r = await mia.get(f"/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.json()


async def in_planning_case(stack: Stack, name: str) -> str:
    """A case in planning over the JSON API: Anna coordinates, Ole is the core team, the ICS
    assessment with the child's views is complete."""
    now = datetime.now(UTC)
    body = case_create_body(received_at=now.isoformat())
    body["family"]["name"] = name
    async with api(stack, "mia") as mia, api(stack, "anna") as anna:
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        steps = [
            (mia.post, f"/cases/{case_id}/coordinator", {"coordinator_id": "anna"}),
            (anna.post, f"/cases/{case_id}/team", {"members": [
                {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]}),
            (anna.post, f"/cases/{case_id}/assessment/meeting", {
                "at": (now + timedelta(days=2)).isoformat(), "location": "Town hall",
                "participants": ["anna", "ole", "family"]}),
            (anna.put, f"/cases/{case_id}/assessment", ASSESSMENT),
            (anna.post, f"/cases/{case_id}/assessment/complete", None),
        ]
        for call, path, payload in steps:
            r = await call(path, json=payload) if payload is not None else await call(path)
            assert r.status_code == 200, f"{path}: {r.text}"
        assert r.json()["stage"] == "planning"
    return case_id


PLAN = {
    "family_goals.0": "Emil goes to school every day",
    "family_goals.1": "Mette gets help with the debt",
    "goals.0.text": "Emil attends school 5 days a week by March", "goals.0.owner": "anna",
    "goals.1.id": "debt", "goals.1.text": "A debt plan with the bank by February",
    "actions.0.text": "School adapts the timetable", "actions.0.owner": "ole", "actions.0.goal_id": "#0",
    "actions.0.due": "2027-01-15", "actions.0.member": "Emil",
    "actions.1.text": "Meeting with the debt counsellor", "actions.1.owner": "Mette",
    "actions.1.goal_id": "#1", "actions.1.due": "2027-01-20",
    "services.0.name": "Family therapy", "services.0.paragraph": "BL § 32",
    "services.0.department": "children_disability", "services.0.monthly_cost": "4000",
    "services.0.funding.0.department": "children_disability", "services.0.funding.0.share": "50",
    "services.0.funding.1.department": "adult_services", "services.0.funding.1.share": "50",
}


async def test_the_plan_editor_saves_refuses_and_applies_a_double_submit_once(stack: Stack) -> None:
    case_id = await in_planning_case(stack, "Family Editor")
    async with Person(stack, "anna") as anna:
        editor = await form_of(anna, case_id, "put_plan")
        assert editor["command"] == "put_plan"

        # "More rows": the same form again with more rows, nothing applied.
        r = await send(anna, editor, {"goals.0.text": "Typed before more rows"}, more=True)
        assert r.status_code == 200
        longer = forms_of(r.text)["form-put_plan"]["fields"]
        assert longer["goals.0.text"] == "Typed before more rows" and "goals.5.text" in longer
        assert (await case(stack, case_id))["plans"] == []

        # A funding split of 60 % + 30 %: the page again (422) with the sentence, all kept.
        typed = {**PLAN, "services.0.funding.0.share": "60", "services.0.funding.1.share": "30"}
        r = await send(anna, editor, typed)
        assert r.status_code == 422
        assert en("plan.error.funding_total", service="Family therapy", total="90") in refusal_text(r.text)
        shown = forms_of(r.text)["form-put_plan"]["fields"]
        assert {k: shown.get(k) for k in typed} == typed
        # Empty required: the field's own error, by the field.
        r = await send(anna, editor, {**PLAN, "family_goals.0": "", "family_goals.1": "",
                                      "actions.1.owner": ""})
        assert r.status_code == 422
        assert 'id="put_plan-family_goals-0-error"' in r.text
        assert 'id="put_plan-actions-1-owner-error"' in r.text
        assert "The family&#39;s goal 1: " + en("error.missing") in r.text
        assert (await case(stack, case_id))["plans"] == []

        # Saved: the case's draft with the goals, actions and services as typed.
        r = await send(anna, editor, PLAN)
        assert r.status_code == 303, refusal_text(r.text)
        assert ok_sentence(r) == en("plan.done.saved", version=1)
        c = await case(stack, case_id)
        (plan,) = c["plans"]
        assert plan["status"] == "draft"
        assert plan["family_goals"] == [PLAN["family_goals.0"], PLAN["family_goals.1"]]
        assert [(g["id"], g["owner"]) for g in plan["goals"]] == [("g1", "anna"), ("debt", None)]
        assert [(a["id"], a["goal_id"], a["owner"], a["member"], a["due"]) for a in plan["actions"]] == [
            ("a1", "g1", "ole", "Emil", "2027-01-15"), ("a2", "debt", "Mette", None, "2027-01-20")]
        (service,) = plan["services"]
        assert service["monthly_cost"] == 4000 and service["paragraph"] == "BL § 32"
        assert service["funding"] == [{"department": "children_disability", "share": 0.5},
                                      {"department": "adult_services", "share": 0.5}]

        # The same form sent twice (a double click, a reload): one version, not two.
        editor = await form_of(anna, case_id, "put_plan")
        assert editor["fields"]["family_goals.0"] == PLAN["family_goals.0"]  # from the draft
        changed = {"goals.0.text": "Emil attends school 5 days a week by April"}
        first = await send(anna, editor, changed)
        second = await send(anna, editor, changed)
        assert first.status_code == second.status_code == 303, refusal_text(second.text)
        c = await case(stack, case_id)
        assert [p["version"] for p in c["plans"]] == [1, 2]

        # A stale page (it showed an older version of the case): 409, what changed, nothing applied.
        stale = {**editor, "fields": {**editor["fields"], "idempotency_key": uuid.uuid4().hex}}
        r = await send(anna, stale, {"goals.0.text": "From a stale page"})
        assert r.status_code == 409
        assert STALE in refusal_text(r.text)
        assert [p["version"] for p in (await case(stack, case_id))["plans"]] == [1, 2]

        # No CSRF token: 403, nothing applied.
        no_token = {k: v for k, v in editor["fields"].items() if k != "csrf_token"}
        r = await send(anna, {**editor, "fields": no_token})
        assert r.status_code == 403
        assert [p["version"] for p in (await case(stack, case_id))["plans"]] == [1, 2]


async def test_votes_rejection_new_version_status_meeting_and_closing(stack: Stack) -> None:
    case_id = await in_planning_case(stack, "Family Forward")
    async with Person(stack, "anna") as anna, Person(stack, "ole") as ole:
        await submit(anna, case_id, "put_plan", PLAN)

        # Votes: the coordinator and the team member, each their own; then the team decides.
        vote = await form_of(anna, case_id, "vote")
        assert vote["fields"]["staff_id"] == "anna"
        r = await send(anna, vote, {"vote": "agree"})
        assert r.status_code == 303 and ok_sentence(r) == en("plan.done.voted")
        text = await submit(ole, case_id, "vote", {"vote": "agree"})
        assert text == en("plan.done.voted") + " " + en("plan.done.team_decided")
        c = await case(stack, case_id)
        assert c["plans"][0]["decision"] == "team"
        assert "form-vote" not in forms_of((await ole.http.get(f"/cases/{case_id}")).text)

        # The family rejects version 1 at the meeting: back in planning; the editor offers v2.
        text = await submit(anna, case_id, "family_response",
                            {"approved": "false", "comment": "We want help in the mornings."})
        assert text == en("plan.done.family_rejected", version=1)
        r = await anna.http.get(f"/cases/{case_id}")
        assert stage_of(r.text) == "planning"
        assert 'id="put_plan-rejected"' in r.text and "We want help in the mornings." in r.text
        editor = forms_of(r.text)["form-put_plan"]
        assert editor["fields"]["goals.0.text"] == PLAN["goals.0.text"]  # a copy of version 1
        assert en("plan.editor.submit", next=2) in r.text
        r = await send(anna, editor, {"actions.2.text": "Morning help at home", "actions.2.owner": "ole",
                                      "actions.2.goal_id": "#0"})
        assert r.status_code == 303 and ok_sentence(r) == en("plan.done.saved", version=2)
        c = await case(stack, case_id)
        assert [(p["version"], p["status"]) for p in c["plans"]] == [(1, "rejected"), (2, "draft")]
        assert len(c["plans"][1]["actions"]) == 3
        for person in (anna, ole):
            await submit(person, case_id, "vote", {"vote": "agree"})
        text = await submit(anna, case_id, "family_response", {"approved": "true", "comment": "Good."})
        assert text == en("plan.done.family_approved_active", version=2)
        assert (await case(stack, case_id))["stage"] == "active"

        # Plan the next status meeting (a past time is refused with the API's sentence).
        planned = await form_of(anna, case_id, "schedule_status_meeting")
        yesterday = local(datetime.now(UTC) - timedelta(days=1))
        r = await send(anna, planned, {"at": yesterday, "location": "School"})
        assert r.status_code == 422 and "in the future" in refusal_text(r.text)
        when = datetime.now(UTC) + timedelta(days=7)
        text = await submit(anna, case_id, "schedule_status_meeting",
                            {"at": local(when), "location": "School"})
        assert text.startswith(en("plan.done.meeting_planned", when="")[:10])
        c = await case(stack, case_id)
        assert c["planned_meeting"]["location"] == "School"
        assert set(c["planned_meeting"]["participants"]) == {"anna", "ole", "family"}

        # A newer policy version exists: the status meeting may move the case to it.
        async with api(stack, "admin") as admin:
            limit = (await admin.get("/policy")).json()["team_funding_limit"]
            r = await admin.put("/policy", json={"overrides": {"team_funding_limit": 20000},
                                                 "note": "A higher limit"})
            assert r.status_code == 200, r.text
            newest = r.json()["version"]
            # The stack is shared: new cases of the modules after this one get the old limit
            # again (a newer version still); this case moves to `newest` all the same.
            r = await admin.put("/policy", json={"overrides": {"team_funding_limit": limit},
                                                 "note": "The limit as before"})
            assert r.status_code == 200, r.text

        # Record the meeting: progress per goal, a new cadence, plan changes, the policy move.
        meeting = await form_of(ole, case_id, "status_meeting")
        goal_ids = {"goal_progress.0.goal_id": "g1", "goal_progress.1.goal_id": "debt"}
        assert goal_ids.items() <= meeting["fields"].items()
        assert meeting["fields"]["plan_changes.goals.0.text"] == PLAN["goals.0.text"]
        text = await submit(ole, case_id, "status_meeting", {
            "at": local(datetime.now(UTC) - timedelta(hours=1)), "minutes": "Mornings are better.",
            "goal_progress.0.status": "on_track", "goal_progress.0.note": "Four days last week",
            "goal_progress.1.status": "at_risk",
            "followup_months": "4", "followup_reason": "Close follow-up while the debt plan starts",
            "_change_plan": "true", "plan_changes.goals.1.text": "A debt plan with the bank by March",
            "policy_version": str(newest), "policy_reason": "The committee raised the limit",
        })
        assert text.startswith(en("plan.done.meeting_recorded", number=1))
        c = await case(stack, case_id)
        (held,) = c["status_meetings"]
        assert [(g["goal_id"], g["status"], g["note"]) for g in held["goal_progress"]] == [
            ("g1", "on_track", "Four days last week"), ("debt", "at_risk", "")]
        assert held["new_plan_version"] == 3 and c["plans"][2]["goals"][1]["text"].endswith("by March")
        assert c["followup_months"] == 4 and c["policy"]["version"] == newest
        assert c["planned_meeting"] is None

        # Close with a reason and an SDQ outcome.
        close = await form_of(anna, case_id, "close")
        r = await send(anna, close, {"reason": "goals_reached", "outcomes.sdq.0.informant": "mother",
                                     "outcomes.sdq.0.before": "18", "outcomes.sdq.0.after": "45"})
        assert r.status_code == 422 and 'id="close-outcomes-sdq-0-after-error"' in r.text
        text = await submit(anna, case_id, "close", {
            "reason": "goals_reached", "note": "Emil goes to school.",
            "outcomes.sdq.0.informant": "mother", "outcomes.sdq.0.before": "18", "outcomes.sdq.0.after": "12",
            "outcomes.goal_attainment.0.status": "achieved"})
        assert text == en("plan.done.closed")
        c = await case(stack, case_id)
        assert c["stage"] == "closed" and c["closure"]["reason"] == "goals_reached"
        child = next(m["name"] for m in c["family"]["members"] if m["role"] == "child")
        assert c["closure"]["outcomes"] == {
            "sdq": [{"child": child, "informant": "mother", "before": 18, "after": 12}],
            "goal_attainment": {"g1": "achieved"}}
        r = await anna.http.get(f"/cases/{case_id}")
        assert stage_of(r.text) == "closed"
        assert not [f for f, form in forms_of(r.text).items() if form["command"]]  # read-only now


MINE = ["#section-put_plan", "#section-vote", "#section-family_response",
        "#section-schedule_status_meeting", "#section-status_meeting", "#section-close"]


async def audit_forms(page) -> list[dict]:
    """axe on this file's forms only (the rest of the case page is its authors' to check)."""
    from tests.axe import TAGS, axe_source

    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_source())
    return await page.evaluate("""async ([tags, selectors]) => {
        const here = selectors.filter(s => document.querySelector(s));
        if (!here.length) return [];
        const r = await axe.run({include: here.map(s => [s])},
                                {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => ({target: n.target.map(String), html: (n.html || '').slice(0, 200),
                                      summary: (n.failureSummary || '').slice(0, 300)}))}));
    }""", [TAGS, MINE])


async def test_the_plan_forms_in_chromium_pass_axe_and_look_right(stack: Stack, browser) -> None:
    """The editor, a refusal, the vote and family forms, the status meeting and closing in a
    real browser: axe finds nothing serious, screenshots under test-artifacts/plan-forms/."""
    from tests.browser import CHROMIUM, Shots, fail_on_serious, fill, new_person
    from tests.browser import send as click_send

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")

    from tests.axe import AxeTable

    case_id = await in_planning_case(stack, "Family Browser")
    url = f"{stack.base_url}/cases/{case_id}"
    page_table, forms_table = AxeTable(), AxeTable()
    plain = Shots("plan-forms", page_table)

    async def shots(page, name: str, axe: str | None = None) -> None:
        await plain(page, name, axe)
        if axe:
            forms_table.add(axe, await audit_forms(page))
    _, anna = await new_person(browser, stack, "anna")
    await anna.goto(url)
    await shots(anna, "plan editor", axe="case page: plan editor")

    # Typed in the browser, with "More rows" on the way: nothing saved, rows kept.
    await fill(anna, "put_plan", {"family_goals.0": "Emil goes to school every day",
                                  "goals.0.text": "Emil attends school 5 days a week by March"})
    async with anna.expect_navigation():
        await anna.locator("#form-put_plan input[name=_more]").click()
    assert await anna.locator("#form-put_plan [name='goals.5.text']").count() == 1
    assert await anna.input_value("#form-put_plan [name='goals.0.text']") == \
        "Emil attends school 5 days a week by March"
    typed = {k: v for k, v in PLAN.items() if not k.startswith("family_goals.1")}
    await fill(anna, "put_plan", {**typed, "services.0.funding.1.share": "30"})
    async with anna.expect_navigation():
        await anna.locator("#form-put_plan button[type=submit]").click()
    refusal = anna.locator("#put_plan-refusal")
    assert "not 100 %" in await refusal.inner_text()
    await shots(anna, "plan editor refused", axe="case page: plan editor refused")
    await click_send(anna, "put_plan", {"services.0.funding.1.share": "50"})
    assert "version 1" in await anna.locator(".alert-success").inner_text()

    await anna.goto(url)
    await shots(anna, "vote and family response", axe="case page: votes and family")
    await click_send(anna, "vote", {"vote": "agree"})
    _, ole = await new_person(browser, stack, "ole")
    await ole.goto(url)
    await click_send(ole, "vote", {"vote": "agree"})
    await anna.goto(url)
    await click_send(anna, "family_response", {"approved": "true", "comment": "Good"})
    await anna.goto(url)
    assert await anna.locator("#case-stage").get_attribute("data-stage") == "active"
    await shots(anna, "active with meetings and close", axe="case page: meetings and close")
    # The plan changes' <details> (the outcome questionnaires have <details> of their own).
    await anna.locator("#form-status_meeting details summary",
                       has_text=en("plan.meeting.changes_summary", version=1)).click()
    await shots(anna, "status meeting plan changes open")
    await anna.set_viewport_size({"width": 390, "height": 844})
    await shots(anna, "mobile status meeting", axe="case page: meetings, mobile")
    await click_send(anna, "close", {"reason": "goals_reached", "outcomes.sdq.0.informant": "mother",
                                     "outcomes.sdq.0.before": "18", "outcomes.sdq.0.after": "12"})
    await shots(anna, "closed")
    report = (f"The plan forms only:\n{forms_table.text()}\n\n"
              f"The whole case page around them:\n{page_table.text()}\n")
    print(report)
    (plain.dir / "axe.txt").write_text(report)
    fail_on_serious(forms_table)
