"""The family's part of the case page for the staff (issue 10, DESIGN §11): the consents, the
portal invitation, the family's focus points, pause requests and contact preference — posted
as a browser posts them (a signed-in session cookie, the page's own CSRF token, idempotency
key and case version) against the real stack (dev server, worker and API processes;
tests/e2e_stack.py), with a real SMTP server (aiosmtpd) the worker mails the invitation to.

Measured: the time from the revoke form's answer to the covered team member's first refused
read (printed; `-s` shows it)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.pages import i18n
from domain.lifecycle import STALE
from tests.e2e_stack import Stack
from tests.factories import STAFF, case_create_body, password_of
from tests.messaging_fakes import SmsGateway, SmtpServer
from tests.test_case_forms import Person, flash_or_refusal, forms_of

FAMILY_FORMS = {"invite_family", "give_consent", "change_consent", "revoke_consent",
                "set_contact_preference", "confirm_focus_points"}
LINK = re.compile(r"/family/welcome\?token=([A-Za-z0-9_-]+)")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, SmtpServer]]:
    s = Stack(Path(tmp_path_factory.mktemp("consent-pages")) / "data")
    with SmtpServer() as smtp, SmsGateway() as sms:
        try:
            with pytest.MonkeyPatch.context() as mp:
                for name, value in {"ONEFAMILY_SMTP_HOST": "127.0.0.1", "ONEFAMILY_SMTP_PORT": str(smtp.port),
                                    "ONEFAMILY_SMTP_FROM": "OneFamily <noreply@kommune.example>",
                                    "ONEFAMILY_SMS_URL": sms.url, "ONEFAMILY_SMS_TOKEN": SmsGateway.TOKEN,
                                    "ONEFAMILY_SMS_QUIET_HOURS": "none"}.items():
                    mp.setenv(name, value)
                await s.start()
            admin = await s.token()
            async with httpx.AsyncClient(base_url=s.base_url,
                                         headers={"Authorization": f"Bearer {admin}"}) as c:
                for person in STAFF:
                    body = {**person, "password": password_of(person["id"])}
                    assert (await c.post("/api/v1/staff", json=body)).status_code == 201
            s.tokens = {p["id"]: await s.token(p["id"], password_of(p["id"])) for p in STAFF}
            yield s, smtp
        finally:
            s.stop()


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.base_url + "/api/v1", timeout=60,
                             headers={"Authorization": f"Bearer {stack.tokens[user]}"})


def en(key: str, **values: object) -> str:
    return i18n.translate("en", key, **values)


def ok_of(r: httpx.Response) -> str:
    assert r.status_code == 303, f"{r.status_code}: {flash_or_refusal(r.text)}"
    location = urlsplit(r.headers["location"])
    assert location.fragment, location  # back to the section the form is about
    return parse_qs(location.query)["ok"][0]


def unescape(html: str) -> str:
    return html.replace("&#39;", "'").replace("&quot;", '"').replace("&amp;", "&")


async def new_case(stack: Stack, name: str, *, coordinated: bool = True, email: str | None = None) -> str:
    """A case coordinated by anna with Ole (adult services) on the core team; the parent
    Mette (m2) has a phone and, if given, an e-mail address."""
    body = case_create_body(received_at=datetime.now(UTC).isoformat())
    body["family"]["name"] = name
    body["family"]["language"] = "en"
    body["consent"] = {"coordinated_handling": coordinated}
    if email:
        body["family"]["members"][1]["email"] = email
    async with api(stack, "mia") as mia:
        r = await mia.post("/cases", json=body)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        r = await mia.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text
    async with api(stack, "anna") as anna:
        r = await anna.post(f"/cases/{case_id}/team", json={"members": [
            {"staff_id": "ole", "discipline": "adult_services", "department": "adult_services"}]})
        assert r.status_code == 200, r.text
    return case_id


async def case(stack: Stack, case_id: str) -> dict:
    async with api(stack, "mia") as mia:
        r = await mia.get(f"/cases/{case_id}")
        assert r.status_code == 200, r.text
        return r.json()


async def ole_reads(stack: Stack, case_id: str) -> int:
    async with api(stack, "ole") as ole:
        return (await ole.get(f"/cases/{case_id}")).status_code


def box(form: dict, prefix: str, value: str, html: str) -> str:
    """The name of the checkbox `prefix.N` of `form` whose value is `value` (ticked or not)."""
    found = re.search(rf'name="({re.escape(prefix)}\.\d+)" value="{re.escape(value)}"', html)
    assert found, f"no {prefix} box for {value}"
    assert found.group(1) in form["names"]
    return found.group(1)


# ---------------------------------------------------------------- consents


async def test_paper_consent_then_revoke_narrows_access_at_once(world) -> None:
    stack, _ = world
    case_id = await new_case(stack, "Family Paper", coordinated=False)
    assert await ole_reads(stack, case_id) == 403  # coordinated handling refused: Ole waits
    async with Person(stack, "anna") as anna:
        html, forms = await anna.page(case_id)
        assert FAMILY_FORMS - {"confirm_focus_points"} <= {f["command"] for f in forms.values()}
        assert "Ole Dam (adult services) waits for the family&#39;s consent" in html
        give = forms["form-give_consent"]
        ole_box = box(give, "staff_ids", "ole", html)
        assert give["fields"][ole_box] == "ole"  # the one waiting is ticked already
        assert give["fields"]["member_id"] == "m2" and give["fields"]["covers.0"] == "case"

        # An expiry in the past: the workflow's sentence, the typed date kept, nothing applied.
        r = await anna.post(give, {"expires_at": "2024-01-31"})
        assert r.status_code == 422, r.status_code
        assert "The consent's expiry date 2024-01-31 is in the past." in unescape(r.text)
        assert forms_of(r.text)["form-give_consent"]["fields"]["expires_at"] == "2024-01-31"
        assert len((await case(stack, case_id))["consents"]) == 1
        # Nobody named: the workflow's sentence.
        r = await anna.post(give, {"expires_at": (date.today() + timedelta(days=90)).isoformat()},
                            drop=(ole_box,))
        assert r.status_code == 422 and "Name the professionals" in r.text
        assert await ole_reads(stack, case_id) == 403

        until = date.today() + timedelta(days=180)
        sentence = ok_of(await anna.post(give, {"expires_at": until.isoformat(), "covers.1": "documents"}))
        assert sentence.startswith("Consent c2 is recorded: Ole Dam may see the case until"), sentence
        c = await case(stack, case_id)
        new = c["consents"][-1]
        assert (new["id"], new["staff_ids"], new["source"], new["given_by"], new["member_id"]) == (
            "c2", ["ole"], "paper", "anna", "m2")
        assert new["covers"] == ["case", "documents"] and new["expires_at"] == until.isoformat()
        assert await ole_reads(stack, case_id) == 200  # covered: Ole reads the case
        html, forms = await anna.page(case_id)
        assert 'data-consent="c2" data-status="active"' in html
        assert "waits for the family&#39;s consent" not in html

        # Extend it (the change form for c2, chosen in the table); nothing changed: a sentence.
        r = await anna.http.get(f"/cases/{case_id}", params={"consent": "c2"})
        change = forms_of(r.text)["form-change_consent"]
        assert change["fields"]["consent_id"] == "c2" and change["fields"]["expires_at"] == until.isoformat()
        r = await anna.post(change)
        assert r.status_code == 422 and en("consent.change_consent.nothing") in unescape(r.text)
        later = until + timedelta(days=30)
        assert ok_of(await anna.post(forms_of(r.text)["form-change_consent"],
                                     {"expires_at": later.isoformat()})) == en("consent.change_consent.done")
        assert (await case(stack, case_id))["consents"][-1]["expires_at"] == later.isoformat()

        # Revoke without the confirmation box: a sentence, nothing applied.
        revoke = (await anna.form(case_id, "revoke_consent"))
        r = await anna.post(revoke, {"consent_id": "c2", "reason": "Mette phoned"})
        assert r.status_code == 422 and en("consent.revoke_consent.confirm_needed") in unescape(r.text)
        assert forms_of(r.text)["form-revoke_consent"]["fields"]["reason"] == "Mette phoned"
        assert await ole_reads(stack, case_id) == 200

        # Revoke: Ole's very next read is refused.
        async with api(stack, "ole") as ole:
            sent = time.perf_counter()
            r = await anna.post(revoke, {"consent_id": "c2", "reason": "Mette phoned", "confirm": "true"})
            answered = time.perf_counter()
            refused = await ole.get(f"/cases/{case_id}")
            refused_at = time.perf_counter()
        assert refused.status_code == 403, refused.text
        assert "The family has not consented" in refused.json()["detail"]
        assert ok_of(r) == en("consent.revoke_consent.done") + " " + en("consent.lost", names="Ole Dam")
        TIMES["revoke answer -> refused read"] = refused_at - answered
        TIMES["revoke sent -> refused read"] = refused_at - sent
        print(f"\nrevoke from the page: answered in {answered - sent:.3f} s; Ole's next read refused "
              f"{refused_at - answered:.3f} s after the answer ({refused_at - sent:.3f} s after sending)")
        assert refused_at - answered < 1.0
        html, _ = await anna.page(case_id)
        assert 'data-consent="c2" data-status="revoked"' in html
        assert "Ole Dam (adult services) waits for the family&#39;s consent" in html

        # Revoking twice: the API's 409 sentence next to the form, nothing else happens.
        revoke = await anna.form(case_id, "revoke_consent")
        assert "c2" not in re.findall(r'<option value="(c\d+)"', html)
        r = await anna.post(revoke, {"consent_id": "c2", "confirm": "true"})
        assert r.status_code == 409, r.status_code
        assert "Consent c2 was already revoked" in flash_or_refusal(r.text)
        assert 'id="revoke_consent-refusal"' in r.text
        events = [h["event"] for h in (await case(stack, case_id))["history"]]
        assert events.count("consent_revoked") == 1


async def test_an_unknown_consent_and_a_stale_page(world) -> None:
    stack, _ = world
    case_id = await new_case(stack, "Family Stale")
    async with Person(stack, "anna") as anna:
        revoke = await anna.form(case_id, "revoke_consent")
        r = await anna.post(revoke, {"consent_id": "c9", "confirm": "true"})
        assert r.status_code == 404 and "No consent &#39;c9&#39; on this case." in r.text
        pref = await anna.form(case_id, "set_contact_preference")
        assert ok_of(await anna.post(pref, {"preference": "space"})) == en(
            "consent.set_contact_preference.done", preference=en("timeline.preference.space"))
        # The revoke form was loaded before the preference changed: stale, nothing applied.
        r = await anna.post(revoke, {"consent_id": "c1", "confirm": "true"})
        assert r.status_code == 409 and STALE.replace("'", "&#39;") in r.text
        assert (await case(stack, case_id))["consents"][0]["status"] == "active"
        # The same preference again: the workflow's sentence.
        r = await anna.post(await anna.form(case_id, "set_contact_preference"), {"preference": "space"})
        assert r.status_code == 409 and "already &#39;space&#39;" in r.text


# ---------------------------------------------------------------- the portal invitation


async def test_an_invitation_from_the_page_mails_the_parent(world) -> None:
    stack, smtp = world
    email = f"mette.{uuid.uuid4().hex[:6]}@example.org"
    case_id = await new_case(stack, "Family Invite", email=email)
    async with Person(stack, "anna") as anna:
        html, forms = await anna.page(case_id)
        invite = forms["form-invite_family"]
        options = re.findall(r'name="invitee" value="([^"]+)"', html)
        assert options == ["m2:sms", "m2:email"]  # Mette only (the child is not invited), both channels
        assert invite["fields"]["invitee"] == "m2:sms"
        r = await anna.post(invite, {"invitee": "m2:email"})
        sentence = ok_of(r)
        assert sentence.startswith("Mette is invited by e-mail; the link works until"), sentence
        again = await anna.post(invite, {"invitee": "m2:email"})  # a double submit: one link
        assert ok_of(again) == sentence

        deadline = time.monotonic() + 60
        while not [m for m in smtp.messages if email in str(m["To"])]:
            assert time.monotonic() < deadline, "no invitation mail"
            await asyncio.sleep(0.2)
        mails = [m for m in smtp.messages if email in str(m["To"])]
        assert len(mails) == 1
        assert LINK.search(mails[0].get_body(preferencelist=("plain",)).get_content())

        async with api(stack, "anna") as api_anna:
            listed = (await api_anna.get(f"/cases/{case_id}/family/invitations")).json()["items"]
        assert [(i["member_id"], i["channel"], i["status"]) for i in listed] == [("m2", "email", "pending")]
        html, _ = await anna.page(case_id)
        assert f'data-invitation="{listed[0]["id"]}" data-status="pending"' in html
        assert en("consent.invitation.status.pending") in html

        # Nothing to choose: a sentence, nothing sent.
        r = await anna.post(forms_of(html)["form-invite_family"], {"invitee": ""})
        assert r.status_code == 422 and en("consent.invite_family.whom_needed") in r.text


# ---------------------------------------------------------------- what the family sent


async def test_focus_points_confirmed_and_a_pause_request_shown(world) -> None:
    stack, _ = world
    case_id = await new_case(stack, "Family Focus")
    async with api(stack, "anna") as api_anna:  # taken down for the family (the portal does it too)
        r = await api_anna.post(f"/cases/{case_id}/focus-points", json={"text": "Emil's mornings"})
        assert r.status_code == 200, r.text
        r = await api_anna.post(f"/cases/{case_id}/pause-requests", json={"reason": "Holiday in July"})
        assert r.status_code == 200, r.text
    async with Person(stack, "anna") as anna:
        html, forms = await anna.page(case_id)
        assert 'data-focus="1" data-confirmed="false"' in html and "Emil&#39;s mornings" in html
        assert 'data-pause-request="1"' in html and "Holiday in July" in html
        assert 'href="#section-pause"' in html  # the coordinator pauses with the pause form
        confirm = forms["form-confirm_focus_points"]
        assert confirm["fields"]["number"] == "1"
        assert ok_of(await anna.post(confirm)) == en("consent.confirm_focus_points.done")
        c = await case(stack, case_id)
        assert c["focus_points"][0]["confirmed_by"] == "anna"
        assert c["contacts"][-1]["kind"] == "message"  # counted as a contact
        html, forms = await anna.page(case_id)
        assert 'data-focus="1" data-confirmed="true"' in html
        assert "form-confirm_focus_points" not in forms  # nothing left to confirm
        # The same form sent twice (a double click): one effect.
        contacts = len(c["contacts"])
        assert ok_of(await anna.post(confirm)) == en("consent.confirm_focus_points.done")
        assert len((await case(stack, case_id))["contacts"]) == contacts
        # The old page sent once more as a new submit: stale, nothing applied.
        r = await anna.post(confirm, {"idempotency_key": uuid.uuid4().hex})
        assert r.status_code == 409 and STALE.replace("'", "&#39;") in r.text
        assert len((await case(stack, case_id))["contacts"]) == contacts


# ---------------------------------------------------------------- who sees the forms


async def test_a_team_member_sees_none_of_the_family_forms(world) -> None:
    stack, _ = world
    case_id = await new_case(stack, "Family Team View")
    async with Person(stack, "ole") as ole, Person(stack, "mia") as mia:
        html, forms = await ole.page(case_id)
        assert not FAMILY_FORMS & {f["command"] for f in forms.values()}
        assert 'id="consent-table"' in html  # the consents themselves he may read
        own = forms["form-record_contact"]["fields"]
        for action, data in ((f"/cases/{case_id}/consents/revoke", {"consent_id": "c1", "confirm": "true"}),
                             (f"/cases/{case_id}/family/invitations", {"invitee": "m2:sms"}),
                             (f"/cases/{case_id}/contact-preference", {"preference": "close"})):
            r = await ole.http.post(action, data={"csrf_token": own["csrf_token"], **data})
            assert r.status_code == 403, (action, r.status_code)
        assert (await case(stack, case_id))["consents"][0]["status"] == "active"
        # A missing CSRF token: 403 before anything.
        r = await ole.http.post(f"/cases/{case_id}/consents/revoke", data={"consent_id": "c1"})
        assert r.status_code == 403
        # The unit's manager has them.
        _, forms = await mia.page(case_id)
        assert FAMILY_FORMS - {"confirm_focus_points"} <= {f["command"] for f in forms.values()}


# ---------------------------------------------------------------- in Chromium, with axe


async def test_the_consent_forms_in_chromium_with_axe(world, browser) -> None:
    from tests.browser import CHROMIUM, Shots, fail_on_serious, fill, new_person, send

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")
    from playwright.async_api import expect

    stack, _ = world
    case_id = await new_case(stack, "Family Browser Consent", coordinated=False,
                             email=f"m.{uuid.uuid4().hex[:6]}@example.org")
    async with api(stack, "anna") as api_anna:
        await api_anna.post(f"/cases/{case_id}/focus-points", json={"text": "Sleep and school"})
    shots = Shots("consent-pages")
    _, page = await new_person(browser, stack, "anna")
    await page.goto(f"{stack.base_url}/cases/{case_id}")
    await expect(page.locator("#consent-pending")).to_contain_text("Ole Dam")
    await shots(page, "anna consents pending", axe="case: consents, waiting for consent")
    await shots(page, "consents section", part="#consents")
    await shots(page, "give consent form", part="#section-give_consent")
    await shots(page, "invite form", part="#section-invite_family")
    await fill(page, "give_consent", {"expires_at": (date.today() + timedelta(days=60)).isoformat()})
    await send(page, "give_consent")
    await expect(page.locator(".alert-success")).to_contain_text("Consent c2 is recorded")
    await send(page, "invite_family", {"invitee": "m2:email"})
    await send(page, "confirm_focus_points")
    await shots(page, "anna consent recorded", axe="case: consent recorded, invitation sent")
    await page.goto(f"{stack.base_url}/cases/{case_id}?consent=c2#section-revoke_consent")
    await fill(page, "revoke_consent", {"confirm": True})
    await send(page, "revoke_consent")
    await expect(page.locator("#consent-pending")).to_contain_text("Ole Dam")
    await shots(page, "anna consent revoked", axe="case: consent revoked")
    await shots(page, "consents after revoke", part="#consents")
    await shots(page, "revoke form", part="#section-revoke_consent")
    print("\naxe:\n" + shots.table.text())
    fail_on_serious(shots.table)
