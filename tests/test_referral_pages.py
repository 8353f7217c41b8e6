"""New referral (`/cases/new`, DESIGN §10) as people use it: the form's fields become the body
of `POST /api/v1/cases` (no server), then the form posted as a browser posts it — a signed-in
session cookie, the page's own CSRF token and idempotency key — against the real stack (dev
server, worker and API processes; tests/e2e_stack.py): a referral creates the case; the
possible-duplicate warning comes BEFORE saving (a link for a case the person may read, only
"ask the manager" for one they may not); "register anyway" makes the second case, flagged;
empty required fields come back with the field errors and what was typed; a double submit
makes one case; no CSRF token, 403.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from markupsafe import escape

from api.pages import i18n
from api.pages.common import unflatten
from api.pages.referral import _labels, build
from tests.e2e_stack import SignedIn, Stack, api_as
from tests.test_case_forms import forms_of

ZONE = ZoneInfo("Europe/Copenhagen")


def en(key: str, **values: object) -> str:
    """The English text as the page shows it (HTML-escaped)."""
    return str(escape(i18n.translate("en", key, **values)))


# ---------------------------------------------------------------- fields → body, no server


def test_the_form_s_fields_become_the_referral_body() -> None:
    values = {
        "csrf_token": "x", "idempotency_key": "k", "_confirmed": "1",
        "referral.source": "school", "referral.kind": "application",
        "referral.received_at": "2026-11-20T09:00", "referral.reason": " Needs support ",
        "referral.reporter_is_professional": "true",
        "family.name": "Family Jensen", "family.language": "",
        "family.members.0.name": "Emil", "family.members.0.role": "child",
        "family.members.0.birth_date": "2015-03-02", "family.members.0.diagnoses": "ADHD\r\n\r\n Autism ",
        "family.members.1.name": "", "family.members.1.role": "",  # an empty row: dropped
        "family.members.2.name": "Mette", "family.members.2.role": "parent",
        "family.members.2.needs": "Help with the debt", "family.members.2.phone": "+4521111111",
        "existing_contacts.0.department": "adult_services", "existing_contacts.0.caseworker": "Ole",
        "existing_contacts.1.department": "",
        "consent.coordinated_handling": "false", "consent.departments": "school\nadult_services\n",
        "contact_preference": "close", "concern_level": "", "unit": "children_disability",
    }
    body = build(unflatten(values, "Europe/Copenhagen"))
    assert body.referral.received_at == datetime(2026, 11, 20, 9, 0, tzinfo=ZONE)
    assert body.referral.reason == "Needs support" and body.referral.reporter_is_professional is True
    assert [(m.id, m.name, m.role.value) for m in body.family.members] == [
        ("m1", "Emil", "child"), ("m2", "Mette", "parent")]
    assert body.family.members[0].diagnoses == ["ADHD", "Autism"]
    assert body.family.members[1].needs == ["Help with the debt"]
    assert [c.department for c in body.existing_contacts] == ["adult_services"]
    assert body.consent.coordinated_handling is False
    assert body.consent.departments == ["school", "adult_services"]
    assert body.contact_preference.value == "close" and body.concern_level is None


def test_every_field_error_is_named_in_words() -> None:
    labels = _labels("en", ["referral.source", "family.members.2.name", "existing_contacts.0.department",
                            "consent.coordinated_handling", "family.members", "something.else"])
    assert labels == {
        "referral.source": en("referral.label.referral.source"),
        "family.members.2.name": f"{en('referral.member_n', n=3)}: {en('referral.member.name')}",
        "existing_contacts.0.department":
            f"{en('referral.contact_n', n=1)}: {en('referral.contact.department')}",
        "consent.coordinated_handling": en("referral.label.consent.coordinated_handling"),
        "family.members": en("referral.label.family.members"),
        "something.else": en("referral.label._form"),
    }
    assert all(not v.startswith("referral.") for v in _labels("da", list(labels)).values())


# ---------------------------------------------------------------- the real stack


@pytest.fixture(scope="module")
def stack(page_stack: Stack) -> Stack:
    """The session's shared page stack (tests/conftest.py `page_stack`)."""
    return page_stack


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return api_as(stack, user)


class Browser(SignedIn):
    """One staff member signed in with a password, posting the page's forms as shown."""


    async def referral_form(self) -> dict:
        r = await self.http.get("/cases/new")
        assert r.status_code == 200, r.text
        forms = forms_of(r.text)
        assert "form-register_referral" in forms, sorted(forms)
        return forms["form-register_referral"]

    async def post(self, form: dict, fields: dict[str, str] | None = None,
                   drop: tuple[str, ...] = ()) -> httpx.Response:
        data = {**form["fields"], **(fields or {})}
        for name in drop:
            data.pop(name, None)
        return await self.http.post(form["action"], data=data)


def typed(family: str, *members: tuple[str, str, str]) -> dict[str, str]:
    """What a coordinator types: the referral, the family, its members, the consent."""
    fields = {
        "referral.source": "school",
        "referral.received_at": datetime.now(UTC).astimezone(ZONE).strftime("%Y-%m-%dT%H:%M"),
        "referral.reason": "Needs coordinated support at home and school",
        "family.name": family, "consent.coordinated_handling": "true",
    }
    for i, (name, role, born) in enumerate(members):
        fields.update({f"family.members.{i}.name": name, f"family.members.{i}.role": role,
                       f"family.members.{i}.birth_date": born})
    return fields


def case_id_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text[:3000]
    found = re.match(r"^/cases/([0-9a-f-]{36})\?ok=", response.headers["location"])
    assert found, response.headers["location"]
    return found.group(1)


async def case(stack: Stack, case_id: str, who: str = "mia") -> dict:
    async with api(stack, who) as c:
        deadline = time.monotonic() + 30
        while True:
            r = await c.get(f"/cases/{case_id}")
            if r.status_code == 200 or time.monotonic() > deadline:
                assert r.status_code == 200, r.text
                return r.json()
            await asyncio.sleep(0.2)


async def total_cases(stack: Stack) -> int:
    async with api(stack, "admin") as c:
        return (await c.get("/cases", params={"limit": 1})).json()["total"]


async def test_a_referral_from_the_form_creates_the_case(stack: Stack) -> None:
    async with Browser(stack, "anna") as anna:
        form = await anna.referral_form()
        assert form["command"] == "register_referral" and form["fields"]["idempotency_key"]
        fields = typed("Family Holm", ("Sara Holm", "child", "2014-05-06"), ("Per Holm", "parent", ""))
        fields.update({"family.members.0.diagnoses": "ADHD\nDyslexia", "family.language": "en",
                       "existing_contacts.0.department": "school", "existing_contacts.0.caseworker": "Lise",
                       "consent.departments": "school\nadult_services", "contact_preference": "close"})
        r = await anna.post(form, fields)
        case_id = case_id_of(r)
        assert "ok=" + "The+referral+is+registered." in r.headers["location"]
        page = await anna.http.get(r.headers["location"])
        assert page.status_code == 200  # the new case's page
    c = await case(stack, case_id)
    assert c["stage"] == "referred" and c["created_by"] == "anna"
    assert c["family"]["name"] == "Family Holm" and c["family"]["language"] == "en"
    assert [(m["id"], m["name"], m["role"], m["birth_date"]) for m in c["family"]["members"]] == [
        ("m1", "Sara Holm", "child", "2014-05-06"), ("m2", "Per Holm", "parent", None)]
    assert c["family"]["members"][0]["diagnoses"] == ["ADHD", "Dyslexia"]
    assert c["existing_contacts"] == [{"department": "school", "sector_area": None, "caseworker": "Lise"}]
    assert c["consent"]["coordinated_handling"] is True
    assert c["consent"]["departments"] == ["school", "adult_services"]
    assert c["contact_preference"] == "close"


async def test_the_duplicate_warning_comes_before_saving(stack: Stack) -> None:
    async with Browser(stack, "anna") as anna, Browser(stack, "mia") as mia:
        first = case_id_of(await anna.post(await anna.referral_form(),
                                           typed("Family Berg", ("Lea Berg", "child", "2013-01-02"))))
        await case(stack, first)
        before = await total_cases(stack)

        # The same child again: nothing is saved, the warning links the case Anna may read.
        form = await anna.referral_form()
        again = typed("Family Berg-Nielsen", ("Lea Berg", "child", "2013-01-02"),
                      ("Jon Nielsen", "parent", ""))
        r = await anna.post(form, again)
        assert r.status_code == 200, r.text[:2000]
        assert 'id="duplicate-warning"' in r.text and en("referral.duplicate.heading") in r.text
        assert f'href="/cases/{first}"' in r.text and 'id="open-existing-case"' in r.text
        assert await total_cases(stack) == before
        forms = forms_of(r.text)
        assert forms["form-register_referral"]["fields"]["family.name"] == "Family Berg-Nielsen"  # kept
        confirm = forms["form-confirm_referral"]
        assert confirm["fields"]["_confirmed"] == "1"
        assert confirm["fields"]["family.members.1.name"] == "Jon Nielsen"

        # "Register as a new case anyway": the second case, flagged for the manager.
        second = case_id_of(await anna.post(confirm))
        assert second != first and await total_cases(stack) == before + 1
        c = await case(stack, second)
        flags = [f for f in c["flags"] if f["kind"] == "possible_duplicate"]
        assert flags and flags[0]["case_ids"] == [first]
        assert [m["name"] for m in c["family"]["members"]] == ["Lea Berg", "Jon Nielsen"]

        # A case Anna does not work on (Bo coordinates it): only that it exists, and whom to ask.
        async with api(stack, "mia") as m:
            for cid in (first, second):
                r = await m.post(f"/cases/{cid}/coordinator", json={"coordinator_id": "bo"})
                assert r.status_code == 200, r.text
        lea = typed("Family B", ("Lea Berg", "child", "2013-01-02"))
        r = await anna.post(await anna.referral_form(), lea)
        assert r.status_code == 200 and 'id="duplicate-warning"' in r.text
        assert first not in r.text and second not in r.text and 'id="open-existing-case"' not in r.text
        assert en("referral.duplicate.hidden") in r.text
        assert en("referral.duplicate.ask", names="Mia Lund") in r.text
        # The unit's manager may read both: two links.
        r = await mia.post(await mia.referral_form(), lea)
        assert r.status_code == 200
        assert f'href="/cases/{first}"' in r.text and f'href="/cases/{second}"' in r.text
        assert await total_cases(stack) == before + 1


async def test_empty_required_fields_come_back_with_the_errors_and_what_was_typed(stack: Stack) -> None:
    async with Browser(stack, "anna") as anna:
        before = await total_cases(stack)
        form = await anna.referral_form()
        r = await anna.post(form, {"family.members.0.birth_date": "2015-03-02",
                                   "family.members.1.needs": "A quiet room", "referral.reason": "   "})
        assert r.status_code == 422, r.text[:2000]
        refusal = re.search(r'id="form-register_referral-refusal".*?</div>\s*</div>', r.text, re.S).group(0)
        for label in ("referral.label.referral.source", "referral.label.referral.reason",
                      "referral.label.family.name", "referral.label.consent.coordinated_handling"):
            assert f"{en(label)}: {en('error.missing')}" in refusal, label
        name_1 = f"{en('referral.member_n', n=1)}: {en('referral.member.name')}"
        assert f"{name_1}: {en('error.missing')}" in refusal
        assert f"{en('referral.member_n', n=2)}: {en('referral.member.name')}" in refusal
        for field in ("referral-source", "referral-reason", "family-name", "family-members-0-name"):
            assert f'id="form-register_referral-{field}-error"' in r.text, field
        kept = forms_of(r.text)["form-register_referral"]["fields"]
        assert kept["family.members.0.birth_date"] == "2015-03-02"
        assert kept["family.members.1.needs"] == "A quiet room"
        assert await total_cases(stack) == before

        # No family member at all: one sentence for the list.
        r = await anna.post(form, {**typed("Family Empty"), "family.members.0.role": ""})
        assert r.status_code == 422 and en("referral.error.no_member") in r.text
        # No CSRF token: refused, nothing saved.
        r = await anna.post(form, typed("Family Nocsrf", ("Ny Barn", "child", "")), drop=("csrf_token",))
        assert r.status_code == 403
        assert await total_cases(stack) == before


async def test_a_double_submit_makes_one_case(stack: Stack) -> None:
    async with Browser(stack, "anna") as anna:
        before = await total_cases(stack)
        form = await anna.referral_form()
        fields = typed("Family Twice", ("Ida Twice", "child", "2016-02-03"))
        one, two = await asyncio.gather(anna.post(form, fields), anna.post(form, fields))
        assert case_id_of(one) == case_id_of(two)
        third = await anna.post(form, fields)  # pressed again after the answer came
        assert case_id_of(third) == case_id_of(one)
        await case(stack, case_id_of(one))
        assert await total_cases(stack) == before + 1


async def test_only_coordinators_managers_and_admins_register(stack: Stack) -> None:
    async with Browser(stack, "ole") as ole, Browser(stack, "board") as board:
        for person in (ole, board):
            assert (await person.http.get("/cases/new")).status_code == 403
        async with Browser(stack, "anna") as anna:
            form = await anna.referral_form()
        r = await ole.http.post("/cases/new", data={**form["fields"], **typed("X", ("Y", "child", ""))})
        assert r.status_code == 403  # another session's token, and not a registering role
    async with httpx.AsyncClient(base_url=stack.base_url, follow_redirects=False) as anonymous:
        r = await anonymous.get("/cases/new")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
