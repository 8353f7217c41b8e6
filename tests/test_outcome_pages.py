"""Outcome measures on the case page and in the documents (DESIGN §3.8, §10; issue 11):
recorded through the page's forms (the record_outcomes form at the assessment, the close
form at closing) against the real workflow on the time-skipping server, refused with the
workflow's sentence and nothing applied, shown per instrument and informant (first -> latest,
total difficulties, band, prosocial, family climate against the norms) in the page's language,
and in the closing summary in the DOCUMENT's language.
"""

from __future__ import annotations

import html as htmllib
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.document_context import document_context
from activities.rendering import render_document_html
from api import cases as cases_api
from api import pages
from api.pages.outcomes import measurements_of
from domain.policy import DK
from models.case import Actor, CaseAnswer, CaseCreate, CaseState, Stage
from models.commands import CaseWorkflowInput, CommandInput
from settings import Settings
from tests.apps import engine_client
from tests.conftest import running_worker
from tests.factories import case_create_body, whole
from workflows.case import FamilyCaseWorkflow

ADMIN = Actor(id="admin", roles=["admin"])
ANNA = Actor(id="anna", roles=["coordinator"])
SCALES = ("emotional", "conduct", "hyperactivity", "peer", "prosocial")
# A machine key in the visible text (a scale, band or instrument key not put into words).
RAW_KEY = re.compile(r"\b(?:outcomes\.[a-z_.]+|[a-z]+_[a-z_]+)\b")


class Form(HTMLParser):
    """The fields of one form of a page (name -> value, row index of each measurement row)."""

    def __init__(self, html: str, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.fields = form_id, False, {}
        self.select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if self.inside and tag in ("input", "select") and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""
            self.select = a["name"] if tag == "select" else None
        if self.inside and tag == "option" and "selected" in a and self.select:
            self.fields[self.select] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False

    def row(self, instrument: str, informant: str) -> str:
        """The field prefix of the row of this instrument and informant."""
        for name, value in self.fields.items():
            if name.endswith(".instrument") and value == instrument and \
                    self.fields.get(name.replace(".instrument", ".informant")) == informant:
                return name.removesuffix("instrument")
        raise AssertionError(f"no row for {instrument}/{informant}")


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    end = html.index("</section>", start)
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", html[start:end])).split())


def typed(form: Form, rows: dict[tuple[str, str], tuple]) -> dict[str, str]:
    data = {k: v for k, v in form.fields.items()}
    for (instrument, informant), values in rows.items():
        prefix = form.row(instrument, informant)
        for scale, value in zip(SCALES, values, strict=True):
            data[f"{prefix}scores.{scale}"] = value
    return data


def test_the_form_rows_become_measurements_numbers_as_people_type_them() -> None:
    values = {"measurements.0.instrument": "sdq", "measurements.0.informant": "child",
              **{f"measurements.0.scores.{s}": v for s, v in zip(SCALES, ("5", "4", "6", "3", "7,8"),
                                                                  strict=True)},
              "measurements.1.instrument": "sdq", "measurements.1.informant": "mother",
              "measurements.2.instrument": "goal_attainment", "measurements.2.informant": "team",
              "measurements.2.goal_id": "g1", "measurements.2.scores.attainment": "-1",
              "measurements.3.instrument": "sdq", "measurements.3.informant": "teacher",
              "measurements.3.scores.conduct": "many"}
    rows, errors = measurements_of(values, "da")
    assert rows[0] == {"instrument": "sdq", "informant": "child", "scores": {
        "emotional": 5, "conduct": 4, "hyperactivity": 6, "peer": 3, "prosocial": 7.8}}
    assert rows[1] == {"instrument": "goal_attainment", "informant": "team",
                       "scores": {"attainment": -1}, "goal_id": "g1"}  # the mother: nothing typed
    assert errors == [(("measurements", 3, "scores", "conduct"), "skal være et tal, fx 7 eller 7,8")]


def app_for(settings: Settings, env: WorkflowEnvironment) -> httpx.AsyncClient:
    return engine_client(settings, env.client, [("anna", ["coordinator"], "children_disability"),
                                                ("ole", ["team_member"], "adult_services")],
                         cases_api.router, pages.router, base_url="http://onefamily.test",
                         headers={"X-User": "anna"})

async def cmd(handle: WorkflowHandle, name: str, actor: Actor, body: dict | None = None
              ) -> CaseState:
    return whole(await handle.execute_update(name, CommandInput(actor=actor, body=body),
                                             result_type=CaseAnswer))


async def test_recorded_on_the_page_shown_in_the_page_s_and_the_document_s_language(
    ts_env: WorkflowEnvironment, settings: Settings, started: list[WorkflowHandle]
) -> None:
    async with running_worker(ts_env.client, settings), app_for(settings, ts_env) as http:
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
        await cmd(handle, "schedule_assessment_meeting", ANNA, {
            "at": (t0 + timedelta(days=10)).isoformat(), "location": "Town hall",
            "participants": ["anna", "ole", "family"]})
        await ts_env.sleep(timedelta(days=11))
        await cmd(handle, "put_assessment", ANNA, {
            "ics": {"child_development": [{"dimension": "health", "concerns": "stomach aches"}]},
            "child_views": "Emil wants to go to school without stomach aches."})
        page = f"/cases/{case_id}"
        da = {"Accept-Language": "da"}

        # The form at the assessment: a subscale of 15 is refused with a sentence, nothing kept.
        r = await http.get(page, headers=da)
        assert r.status_code == 200, r.text[:2000]
        form = Form(r.text, "form-record_outcomes")
        assert form.fields["occasion"] == "assessment"
        bad = typed(form, {("sdq", "teacher"): ("1", "15", "1", "1", "6")})
        r = await http.post(f"{page}/outcomes", data=bad, headers=da)
        assert r.status_code == 422
        refusal = section(r.text, "section-record_outcomes")
        assert "'conduct' from the teacher must be between 0 and 10" in refusal
        assert (await handle.query(FamilyCaseWorkflow.case)).outcome_measurements == []
        # Tyresö before, typed as a Dane types 7.8, with completing the assessment.
        complete = Form(r.text, "form-complete_assessment")
        r = await http.post(f"{page}/assessment/complete", headers=da, data=typed(complete, {
            ("sdq", "child"): ("5", "4", "6", "3", "7,8"), ("sdq", "mother"): ("2", "2", "3", "1", "7")}))
        assert r.status_code == 303, r.text[:2000]
        assert (await handle.query(FamilyCaseWorkflow.case)).stage is Stage.planning
        # Later, the family climate through the form between the meetings.
        r = await http.get(page, headers=da)
        form = Form(r.text, "form-record_outcomes")
        data = dict(form.fields)
        prefix = form.row("family_climate", "mother")
        data.update({f"{prefix}scores.{k}": v for k, v in (
            ("closeness", "2,6"), ("distance", "2,1"), ("spontaneity", "2,4"), ("chaos", "2,3"))})
        r = await http.post(f"{page}/outcomes", headers=da, data=data)
        assert r.status_code == 303, r.text[:2000]

        # Closing through the close form, with the questionnaires at closing.
        await ts_env.sleep(timedelta(days=200))
        r = await http.get(page, headers=da)
        close = Form(r.text, "form-close")
        data = typed(close, {("sdq", "child"): ("5", "7", "9", "8", "9"),
                             ("sdq", "mother"): ("5", "1", "2", "3", "6")})
        r = await http.post(f"{page}/close", headers=da, data={**data, "reason": "goals_reached"})
        assert r.status_code == 303, r.text[:3000]
        state = await handle.result()
        assert state.stage is Stage.closed
        assert [(m.instrument, m.informant, m.occasion, m.totals.get("total_difficulties"))
                for m in state.outcome_measurements] == [
            ("sdq", "child", "assessment", 18), ("sdq", "mother", "assessment", 8),
            ("family_climate", "mother", "assessment", None),
            ("sdq", "child", "closing", 29), ("sdq", "mother", "closing", 11)]

        # The case page in each language: first -> latest, bands, prosocial, in words.
        words = {"da": ("Samlede vanskeligheder", "høj", "meget høj", "Prosocial adfærd", "7,8",
                        "barnet (selv)", "mor", "dårligere", "Familieklima", "Nærhed", "Normværdi",
                        "Kun målt én gang"),
                 "sv": ("Totala svårigheter", "hög", "mycket hög", "Prosocialt beteende", "7,8",
                        "barnet (självskattning)", "mamma", "sämre"),
                 "en": ("Total difficulties", "high", "very high", "Prosocial behaviour", "7.8",
                        "the child (self-report)", "mother", "worse")}
        for lang, expected in words.items():
            r = await http.get(page, headers={"Accept-Language": lang})
            text = section(r.text, "outcomes")
            for word in expected:
                assert word in text, (lang, word, text)
            assert not RAW_KEY.search(text), (lang, RAW_KEY.search(text))
            tables = re.findall(r'data-instrument="(\w+)" data-informant="(\w+)"', r.text)
            assert tables == [("sdq", "child"), ("sdq", "mother"), ("family_climate", "mother")]
            first_latest = re.findall(
                r'data-scale="total_difficulties" data-first="([\d.]+)" data-latest="([\d.]+)"', r.text)
            assert first_latest == [("18.0", "29.0"), ("8.0", "11.0")]

        # The closing summary in Danish: Danish words, no raw English keys.
        doc = render_document_html("closing_summary", "da", document_context(state, "closing_summary"))
        body = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", doc)).split())
        part = body[body.index("Effektmål"):]
        for word in ("Samlede vanskeligheder 18 (høj) 29 (meget høj) +11 (dårligere)",
                     "Samlede vanskeligheder 8 (tæt på gennemsnittet) 11 (tæt på gennemsnittet) +3",
                     "Prosocial adfærd 7,8 (tæt på gennemsnittet) 9 (tæt på gennemsnittet) +1,2 (bedre)"):
            assert word in part, part[:1500]
        assert "total_difficulties" not in doc and "close_to_average" not in doc


@pytest.mark.parametrize("lang", ["da", "sv", "en"])
def test_family_climate_against_the_norms_in_the_document_s_language(lang: str) -> None:
    from tests.test_outcomes import CLIMATE, NOW, in_assessment, run

    s = in_assessment()
    s = run(s, "complete_assessment", {"measurements": [CLIMATE]}, NOW + timedelta(days=5))
    s = run(s, "close", {"reason": "goals_reached", "measurements": [
        {**CLIMATE, "scores": {**CLIMATE["scores"], "closeness": 3.2}}]}, NOW + timedelta(days=90))
    doc = render_document_html("closing_summary", lang, document_context(s, "closing_summary"))
    body = " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", doc)).split())
    closeness = {"da": "Nærhed 2,6 3,2 +0,6 (bedre) 3,1", "sv": "Närhet 2,6 3,2 +0,6 (bättre) 3,1",
                 "en": "Closeness 2.6 3.2 +0.6 (better) 3.1"}[lang]
    assert closeness in body, body
    report = render_document_html("assessment_report", lang, document_context(s, "assessment_report"))
    assert {"da": "Normværdi", "sv": "Normvärde", "en": "Norm"}[lang] in report


def test_the_status_meeting_form_carries_the_questionnaires() -> None:
    from api.pages.meetings import build_status_meeting

    values = {"at": "2027-03-01T10:00", "participants.0": "anna",
              "measurements.0.instrument": "goal_attainment", "measurements.0.informant": "team",
              "measurements.0.goal_id": "g1", "measurements.0.scores.attainment": "1",
              "measurements.1.instrument": "sdq", "measurements.1.informant": "father"}
    body = build_status_meeting(values, "sv")({"at": "2027-03-01T10:00:00+01:00",
                                               "participants": ["anna"]})
    assert [(m.instrument, m.goal_id, m.scores) for m in body.measurements] == [
        ("goal_attainment", "g1", {"attainment": 1.0})]
