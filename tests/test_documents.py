"""Documents (DESIGN §3, issue 4): every kind renders in Danish, Swedish and English from a
real case built through domain.lifecycle, to HTML and to a PDF with pages; versions are
immutable and rendering is idempotent; the documents API."""

from __future__ import annotations

import html as htmllib
import io
import json
import time
from datetime import UTC, datetime, timedelta

import pypdf
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.document_context import (
    NoSuchContent,
    agenda_context,
    document_context,
    monthly_report_context,
)
from activities.documents import DocumentActivities, content_hash
from api import documents as documents_api
from domain.lifecycle import execute, new_case
from models.case import CaseState
from models.commands import CommandInput
from models.db import get_engine
from models.messaging import DocumentKind, DocumentRequest
from models.projection import write_case
from models.tables import StaffRow
from models.tables_outbox import DocumentRow
from tests.apps import router_client
from tests.factories import NOW, actor, case_create, ctx

CASE = "3f2c9a1e-1111-4222-8333-444455556666"
ANNA = actor("anna", "coordinator")
OLE = actor("ole", "team_member")
SIF = actor("sif", "team_member")
MARIA = actor("maria", "manager")
KAREN = actor("karen", "committee")
LATER = NOW + timedelta(days=60)

ASSESSMENT = {
    "ics": {
        "child_development": [{"dimension": "health", "strengths": "Sleeps well",
                               "concerns": "Stomach aches", "family_view": "Worse on school days"}],
        "parenting_capacity": [{"dimension": "safe_caring_environment", "strengths": "Warm home"}],
        "family_and_network": [{"dimension": "housing_employment_finances", "concerns": "Debt"}],
    },
    "child_views": "Emil wants to go to school without stomach aches.",
    "investigations": ["child_investigation"],
}
PLAN = {
    "family_goals": ["Emil goes to school every day", "Mette sleeps through the night"],
    "goals": [{"id": "g1", "text": "Emil attends school 5 days a week by March", "owner": "anna"}],
    "actions": [{"id": "a1", "goal_id": "g1", "text": "School adapts the timetable", "owner": "school",
                 "due": "2027-01-15", "member": "Emil"}],
    "services": [{"name": "Family therapy", "paragraph": "BL § 32", "department": "children_disability",
                  "monthly_cost": 12000,
                  "funding": [{"department": "children_disability", "share": 0.5},
                              {"department": "adult_services", "share": 0.5}]}],
}
OUTCOMES = {"sdq": {"Emil (mother)": {"at_assessment": 22, "at_closing": 14}},
            "goal_attainment": {"g1": "achieved"}}


def run(state: CaseState, name: str, who, body: dict | None = None, *, now: datetime = NOW,
        item_id: str | None = None) -> CaseState:
    return execute(state, name, CommandInput(actor=who, body=body, item_id=item_id), ctx(who, now))


def escalated_case() -> CaseState:
    """Assessed, plan v1 drafted, every vote agrees, escalated for its joint funding."""
    s = new_case(CASE, case_create(), ctx(ANNA))
    run(s, "assign_coordinator", MARIA, {"coordinator_id": "anna"})
    run(s, "form_team", ANNA, {"members": [
        {"staff_id": "ole", "discipline": "school_psychologist", "department": "school"},
        {"staff_id": "sif", "discipline": "adult_services", "department": "adult_services"}]})
    run(s, "schedule_assessment_meeting", ANNA, {"at": (NOW + timedelta(days=7)).isoformat(),
                                                 "location": "Family home", "participants": ["anna", "ole"]})
    run(s, "put_assessment", ANNA, ASSESSMENT)
    run(s, "complete_assessment", ANNA)
    run(s, "put_plan", ANNA, PLAN)
    for who in (ANNA, OLE, SIF):
        run(s, "vote", who, {"staff_id": who.id, "vote": "agree"})
    assert s.stage.value == "escalated"
    return s


def full_case() -> CaseState:
    """The committee approves with changes, the family approves, a status meeting, closed."""
    s = escalated_case()
    run(s, "committee_decision", KAREN, {"decision": "approved_with_changes",
                                         "notes": "Therapy is granted for six months first.",
                                         "funding": [{"department": "children_disability", "share": 0.6},
                                                     {"department": "adult_services", "share": 0.4}]},
        item_id=s.escalations[-1].id)
    run(s, "family_response", ANNA, {"approved": True, "comment": "This is our plan"})
    assert s.stage.value == "active"
    run(s, "status_meeting", ANNA, {
        "at": (LATER - timedelta(hours=1)).isoformat(), "participants": ["anna", "ole"],
        "minutes": "Emil went to school four days a week.\n\nMette sleeps better.",
        "goal_progress": [{"goal_id": "g1", "status": "on_track", "note": "4 of 5 days"}]}, now=LATER)
    run(s, "close", ANNA, {"reason": "goals_reached", "note": "Emil goes to school",
                           "outcomes": OUTCOMES}, now=LATER + timedelta(days=1))
    return s


@pytest.fixture(scope="module")
def case() -> CaseState:
    return full_case()


@pytest.fixture
def engine(settings):
    engine = get_engine(settings.db_url)
    with Session(engine) as session:
        for sid, name, roles in [
            ("admin", "Admin", ["admin"]), ("anna", "Anna Berg", ["coordinator"]),
            ("ole", "Ole Holm", ["team_member"]), ("sif", "Sif Dahl", ["team_member"]),
            ("eve", "Eve Nord", ["team_member"]), ("karen", "Karen Ravn", ["committee"]),
        ]:
            session.add(StaffRow(id=sid, name=name, discipline="social_worker",
                                 department="children_disability", roles=roles, created_at=NOW))
        session.commit()
    return engine


def request(state: CaseState, kind: str, language: str, version: int = 1) -> DocumentRequest:
    return DocumentRequest(case_id=state.id, kind=kind, version=version, language=language,
                           context=document_context(state, kind, version), created_by="anna")


def pdf_text(data: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


def flat(text: str) -> str:
    return " ".join(text.split())


# What each kind must show, per language: the case's own data and the translated labels.
COMMON = ["Family Jensen", "3f2c9a1e"]
CONTENT: dict[str, list[str]] = {
    "assessment_report": ["Emil wants to go to school without stomach aches.", "Sleeps well",
                          "Stomach aches", "Worse on school days", "Warm home", "Debt", "ADHD",
                          "Needs coordinated support at home and school", "Family home", "Anna Berg"],
    "joint_plan": ["Emil goes to school every day", "Mette sleeps through the night",
                   "Emil attends school 5 days a week by March", "School adapts the timetable",
                   "Family therapy", "BL § 32", "This is our plan", "Ole Holm", "Sif Dahl"],
    "status_minutes": ["Emil went to school four days a week.", "Mette sleeps better.",
                       "Emil attends school 5 days a week by March", "4 of 5 days", "Ole Holm"],
    "committee_agenda": ["Emil wants to go to school without stomach aches.",
                         "Emil goes to school every day", "Family therapy", "12000 > 10000"],
    "decision_letter": ["Mette", "Therapy is granted for six months first.",
                        "Emil goes to school every day", "Ankestyrelsen", "Anna Berg"],
    "closing_summary": ["Emil goes to school every day", "Emil goes to school", "4 of 5 days",
                        "22", "14", "Anna Berg"],
}
LABELS: dict[str, dict[str, list[str]]] = {
    "assessment_report": {"da": ["Tværfaglig udredning (ICS)", "Barnets udvikling", "Sundhed",
                                 "Barnets egne synspunkter", "Børnefaglig undersøgelse"],
                          "sv": ["Samlad utredning", "Barnets utveckling", "Hälsa",
                                 "Barnets egna synpunkter", "Barnavårdsutredning"],
                          "en": ["Interdisciplinary assessment (ICS)", "The child's development", "Health",
                                 "The child's own views", "Statutory child investigation"]},
    "joint_plan": {"da": ["Fælles plan", "Familiens egne mål", "Gældende plan", "Godkendt af familien"],
                   "sv": ["Samordnad individuell plan (SIP)", "Familjens egna mål", "Gällande plan"],
                   "en": ["Joint plan", "The family's own goals", "Active plan", "Approved by the family"]},
    "status_minutes": {"da": ["Statusmøde nr. 1", "På rette vej"],
                       "sv": ["Uppföljningsmöte nr 1", "Går enligt plan"],
                       "en": ["Status meeting no. 1", "On track"]},
    "committee_agenda": {"da": ["Dagsorden for visitationsudvalget", "Fælles finansiering over"],
                         "sv": ["Föredragningslista", "Gemensam finansiering över"],
                         "en": ["Visitation committee agenda", "Joint funding above"]},
    "decision_letter": {"da": ["Kære Mette", "Godkendt med ændringer", "Klagevejledning"],
                        "sv": ["Hej Mette", "Bifall med ändringar", "Hur man överklagar"],
                        "en": ["Dear Mette", "Approved with changes", "How to appeal"]},
    # The free-form outcomes in the document's language, never its raw keys (issue 11).
    "closing_summary": {"da": ["Afslutningsnotat", "Målene er nået", "Effektmål",
                               "Samlede vanskeligheder som angivet ved afslutningen", "nået"],
                        "sv": ["Avslutande sammanfattning", "Målen är uppnådda", "Utfallsmått",
                               "Totala svårigheter som angivna vid avslutningen", "uppnått"],
                        "en": ["Closing summary", "The goals were reached", "Outcome measures",
                               "Total difficulties as given at closing", "achieved"]},
}
DATES = {"da": "23. november 2026", "sv": "23 november 2026", "en": "23 November 2026"}


def test_every_case_document_kind_has_expectations() -> None:
    assert set(CONTENT) == {k.value for k in DocumentKind} - {"monthly_report"}


@pytest.mark.parametrize("language", ["da", "sv", "en"])
@pytest.mark.parametrize("kind", sorted(CONTENT))
def test_every_document_renders_in_every_language(case, engine, kind: str, language: str) -> None:
    activities = DocumentActivities(engine)
    started = time.perf_counter()
    ref = ActivityEnvironment().run(activities.render_document, request(case, kind, language))
    elapsed = time.perf_counter() - started
    with Session(engine) as session:
        row = session.get(DocumentRow, ref.id)
    assert (row.case_id, row.kind, row.version, row.language) == (CASE, kind, 1, language)
    assert row.created_by == "anna" and row.content_hash == ref.content_hash
    html = htmllib.unescape(flat(row.html))
    assert f'<html lang="{language}">' in row.html
    for text in COMMON + CONTENT[kind] + LABELS[kind][language]:
        assert text in html, f"{kind}/{language}: {text!r} missing in HTML"
    assert "{{" not in html and "{%" not in html
    assert "at_assessment" not in html and "goal_attainment" not in html

    pages, text = pdf_text(row.pdf)
    assert row.pdf.startswith(b"%PDF-") and pages >= 1 and ref.pdf_bytes == len(row.pdf)
    text = flat(text)
    assert LABELS[kind][language][0] in text
    if kind in ("joint_plan", "committee_agenda", "decision_letter", "closing_summary"):
        assert "Emil goes to school every day" in text  # the family's goals are in the PDF
    if kind in ("assessment_report", "committee_agenda"):
        assert "Emil wants to go to school without stomach aches." in text
    assert elapsed < 20  # generous: a render takes ~0.1-0.9 s on the 2-core box


def test_dates_are_localised(case) -> None:
    from activities.rendering import render_document_html

    for language, expected in DATES.items():
        ctx_ = document_context(case, "joint_plan", 1)
        html = render_document_html("joint_plan", language, {**ctx_, "kind": "joint_plan", "version": 1,
                                                             "staff_names": {}})
        assert expected in html


def test_monthly_report_and_agenda_over_several_cases(case, engine) -> None:
    other = escalated_case()
    other.id = "9b1c0000-0000-4000-8000-000000000002"
    for item in other.escalations:
        item.case_id = other.id
    month = monthly_report_context("2027-01", [case, other], as_of=datetime(2027, 1, 31, tzinfo=UTC))
    assert month["open_cases"] == 1 and month["closed_cases"] == 1
    assert month["close_reasons"] == {"goals_reached": 1} and month["committee_waiting"] == 1
    assert month["goals_achieved"] == 0 and month["goals_total"] == 1
    json.dumps(month)  # JSON-safe
    acts = DocumentActivities(engine)
    ref, created = acts.render(DocumentRequest(case_id="report-2027-01", kind="monthly_report",
                                               version=1, language="da", context=month,
                                               created_by="system"))
    assert created
    with Session(engine) as session:
        html = flat(session.get(DocumentRow, ref.id).html)
    assert "Månedsrapport til koordinationsgruppen" in html and "Målene er nået" in html

    agenda = agenda_context("committee-dk-1", datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
                            [(other, other.escalations[0].id)])
    ref, _ = acts.render(DocumentRequest(case_id="committee-dk-1", kind="committee_agenda", version=7,
                                         language="en", context=agenda, created_by="system"))
    with Session(engine) as session:
        pages, text = pdf_text(session.get(DocumentRow, ref.id).pdf)
    assert pages >= 1 and "24 November 2026, 13:00" in flat(text) and "Item 1" in flat(text)


def test_rendering_is_idempotent_and_versions_are_immutable(case, engine) -> None:
    acts = DocumentActivities(engine)
    req = request(case, "joint_plan", "da")
    first, created = acts.render(req)
    again, created_again = acts.render(request(case, "joint_plan", "da"))  # rebuilt from the state
    assert created and not created_again
    assert again == first and content_hash(req) == first.content_hash

    other_language, created_sv = acts.render(request(case, "joint_plan", "sv"))
    assert created_sv and other_language.id != first.id

    changed = req.model_copy(update={"context": {**req.context, "family_name": "Family Hansen"}})
    with pytest.raises(ApplicationError) as conflict:
        acts.render(changed)
    assert conflict.value.type == "DocumentVersionConflict" and conflict.value.non_retryable
    assert "immutable" in conflict.value.message and "Hansen" not in conflict.value.message
    with Session(engine) as session:
        stored = session.exec(select(DocumentRow).where(DocumentRow.kind == "joint_plan")).all()
    assert sorted(r.language for r in stored) == ["da", "sv"]

    # A new version of the plan is a new document.
    v2 = changed.model_copy(update={"version": 2})
    ref2, created2 = acts.render(v2)
    assert created2 and ref2.version == 2


def test_missing_content_is_a_clear_error(case) -> None:
    with pytest.raises(NoSuchContent, match="plan version 3"):
        document_context(case, "joint_plan", 3)
    with pytest.raises(NoSuchContent, match="status meeting number 2"):
        document_context(case, "status_minutes", 2)
    fresh = new_case(CASE, case_create(), ctx(ANNA))
    with pytest.raises(NoSuchContent, match="no assessment"):
        document_context(fresh, "assessment_report", 1)
    with pytest.raises(NoSuchContent, match="not closed"):
        document_context(fresh, "closing_summary", 1)
    with pytest.raises(NoSuchContent, match="never decided|has not decided"):
        document_context(escalated_case(), "decision_letter", 1)


def test_context_is_json_safe_and_deterministic(case) -> None:
    for kind in CONTENT:
        a, b = document_context(case, kind, 1), document_context(full_case(), kind, 1)
        assert json.loads(json.dumps(a)) == a
        assert a == b
    assert "anna" in document_context(case, "joint_plan", 1)["staff_ids"]


# ---------------------------------------------------------------- API


def api(engine, settings) -> TestClient:
    return router_client(engine, settings, documents_api.router)


def test_documents_api(case, engine, settings) -> None:
    with Session(engine) as session:
        write_case(session, case, NOW)
        session.commit()
    acts = DocumentActivities(engine)
    plan, _ = acts.render(request(case, "joint_plan", "da"))
    acts.render(request(case, "closing_summary", "en"))
    agenda = agenda_context("committee-dk-1", NOW, [(case, case.escalations[0].id)])
    committee_doc, _ = acts.render(DocumentRequest(case_id="committee-dk-1", kind="committee_agenda",
                                                   version=1, language="da", context=agenda,
                                                   created_by="system"))
    client = api(engine, settings)
    anna = {"X-User": "anna"}

    listed = client.get(f"/api/v1/cases/{CASE}/documents", headers=anna)
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2
    item = next(i for i in body["items"] if i["kind"] == "joint_plan")
    assert {k: item[k] for k in ("id", "kind", "version", "language", "content_hash", "created_by")} == {
        "id": plan.id, "kind": "joint_plan", "version": 1, "language": "da",
        "content_hash": plan.content_hash, "created_by": "anna"}
    assert item["created_at"]

    html = client.get(f"/api/v1/documents/{plan.id}", headers=anna)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Emil goes to school every day" in html.text
    pdf = client.get(f"/api/v1/documents/{plan.id}", params={"format": "pdf"}, headers=anna)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    pages, text = pdf_text(pdf.content)
    assert pages >= 1 and "Emil goes to school every day" in flat(text)
    by_accept = client.get(f"/api/v1/documents/{plan.id}", headers={**anna, "Accept": "application/pdf"})
    assert by_accept.content == pdf.content
    assert client.get(f"/api/v1/documents/{plan.id}", params={"format": "html"},
                      headers={**anna, "Accept": "application/pdf"}).text == html.text

    # Refusals in the contract's order: 401 unknown caller, 404 unknown, 403 not on the case.
    assert client.get(f"/api/v1/documents/{plan.id}").status_code == 401
    assert client.get(f"/api/v1/documents/{plan.id}", headers={"X-User": "ghost"}).status_code == 401
    assert client.get("/api/v1/documents/nope", headers=anna).status_code == 404
    assert client.get("/api/v1/cases/9b1c0000-0000-4000-8000-000000000009/documents",
                      headers=anna).status_code == 404
    assert client.get(f"/api/v1/documents/{plan.id}", headers={"X-User": "eve"}).status_code == 403
    assert client.get(f"/api/v1/cases/{CASE}/documents", headers={"X-User": "eve"}).status_code == 403
    bad_format = client.get(f"/api/v1/documents/{plan.id}", params={"format": "doc"}, headers=anna)
    assert bad_format.status_code == 422
    # Team members, the committee and admins may read; the committee's agenda is theirs.
    assert client.get(f"/api/v1/documents/{plan.id}", headers={"X-User": "ole"}).status_code == 200
    assert client.get(f"/api/v1/documents/{plan.id}", headers={"X-User": "admin"}).status_code == 200
    assert client.get(f"/api/v1/documents/{committee_doc.id}", headers={"X-User": "karen"}).status_code == 200
    assert client.get(f"/api/v1/documents/{committee_doc.id}", headers=anna).status_code == 403
    assert client.get("/api/v1/cases/committee-dk-1/documents",
                      headers={"X-User": "karen"}).json()["total"] == 1
