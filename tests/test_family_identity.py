"""The family's way in (DESIGN §11, issue 10; docs/family.md) against the real stack: the
invitation mailed by the real notification service (aiosmtpd) or sent by the SMS gateway fake,
the link spent once, expired links, sign-in codes with staff login's throttling, the family
session's rules (§9), and national eID against a real OpenID provider (tests/oidc)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api.credentials import sha256
from api.family_auth import create_invitation
from launcher import free_port, spawn, stop_process
from models.tables_auth import LoginFailureRow, SessionRow
from models.tables_family import FamilyIdentityRow, FamilyInvitationRow, FamilySignInCodeRow
from models.tables_outbox import NotificationRow
from tests.family_world import BASE, LINK, World, family_world

# The code in the sign-in message (the case's other messages carry dates and times, not this).
SIGN_IN_CODE = re.compile(r"(?m)^(\d{6})(?:[ \t\r]*$| is your)")


@pytest.fixture(scope="module")
async def world(ts_env: WorkflowEnvironment,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with family_world(ts_env, Path(tmp_path_factory.mktemp("family-identity"))) as w:
        yield w


@pytest.fixture(scope="module")
async def case(world: World) -> dict:
    return await world.register("Family Jensen")


def _text(mail) -> str:
    return mail.get_body(preferencelist=("plain",)).get_content()


# ---------------------------------------------------------------- invitations and links


async def test_invitation_by_email_link_once_then_the_family_view(world: World, case: dict) -> None:
    answer = await world.invite(case["id"], "email")
    assert answer.status_code == 201, answer.text
    invitation = answer.json()
    assert invitation["member_id"] == "m2" and invitation["status"] == "pending"
    assert "token" not in answer.text and "welcome?token" not in answer.text  # staff never see it
    expires = datetime.fromisoformat(invitation["expires_at"])
    assert timedelta(hours=71, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=72)

    token = await world.link_from_mail(case["email"])
    mail = next(m for m in world.smtp.messages if token in _text(m))
    text = _text(mail)
    assert "Mette of Family Jensen" in text and "Anna Berg" in text and "OneFamily" in str(mail["Subject"])
    # Only the hash of the secret is stored; the outbox row is the message (sealed at rest).
    with Session(world.engine) as s:
        row = s.get(FamilyInvitationRow, invitation["id"])
        assert row.secret_hash == sha256(token) and token not in row.model_dump_json()
    # The mail reaches the SMTP server a moment before the outbox row is marked sent.
    for _ in range(50):
        with Session(world.engine) as s:
            note = s.exec(select(NotificationRow).where(NotificationRow.key == row.message_key)).one()
        if note.status == "sent":
            break
        await asyncio.sleep(0.1)
    assert note.status == "sent" and note.channel == "email" and note.recipient_id == "family:m2"

    family = world.client()
    page = await family.get("/family/welcome", params={"token": token})  # a link scanner's GET
    assert page.status_code == 200 and "<form" in page.text
    again = await family.get("/family/welcome", params={"token": token})
    assert again.status_code == 200, "a GET never spends the link"

    signed_in = await family.post("/family/welcome", json={"token": token})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["principal"] == {"kind": "family", "id": "family:m2", "case_id": case["id"],
                                             "member_id": "m2"}
    who = await family.get("/api/v1/auth/session")
    assert who.json()["principal"]["kind"] == "family" and who.json()["csrf_token"]
    view = await family.get("/api/v1/family/case")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["case_id"] == case["id"] and body["you"]["member_id"] == "m2"
    assert body["ball"]["text"] and body["coordinator"]["name"] == "Anna Berg"

    # The link works once: a second use (another browser) is a 410 with a sentence.
    other = world.client()
    second = await other.post("/family/welcome", json={"token": token})
    assert second.status_code == 410 and "already been used" in second.json()["detail"]
    form = await other.post("/family/welcome", data={"token": token})
    assert form.status_code == 410 and "already been used" in form.text
    assert (await other.get("/family/welcome", params={"token": token})).status_code == 410
    assert (await other.post("/family/welcome", json={"token": "nonsense"})).status_code == 400
    assert (await other.get("/api/v1/family/case")).status_code == 401


async def test_the_invitation_list_and_a_new_link_replaces_the_old(world: World, case: dict) -> None:
    first = (await world.invite(case["id"], "email")).json()
    second = (await world.invite(case["id"], "email")).json()
    listed = await world.client("anna").get(f"/api/v1/cases/{case['id']}/family/invitations")
    assert listed.status_code == 200
    status = {i["id"]: i["status"] for i in listed.json()["items"]}
    assert status[first["id"]] == "cancelled" and status[second["id"]] == "pending"
    cancel = await world.client("anna").post(
        f"/api/v1/cases/{case['id']}/family/invitations/{second['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    twice = await world.client("anna").post(
        f"/api/v1/cases/{case['id']}/family/invitations/{second['id']}/cancel")
    assert twice.status_code == 409 and "cancelled already" in twice.json()["detail"]


async def test_an_expired_link_is_refused(world: World, case: dict) -> None:
    with Session(world.engine) as s:
        row, token = create_invitation(s, case["id"], "m2", "email", "anna", 72)
        s.commit()
        s.execute(update(FamilyInvitationRow).where(FamilyInvitationRow.id == row.id)
                  .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        s.commit()
    family = world.client()
    answer = await family.post("/family/welcome", json={"token": token})
    assert answer.status_code == 410 and "expired" in answer.json()["detail"]
    assert "onefamily_session" not in answer.cookies


async def test_invitation_by_sms_and_refusals(world: World, case: dict) -> None:
    seen = world.texts(case["phone"])
    r = await world.invite(case["id"], "sms")
    assert r.status_code == 201, r.text
    await world.find_in_sms(case["phone"], LINK, seen)

    # a member of another case, a child, an unknown channel, a case that is not yours
    other = await world.register("Family Other")
    bad = await world.invite(case["id"], "email", member_id="m7")
    assert bad.status_code == 422 and "no family member 'm7'" in bad.json()["detail"]
    child = await world.invite(case["id"], "email", member_id="m1")
    assert child.status_code == 422 and "only parents" in child.json()["detail"]
    wrong = await world.client("anna").post(f"/api/v1/cases/{case['id']}/family/invitations",
                                            json={"member_id": "m2", "channel": "pigeon"})
    assert wrong.status_code == 422
    not_yours = await world.invite(other["id"], "email", by="bo")
    assert not_yours.status_code == 403
    team = await world.invite(case["id"], "email", by="ole")
    assert team.status_code == 403 and "coordinator" in team.json()["detail"]
    manager = await world.invite(other["id"], "email", by="mia")
    assert manager.status_code == 201, manager.text
    unknown = await world.client("anna").post(
        "/api/v1/cases/00000000-0000-0000-0000-000000000000/family/invitations",
        json={"member_id": "m2", "channel": "email"})
    assert unknown.status_code == 404


async def test_no_contact_on_file_for_the_channel_is_a_422(world: World) -> None:
    anna = world.client("anna")
    r = await anna.post("/api/v1/cases", json={
        "referral": {"source": "school", "received_at": "2026-11-20T09:00:00Z", "reason": "Support"},
        "family": {"name": "Family Nomail", "members": [
            {"name": "Kim", "role": "parent", "phone": "+4529999999"}]},
        "consent": {"coordinated_handling": True}})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (await anna.post(f"/api/v1/cases/{cid}/coordinator", json={"coordinator_id": "anna"})).is_success
    r = await world.invite(cid, "email", member_id="m1")
    assert r.status_code == 422, r.text
    assert "e-mail address on file" in r.json()["detail"] and "invite by SMS" in r.json()["detail"]


# ---------------------------------------------------------------- codes


async def _ask_code(world: World, contact: str, client: httpx.AsyncClient | None = None) -> httpx.Response:
    c = client or world.client()
    return await c.post("/family/login", json={"contact": contact})


async def test_sign_in_code_wrong_five_times_then_wait_and_a_fresh_code_works(world: World) -> None:
    case = await world.register("Family Code")
    await world.family_session(case, "email")  # the invitation makes the e-mail a way in
    mails = world.mails(case["email"])

    answer = await _ask_code(world, case["email"].upper())  # case-insensitive e-mail
    unknown = await _ask_code(world, "nobody@example.org")
    assert answer.status_code == unknown.status_code == 202
    assert answer.json()["detail"] == unknown.json()["detail"]  # the same whether known or not
    code = await world.find_in_mail(case["email"], SIGN_IN_CODE, mails)
    mails = world.mails(case["email"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    c = world.client()
    for _ in range(5):
        r = await c.post("/family/login/code", json={"contact": case["email"], "code": wrong})
        assert r.status_code == 401 and "wrong or no longer valid" in r.json()["detail"]
    blocked = await c.post("/family/login/code", json={"contact": case["email"], "code": code})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    # After the wait (failures moved back in time), the code itself is used up: 5 tries.
    with Session(world.engine) as s:
        s.execute(update(LoginFailureRow).values(at=datetime.now(UTC) - timedelta(minutes=20)))
        s.commit()
    spent = await c.post("/family/login/code", json={"contact": case["email"], "code": code})
    assert spent.status_code == 401

    assert (await _ask_code(world, case["email"])).status_code == 202
    code = await world.find_in_mail(case["email"], SIGN_IN_CODE, mails)
    ok = await c.post("/family/login/code", json={"contact": case["email"], "code": code})
    assert ok.status_code == 200, ok.text
    assert ok.json()["principal"]["case_id"] == case["id"]
    assert (await c.get("/api/v1/family/case")).status_code == 200
    with Session(world.engine) as s:  # no plaintext contact anywhere in these tables
        for model in (FamilySignInCodeRow, FamilyIdentityRow, LoginFailureRow):
            for row in s.exec(select(model)).all():
                dumped = row.model_dump_json().lower()
                assert case["email"] not in dumped and code not in dumped


async def test_an_expired_code_and_a_code_by_sms(world: World) -> None:
    case = await world.register("Family Sms")
    await world.family_session(case, "sms")
    seen = world.texts(case["phone"])
    local = case["phone"].removeprefix("+45")
    assert (await _ask_code(world, f"{local[:2]} {local[2:4]} {local[4:6]} {local[6:]}")).status_code == 202
    code = await world.find_in_sms(case["phone"], SIGN_IN_CODE, seen)
    seen = world.texts(case["phone"])
    with Session(world.engine) as s:
        s.execute(update(FamilySignInCodeRow).where(FamilySignInCodeRow.spent_at.is_(None))
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    c = world.client()
    late = await c.post("/family/login/code", json={"contact": case["phone"], "code": code})
    assert late.status_code == 401

    assert (await _ask_code(world, case["phone"])).status_code == 202
    code = await world.find_in_sms(case["phone"], SIGN_IN_CODE, seen)
    page = await c.post("/family/login/code", data={"contact": case["phone"], "code": code})
    assert page.status_code == 303 and page.headers["location"] == "/family"
    assert (await c.get("/api/v1/auth/session")).json()["principal"]["member_id"] == "m2"


async def test_bad_input_never_a_500(world: World) -> None:
    c = world.client()
    for path, body in (("/family/login", {"contact": "not a contact"}), ("/family/login", {}),
                       ("/family/login/code", {"contact": "x", "code": "1"}),
                       ("/family/welcome", {}), ("/family/welcome", {"token": "x" * 5000})):
        r = await c.post(path, json=body)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    r = await c.post("/family/welcome", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = await c.post("/family/login", content=b"[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


async def test_code_requests_are_throttled_too(world: World) -> None:
    c = world.client(peer="192.0.2.44")
    statuses = [(await _ask_code(world, "someone.else@example.org", c)).status_code for _ in range(6)]
    assert statuses[:5] == [202] * 5 and statuses[5] == 429


# ---------------------------------------------------------------- the family session (§9)


async def test_family_session_csrf_idle_timeout_and_logout(world: World, case: dict) -> None:
    family, csrf = await world.family_session(case)
    no_csrf = await family.post("/api/v1/family/focus-points", json={"text": "School mornings"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    cookie = family.cookies.get("onefamily_session")
    with Session(world.engine) as s:
        row = s.get(SessionRow, sha256(cookie))
        assert row.kind == "family" and row.case_id == case["id"] and row.principal_id == "m2"
        row.last_seen_at = datetime.now(UTC) - timedelta(minutes=world.settings.session_idle_minutes + 1)
        s.add(row)
        s.commit()
    assert (await family.get("/api/v1/family/case")).status_code == 401  # idled out

    family, csrf = await world.family_session(case)
    bye = await family.post("/family/logout", headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
    assert bye.status_code == 204
    assert (await family.get("/api/v1/family/case")).status_code == 401


# ---------------------------------------------------------------- national eID (OIDC)

NODE = shutil.which("node")
OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "onefamily-family-test"
CLIENT_SECRET = secrets.token_urlsafe(24)
PASSWORD = "provider password"


@pytest.fixture(scope="module")
async def eid_world(ts_env: WorkflowEnvironment,
                    tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple]:
    if NODE is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("Node.js and tests/oidc's oidc-provider are needed (make test installs them)")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    tmp = Path(tmp_path_factory.mktemp("family-eid"))
    log_path = tmp / "provider.log"
    env = dict(os.environ, OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
               OIDC_REDIRECT_URI=BASE + "/family/oidc/callback", OIDC_ACCOUNTS="mette,ghost",
               OIDC_PASSWORD=PASSWORD)
    with open(log_path, "ab") as log:
        provider = spawn([NODE, str(OIDC_DIR / "provider.mjs"), str(port)], cwd=OIDC_DIR, env=env,
                         stdout=log, stderr=log)
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(300):
                try:
                    if (await probe.get(issuer + "/.well-known/openid-configuration")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(log_path.read_text()[-2000:])
        async with family_world(ts_env, tmp, ONEFAMILY_FAMILY_OIDC_ISSUER=issuer,
                                ONEFAMILY_FAMILY_OIDC_CLIENT_ID=CLIENT_ID,
                                ONEFAMILY_FAMILY_OIDC_CLIENT_SECRET=CLIENT_SECRET) as w:
            yield w, issuer
    finally:
        stop_process(provider)


def _browser(world: World, issuer: str) -> httpx.AsyncClient:
    """One cookie jar across the app (in-process) and the provider (a real server)."""
    c = httpx.AsyncClient(mounts={BASE: world.transport, issuer: httpx.AsyncHTTPTransport()},
                          base_url=BASE, timeout=30)
    world.clients.append(c)
    return c


async def _follow(c: httpx.AsyncClient, r: httpx.Response, hops: int = 15) -> httpx.Response:
    for _ in range(hops):
        if r.status_code not in (301, 302, 303, 307, 308):
            return r
        r = await c.get(urljoin(str(r.url), r.headers["location"]))
    raise AssertionError("too many redirects")


async def _provider_login(c: httpx.AsyncClient, r: httpx.Response, login: str) -> httpx.Response:
    page = await _follow(c, r)
    assert page.status_code == 200 and 'name="login"' in page.text, page.text[:300]
    action = re.search(r'action="([^"]+)"', page.text).group(1)
    answer = await c.post(urljoin(str(page.url), action),
                          data={"prompt": "login", "login": login, "password": PASSWORD})
    return await _follow(c, answer)


async def test_eid_linked_from_the_invitation_then_matched_by_its_hash(eid_world) -> None:
    world, issuer = eid_world
    case = await world.register("Family Eid")
    r = await world.invite(case["id"], "email")
    assert r.status_code == 201
    token = await world.link_from_mail(case["email"])

    browser = _browser(world, issuer)
    page = await browser.get("/family/welcome", params={"token": token})
    assert 'action="/family/oidc/login"' in page.text
    start = await browser.post("/family/oidc/login", data={"token": token})
    assert start.status_code == 303 and start.headers["location"].startswith(issuer)
    landed = await _provider_login(browser, start, "mette")
    assert landed.url.path == "/family", landed.url  # (the portal's page is the pages' business)
    who = (await browser.get("/api/v1/auth/session")).json()["principal"]
    assert who == {"kind": "family", "id": "family:m2", "case_id": case["id"], "member_id": "m2"}
    again = await world.client().post("/family/welcome", json={"token": token})
    assert again.status_code == 410  # the eID sign-in spent the link
    with Session(world.engine) as s:
        links = s.exec(select(FamilyIdentityRow).where(FamilyIdentityRow.kind == "eid")).all()
        assert [(i.case_id, i.member_id) for i in links] == [(case["id"], "m2")]
        assert "mette" not in links[0].identifier_hash and len(links[0].identifier_hash) == 32

    # Later: eID alone finds the member by the identifier's keyed hash.
    later = _browser(world, issuer)
    landed = await _provider_login(later, await later.get("/family/oidc/login"), "mette")
    assert landed.url.path == "/family"
    assert (await later.get("/api/v1/auth/session")).json()["principal"]["case_id"] == case["id"]

    # Someone the eID service knows but no invitation linked: refused with a sentence.
    ghost = _browser(world, issuer)
    refused = await _provider_login(ghost, await ghost.get("/family/oidc/login"), "ghost")
    assert refused.status_code == 403 and "not linked" in refused.text
    assert (await ghost.get("/api/v1/family/case")).status_code == 401


async def test_eid_linked_from_a_family_session_needs_its_csrf_token(eid_world) -> None:
    world, issuer = eid_world
    case = await world.register("Family Eid Two")
    seen = world.mails(case["email"])
    assert (await world.invite(case["id"], "email")).status_code == 201
    token = await world.link_from_mail(case["email"], seen)
    browser = _browser(world, issuer)
    signed_in = await browser.post("/family/welcome", json={"token": token})
    csrf = signed_in.json()["csrf_token"]
    forged = await browser.post("/family/oidc/login", data={})
    assert forged.status_code == 403  # another site cannot link its eID to this family
    start = await browser.post("/family/oidc/login", data={"csrf_token": csrf})
    assert start.status_code == 303 and start.headers["location"].startswith(issuer)
    landed = await _provider_login(browser, start, "ghost")
    assert landed.url.path == "/family"
    later = _browser(world, issuer)
    await _provider_login(later, await later.get("/family/oidc/login"), "ghost")
    who = (await later.get("/api/v1/auth/session")).json()["principal"]
    assert who["case_id"] == case["id"] and who["member_id"] == "m2"
