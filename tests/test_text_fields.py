"""One rule for empty strings in request bodies (models/text.py, issue 11): required text is
stripped and never blank (a 422 naming the field); blank optional text is absent; a blank
participant is refused; a blank item of an optional list is left out. The rule applies at the
edge (a caller's request); off the edge (the workflow, replays, stored states) values pass as
they were recorded."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.errors import validation_handler
from api.hardening import HardeningMiddleware
from models.case import (
    AssessmentContent,
    CaseCreate,
    CastVote,
    PlanDraft,
    RecordContact,
    RecordStatusMeeting,
    ScheduleAssessmentMeeting,
)
from models.text import at_edge
from settings import Settings
from tests.factories import case_create_body

AT = "2026-11-20T09:00:00+00:00"


def refused(model, body: dict) -> list[str]:
    """The fields a 422 would name."""
    with at_edge(), pytest.raises(ValidationError) as error:
        model.model_validate(body)
    return [".".join(str(p) for p in e["loc"]) for e in error.value.errors()]


def test_required_text_is_stripped_and_never_blank() -> None:
    body = case_create_body()
    body["family"]["name"] = "  Family Jensen "
    with at_edge():
        assert CaseCreate.model_validate(body).family.name == "Family Jensen"
    for blank in ("", "   ", "\n\t"):
        body["family"]["name"] = blank
        assert refused(CaseCreate, body) == ["family.name"]
    # Off the edge too: required text has always been refused when blank.
    with pytest.raises(ValidationError):
        CaseCreate.model_validate(body)
    assert refused(ScheduleAssessmentMeeting, {"at": AT, "location": " ", "participants": ["anna"]}) == [
        "location"]
    assert refused(PlanDraft, {"family_goals": ["School every day", ""]}) == ["family_goals.1"]


def test_blank_optional_text_is_absent() -> None:
    body = case_create_body()
    member = body["family"]["members"][1]
    member.update(phone="", email="  ")
    body["existing_contacts"] = [{"department": "adult_services", "caseworker": " "}]
    body["family"]["members"][0]["diagnoses"] = ["ADHD", "", "  "]
    body["consent"]["departments"] = ["", "school"]
    with at_edge():
        case = CaseCreate.model_validate(body)
        contact = RecordContact.model_validate({"kind": "phone", "at": AT, "notes": "   "})
        vote = CastVote.model_validate({"staff_id": "ole", "vote": "agree", "reason": ""})
        assessment = AssessmentContent.model_validate({"child_views": " ", "investigations": [""]})
        meeting = RecordStatusMeeting.model_validate(
            {"at": AT, "participants": ["anna"], "followup_reason": "", "minutes": "Held.\n"})
    adult = case.family.members[1]
    assert (adult.phone, adult.email) == (None, None)
    assert case.existing_contacts[0].caseworker is None
    assert case.family.members[0].diagnoses == ["ADHD"] and case.consent.departments == ["school"]
    assert contact.notes == "" and vote.reason == ""
    assert assessment.child_views is None and assessment.investigations == []
    assert meeting.followup_reason is None and meeting.minutes == "Held.\n"  # text kept as written


def test_a_blank_participant_is_refused_at_the_edge_only() -> None:
    body = {"at": AT, "location": "Family home", "participants": ["anna", " "]}
    assert refused(ScheduleAssessmentMeeting, body) == ["participants.1"]
    # A command the workflow accepted before the rule replays as it ran.
    assert ScheduleAssessmentMeeting.model_validate(body).participants == ["anna", " "]
    stored = case_create_body()
    stored["family"]["members"][1]["phone"] = ""
    assert CaseCreate.model_validate(stored).family.members[1].phone == ""


def test_every_http_request_is_at_the_edge() -> None:
    """The outer middleware marks the request: a 422 that names the field, through HTTP."""
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, validation_handler)

    @app.post("/meeting")
    def meeting(body: ScheduleAssessmentMeeting) -> dict:
        return body.model_dump(mode="json")

    app.add_middleware(HardeningMiddleware, settings=Settings(ONEFAMILY_ALLOWED_HOSTS="testserver"))
    client = TestClient(app)
    r = client.post("/meeting", json={"at": AT, "location": "Home", "participants": ["anna", ""]})
    assert r.status_code == 422
    assert r.json()["detail"] == "The request is not valid: participants.1: Value error, must not be empty."
    r = client.post("/meeting", json={"at": AT, "location": " Home ", "participants": ["anna"]})
    assert r.status_code == 200 and r.json()["location"] == "Home"
