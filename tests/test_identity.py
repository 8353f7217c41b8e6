"""Identity (DESIGN §9, §5): passwords, tokens, sessions, CSRF, throttling, trusted header.

The API runs in-process (FastAPI's TestClient) on a real SQLite read model; Temporal is not
needed for any of this (an address nobody answers on)."""

from __future__ import annotations

import base64
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from settings import Settings

ADMIN_PW = "correct horse battery staple"


def make_settings(tmp_path: Path, **extra: str) -> Settings:
    values = {"ONEFAMILY_DATA_DIR": str(tmp_path / "data"), "TEMPORAL_ADDRESS": "127.0.0.1:1",
              "ONEFAMILY_ALLOWED_HOSTS": "testserver", "ONEFAMILY_STUCK_INDEX_SECONDS": "0",
              "ONEFAMILY_TEMPORAL_CONNECT_WAIT": "0"}
    values.update(extra)
    return Settings(**values)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ONEFAMILY_STUCK_INDEX_SECONDS", "0")
    app = create_app(make_settings(tmp_path, ONEFAMILY_ADMIN_PASSWORD=ADMIN_PW))
    with TestClient(app, client=("198.51.100.7", 40000)) as client:
        yield client


def admin_token(api: TestClient) -> str:
    answer = api.post("/api/v1/auth/tokens", headers=basic("admin", ADMIN_PW))
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def add_staff(api: TestClient, token: str, staff_id: str, roles: list[str], **extra) -> dict:
    body = {"id": staff_id, "name": staff_id.title(), "discipline": "social_worker",
            "department": "children_disability", "roles": roles, **extra}
    answer = api.post("/api/v1/staff", headers=bearer(token), json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def login(api: TestClient, staff_id: str, password: str, next: str = "/") -> str:
    """Signs in through the form; returns the session's CSRF token."""
    answer = api.post("/login", data={"staff_id": staff_id, "password": password, "next": next},
                      follow_redirects=False)
    assert answer.status_code == 303, answer.text
    session = api.get("/api/v1/auth/session")
    assert session.status_code == 200, session.text
    return session.json()["csrf_token"]


# ---------------------------------------------------------------- no proof, no entry


def test_x_user_alone_is_not_an_identity(api: TestClient) -> None:
    for headers in ({"X-User": "admin"}, {}):
        answer = api.get("/api/v1/cases", headers=headers)
        assert answer.status_code == 401
        assert "Bearer" in answer.json()["detail"]
    api.cookies.set("onefamily_user", "admin")  # yesterday's whole login
    assert api.get("/api/v1/staff").status_code == 401
    assert api.get("/", follow_redirects=False).status_code == 303


def test_login_page_lists_nobody(api: TestClient) -> None:
    token = admin_token(api)
    add_staff(api, token, "anna_secret_id", ["coordinator"], password="anna's long password")
    page = api.get("/login")
    assert page.status_code == 200
    assert "anna_secret_id" not in page.text and 'type="password"' in page.text


def test_bootstrap_password_generated_once_mode_0600(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        path = settings.data_dir / "admin-password"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 12
        assert client.post("/api/v1/auth/tokens", headers=basic("admin", password)).status_code == 201
    with TestClient(create_app(settings)):
        assert path.read_text().strip() == password  # a restart keeps it


# ---------------------------------------------------------------- tokens


def test_token_lifecycle(api: TestClient) -> None:
    token = admin_token(api)
    assert token.startswith("of_")
    assert api.get("/api/v1/staff", headers=bearer(token)).status_code == 200
    mine = api.get("/api/v1/auth/tokens", headers=bearer(token)).json()
    assert mine["total"] == 1 and "token" not in mine["items"][0] and "secret_hash" not in mine["items"][0]
    second = api.post("/api/v1/auth/tokens", headers=bearer(token),
                      json={"name": "script", "expires_in_days": 365}).json()
    assert api.delete(f"/api/v1/auth/tokens/{second['id']}", headers=bearer(token)).status_code == 204
    revoked = api.get("/api/v1/staff", headers=bearer(second["token"]))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert api.post("/api/v1/auth/tokens", headers=bearer(token),
                    json={"expires_in_days": 366}).status_code == 422
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert api.get("/api/v1/staff", headers=bearer(tampered)).status_code == 401
    assert api.get("/api/v1/staff", headers=bearer("nonsense")).status_code == 401


def test_stored_token_and_password_are_hashes(api: TestClient, tmp_path: Path) -> None:
    token = admin_token(api)
    secret = token.split("_", 2)[2]
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("onefamily.db*"))
    assert secret.encode() not in raw and ADMIN_PW.encode() not in raw


def test_wrong_password_and_unknown_user_answer_alike(api: TestClient) -> None:
    wrong = api.post("/api/v1/auth/tokens", headers=basic("admin", "not the password"))
    unknown = api.post("/api/v1/auth/tokens", headers=basic("nobody", "not the password"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_deactivated_staff_lose_tokens_and_sessions(api: TestClient) -> None:
    token = admin_token(api)
    add_staff(api, token, "ole", ["team_member"], password="ole's long password")
    ole = api.post("/api/v1/auth/tokens", headers=basic("ole", "ole's long password")).json()["token"]
    login(api, "ole", "ole's long password")
    assert api.get("/api/v1/auth/session").json()["principal"]["id"] == "ole"
    assert api.post("/api/v1/staff/ole/deactivate", headers=bearer(token)).status_code == 200
    assert api.get("/api/v1/staff", headers=bearer(ole)).status_code == 401
    assert api.get("/api/v1/auth/session").status_code == 401  # the cookie's session ended
    assert api.post("/api/v1/auth/tokens", headers=basic("ole", "ole's long password")).status_code == 401


# ---------------------------------------------------------------- sessions and CSRF


def test_browser_session_csrf_and_logout(api: TestClient) -> None:
    csrf = login(api, "admin", ADMIN_PW, next="/cases")
    assert re.fullmatch(r"[\w-]{20,}", csrf)
    cookie = api.cookies.get("onefamily_session")
    assert cookie and cookie not in str(api.get("/api/v1/auth/session").json())
    body = {"name": "from the browser"}
    assert api.post("/api/v1/auth/tokens", json=body).status_code == 403  # no CSRF header
    assert api.post("/api/v1/auth/tokens", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert api.post("/api/v1/auth/tokens", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert api.post("/logout", follow_redirects=False).status_code == 403  # form without token
    assert api.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    api.cookies.set("onefamily_session", cookie)  # the old cookie, replayed
    assert api.get("/api/v1/auth/session").status_code == 401


def test_session_cookie_flags(api: TestClient) -> None:
    answer = api.post("/login", data={"staff_id": "admin", "password": ADMIN_PW},
                      follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie


def test_session_idle_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from api import sessions

    app = create_app(make_settings(tmp_path, ONEFAMILY_ADMIN_PASSWORD=ADMIN_PW,
                                   ONEFAMILY_SESSION_IDLE_MINUTES="1"))
    with TestClient(app) as client:
        login(client, "admin", ADMIN_PW)
        later = sessions.utcnow() + timedelta(minutes=2)
        monkeypatch.setattr(sessions, "utcnow", lambda: later)
        assert client.get("/api/v1/auth/session").status_code == 401


def test_next_accepts_only_relative_paths(api: TestClient) -> None:
    for target, expected in (("/cases?x=1", "/cases?x=1"), ("//evil.example/", "/"),
                             ("https://evil.example/", "/"), ("/\\evil.example", "/")):
        answer = api.post("/login", data={"staff_id": "admin", "password": ADMIN_PW, "next": target},
                          follow_redirects=False)
        assert answer.headers["location"] == expected


def test_login_throttling(api: TestClient) -> None:
    for _ in range(5):
        answer = api.post("/login", data={"staff_id": "admin", "password": "wrong password!"})
        assert answer.status_code == 401
    answer = api.post("/login", data={"staff_id": "admin", "password": ADMIN_PW})
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
    basic_answer = api.post("/api/v1/auth/tokens", headers=basic("admin", ADMIN_PW))
    assert basic_answer.status_code == 429
    # An unknown account is throttled the same way: the answer tells nothing.
    for _ in range(5):
        api.post("/login", data={"staff_id": "ghost", "password": "wrong password!"})
    assert api.post("/login", data={"staff_id": "ghost", "password": "x" * 12}).status_code == 429


# ---------------------------------------------------------------- staff and passwords


def test_new_staff_without_password_gets_a_one_time_link(api: TestClient) -> None:
    token = admin_token(api)
    out = add_staff(api, token, "mia", ["manager"])
    url = out["invitation_url"]
    link = url.split("token=", 1)[1]
    short = api.post("/set-password", data={"token": link, "password": "short", "repeat": "short"})
    assert short.status_code == 422
    done = api.post("/set-password", data={"token": link, "password": "mia's long password",
                                           "repeat": "mia's long password"}, follow_redirects=False)
    assert done.status_code == 303
    again = api.post("/set-password", data={"token": link, "password": "another long one",
                                            "repeat": "another long one"})
    assert again.status_code == 400
    assert api.post("/api/v1/auth/tokens", headers=basic("mia", "mia's long password")).status_code == 201


def test_password_rules_and_change(api: TestClient) -> None:
    token = admin_token(api)
    answer = api.post("/api/v1/staff", headers=bearer(token), json={
        "id": "kim", "name": "Kim", "discipline": "other", "department": "x", "roles": ["coordinator"],
        "password": "too short"})
    assert answer.status_code == 422 and "12" in answer.json()["detail"]
    add_staff(api, token, "kim", ["coordinator"], password="kim's long password")
    kim = api.post("/api/v1/auth/tokens", headers=basic("kim", "kim's long password")).json()["token"]
    wrong = api.post("/api/v1/staff/kim/password", headers=bearer(kim),
                     json={"current_password": "nope", "new_password": "kim's new password"})
    assert wrong.status_code == 403
    ok = api.post("/api/v1/staff/kim/password", headers=bearer(kim),
                  json={"current_password": "kim's long password", "new_password": "kim's new password"})
    assert ok.status_code == 204
    assert api.post("/api/v1/auth/tokens", headers=basic("kim", "kim's new password")).status_code == 201


def test_only_admin_grants_admin(api: TestClient) -> None:
    token = admin_token(api)
    add_staff(api, token, "mia", ["manager"], password="mia's long password")
    mia = api.post("/api/v1/auth/tokens", headers=basic("mia", "mia's long password")).json()["token"]
    body = {"id": "evil", "name": "Evil", "discipline": "other", "department": "x",
            "roles": ["admin"], "password": "a long password!"}
    refused = api.post("/api/v1/staff", headers=bearer(mia), json=body)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    other_unit = api.post("/api/v1/staff", headers=bearer(mia), json={
        **body, "roles": ["coordinator"], "unit": "adult_disability"})
    assert other_unit.status_code == 403
    own_unit = api.post("/api/v1/staff", headers=bearer(mia), json={**body, "roles": ["coordinator"]})
    assert own_unit.status_code == 201


def test_staff_list_hides_contact_details(api: TestClient) -> None:
    token = admin_token(api)
    add_staff(api, token, "anna", ["coordinator"], password="anna's long password",
              phone="+4520000000", email="anna@example.org")
    add_staff(api, token, "ole", ["team_member"], password="ole's long password", phone="+4521111111")
    ole = api.post("/api/v1/auth/tokens", headers=basic("ole", "ole's long password")).json()["token"]
    items = {s["id"]: s for s in api.get("/api/v1/staff", headers=bearer(ole)).json()["items"]}
    assert "phone" not in items["anna"] and "email" not in items["anna"]
    assert items["ole"]["phone"] == "+4521111111"  # one's own
    assert all("password" not in s for s in items.values())


# ---------------------------------------------------------------- trusted header


def test_trusted_header_only_from_trusted_proxies(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ONEFAMILY_AUTH="trusted-header",
                             ONEFAMILY_TRUSTED_PROXIES="192.0.2.0/24")
    app = create_app(settings)
    with TestClient(app, client=("192.0.2.10", 1234)) as proxy:
        assert proxy.get("/api/v1/staff", headers={"X-User": "admin"}).status_code == 200
        assert proxy.get("/api/v1/staff", headers={"X-User": "ghost"}).status_code == 401
    with TestClient(app, client=("203.0.113.9", 1234)) as direct:
        refused = direct.get("/api/v1/staff", headers={"X-User": "admin"})
        assert refused.status_code == 401 and "proxy" in refused.json()["detail"]


# ---------------------------------------------------------------- order of refusals


def test_401_before_413_before_422(api: TestClient) -> None:
    huge = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    headers = {"Content-Type": "application/json"}
    assert api.post("/api/v1/cases", content=huge, headers=headers).status_code == 401
    token = admin_token(api)
    too_big = api.post("/api/v1/cases", content=huge, headers={**headers, **bearer(token)})
    assert too_big.status_code == 413 and "bytes" in too_big.json()["detail"]
    assert api.post("/api/v1/cases", content=b"{", headers={**headers, **bearer(token)}).status_code == 422


def test_staff_cache_is_bounded(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 distinct 16 KB X-User values once grew the API by 300 MB."""
    from sqlmodel import Session

    from api import deps

    monkeypatch.setattr(deps, "STAFF_CACHE_MAX", 100)
    deps.forget_staff()
    for k in range(300):
        assert api.get("/api/v1/staff", headers={"X-User": f"{k:05d}" + "x" * 16_000}).status_code == 401
    assert len(deps._staff_cache) == 0  # X-User is not looked up outside trusted-header mode
    with Session(api.app.state.engine) as session:
        for k in range(300):
            deps.lookup_staff(session, f"nobody-{k}")
        deps.lookup_staff(session, "y" * 16_000)
    assert len(deps._staff_cache) == 100
