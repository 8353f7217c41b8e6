"""ONEFAMILY_AUTH=oidc against a REAL OpenID provider (DESIGN §9, issue 8 point 2).

The provider is the npm package `oidc-provider` (OpenID Certified; tests/oidc/provider.mjs,
installed by `make test` through scripts/oidc-deps.sh) on 127.0.0.1, with one confidential
client and the accounts anna, mia (staff), ghost (not in our directory) and retired (an
inactive staff row). The app runs in uvicorn on a real port in a thread (the provider sends the
browser back to it), Temporal is not needed.

- the browser login through Chromium: authorization code + PKCE S256 + state + nonce, ending
  with a staff session on the app; people the directory does not know (or no longer) get a
  403 page; a foreign `next`, a forged `state` and a replayed callback are refused;
- the provider's JWT access token as `Authorization: Bearer`: accepted; a wrong audience, an
  expired token, a key the provider does not publish, an ID token, a token naming nobody: 401.

The test holds the provider's signing key (it writes the JWKS the provider signs with), so it
can craft tokens that differ from the provider's in one respect only (e.g. an expired `exp`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from launcher import free_port, spawn, stop_process
from settings import Settings

NODE = shutil.which("node")
OIDC_DIR = Path(__file__).resolve().parent / "oidc"
ROOT = OIDC_DIR.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

CLIENT_ID = "onefamily-test"
CLIENT_SECRET = secrets.token_urlsafe(24)
AUDIENCE = "urn:onefamily:api"
OTHER_AUDIENCE = "urn:onefamily:other"
PASSWORD = "provider password"
KID = "provider-key-1"

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js (`node`) is not installed: the OIDC tests "
                                "need it to run the real OpenID provider (npm oidc-provider)")


@dataclass
class World:
    issuer: str
    app_url: str
    settings: Settings
    provider_key: RSAKey
    provider_log: Path

    @property
    def redirect_uri(self) -> str:
        return self.app_url + "/auth/oidc/callback"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _wait_http(url: str, what: str, log: Path | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    detail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not answer at {url}\n{detail}")


def _ensure_provider_installed() -> None:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(["bash", str(ROOT / "scripts" / "oidc-deps.sh")], check=True, timeout=300)
    assert (OIDC_DIR / "node_modules" / "oidc-provider").is_dir(), "npm could not install tests/oidc"


def _seed_staff(settings: Settings) -> None:
    from sqlmodel import Session

    from models.db import get_engine
    from models.tables import StaffRow

    now = datetime.now(UTC)
    with Session(get_engine(settings.db_url)) as session:
        for staff_id, roles, active in (("anna", ["coordinator"], True), ("mia", ["manager"], True),
                                        ("retired", ["coordinator"], False)):
            session.add(StaffRow(id=staff_id, name=staff_id.title(), discipline="social_worker",
                                 department="children_disability", roles=roles, active=active,
                                 created_at=now))
        session.commit()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import uvicorn

    from api.main import create_app

    _ensure_provider_installed()
    tmp = Path(tmp_path_factory.mktemp("oidc"))
    provider_port, app_port = free_port(), free_port()
    issuer, app_url = f"http://127.0.0.1:{provider_port}", f"http://127.0.0.1:{app_port}"

    key = RSAKey.generate_key(2048, parameters={"kid": KID, "alg": "RS256", "use": "sig"}, private=True)
    jwks_file = tmp / "provider-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    jwks_file.chmod(0o600)
    log_path = tmp / "provider.log"
    env = dict(os.environ, OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
               OIDC_REDIRECT_URI=app_url + "/auth/oidc/callback", OIDC_AUDIENCE=AUDIENCE,
               OIDC_OTHER_AUDIENCE=OTHER_AUDIENCE, OIDC_ACCOUNTS="anna,mia,ghost,retired",
               OIDC_PASSWORD=PASSWORD, OIDC_JWKS_FILE=str(jwks_file))
    with open(log_path, "ab") as log:
        provider = spawn([NODE, str(OIDC_DIR / "provider.mjs"), str(provider_port)], cwd=OIDC_DIR,
                         env=env, stdout=log, stderr=log)
    server = thread = None
    try:
        _wait_http(issuer + "/.well-known/openid-configuration", "the OpenID provider", log_path)
        settings = Settings(
            ONEFAMILY_DATA_DIR=str(tmp / "data"), TEMPORAL_ADDRESS="127.0.0.1:1",
            ONEFAMILY_TEMPORAL_CONNECT_WAIT="0", ONEFAMILY_STUCK_INDEX_SECONDS="0",
            ONEFAMILY_AUTH="oidc", ONEFAMILY_OIDC_ISSUER=issuer, ONEFAMILY_OIDC_CLIENT_ID=CLIENT_ID,
            ONEFAMILY_OIDC_CLIENT_SECRET=CLIENT_SECRET, ONEFAMILY_OIDC_AUDIENCE=AUDIENCE,
            ONEFAMILY_OIDC_SCOPES="openid profile",
        )
        app = create_app(settings)
        if not any(getattr(r, "path", None) == "/auth/oidc/callback" for r in app.routes):
            from api.oidc import router  # until api/main.py includes it

            app.include_router(router)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=app_port, log_level="warning",
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, name="oidc-test-app", daemon=True)
        thread.start()
        _wait_http(app_url + "/healthz", "the app")
        _seed_staff(settings)
        yield World(issuer, app_url, settings, key, log_path)
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(10)
        stop_process(provider)


# ---------------------------------------------------------------- helpers


def _follow(client: httpx.Client, response: httpx.Response, stop: str | None = None,
            hops: int = 15) -> httpx.Response:
    """Follows redirects across the app and the provider (the cookie jar is shared); stops on a
    page, or before requesting a URL that starts with `stop`."""
    for _ in range(hops):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        target = urljoin(str(response.url), response.headers["location"])
        if stop and target.startswith(stop):
            return response
        response = client.get(target)
    raise AssertionError("too many redirects")


def _sign_in_at_provider(client: httpx.Client, page: httpx.Response, login: str,
                         password: str = PASSWORD, stop: str | None = None) -> httpx.Response:
    """Submits the provider's login form on `page`; follows on."""
    assert page.status_code == 200 and 'name="login"' in page.text, page.text[:500]
    action = re.search(r'action="([^"]+)"', page.text).group(1)
    answer = client.post(urljoin(str(page.url), action), data={"prompt": "login", "login": login,
                                                               "password": password})
    return _follow(client, answer, stop)


def _app_login(world: World, client: httpx.Client, login: str, next: str = "/api/v1/auth/session",
               stop_at_callback: bool = False) -> httpx.Response:
    """The browser flow without a browser: the app → provider login → callback → `next`."""
    start = client.get(world.app_url + "/auth/oidc/login", params={"next": next})
    page = _follow(client, start)
    stop = world.redirect_uri if stop_at_callback else None
    return _sign_in_at_provider(client, page, login, stop=stop)


def _provider_tokens(world: World, login: str, resource: str | None = None) -> dict:
    """A code flow straight with the provider (our own PKCE): its token response for `login`."""
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": world.redirect_uri,
              "scope": "openid profile api", "state": secrets.token_urlsafe(8),
              "nonce": secrets.token_urlsafe(8), "code_challenge_method": "S256",
              "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest())}
    if resource:
        params["resource"] = resource
    with httpx.Client(timeout=10) as client:
        page = _follow(client, client.get(world.issuer + "/auth?" + urlencode(params)))
        back = _sign_in_at_provider(client, page, login, stop=world.redirect_uri)
        query = parse_qs(urlparse(back.headers["location"]).query)
        assert query["state"] == [params["state"]]
        data = {"grant_type": "authorization_code", "code": query["code"][0],
                "redirect_uri": world.redirect_uri, "code_verifier": verifier}
        if resource:
            data["resource"] = resource
        answer = client.post(world.issuer + "/token", data=data, auth=(CLIENT_ID, CLIENT_SECRET))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _craft(world: World, key: RSAKey | None = None, header: dict | None = None, **overrides) -> str:
    """A token like the provider's access tokens for anna, signed with `key` (default: the
    provider's own key), with some claims changed (None removes a claim)."""
    now = int(time.time())
    claims = {"iss": world.issuer, "aud": AUDIENCE, "sub": "anna", "preferred_username": "anna",
              "client_id": CLIENT_ID, "scope": "api", "iat": now, "exp": now + 300,
              "jti": secrets.token_urlsafe(8)}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    key = key or world.provider_key
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": key.kid, **(header or {})}, claims, key)


def _verifier(world: World, **changes: str):
    """A fresh verifier (empty caches) for the app's settings with `changes` (field names)."""
    from api.oidc import OidcVerifier

    return OidcVerifier(world.settings.model_copy(update=changes))


def _assert_refused(verifier, token: str, reason: str) -> None:
    from api.oidc import OidcError

    with pytest.raises(OidcError) as refused:
        verifier.verify_access_token(token)
    assert reason in refused.value.message, refused.value.message


def _has_auth_middleware() -> bool:
    return (ROOT / "api" / "auth.py").exists()


# ---------------------------------------------------------------- the browser


def test_a_browser_signs_in_through_the_provider_with_code_pkce_state_and_nonce(world: World) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing (Debian package `chromium`; `make sysdeps`)"
    authorize: list[dict[str, list[str]]] = []
    callbacks: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()

            def only_loopback(route) -> None:  # nothing from a CDN or anywhere else
                if urlparse(route.request.url).hostname == "127.0.0.1":
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", only_loopback)
            page = context.new_page()
            page.set_default_timeout(15_000)

            def seen(request) -> None:
                if request.url.startswith(world.issuer + "/auth?"):
                    authorize.append(parse_qs(urlparse(request.url).query))
                if request.url.startswith(world.redirect_uri):
                    callbacks.append(request.url)

            page.on("request", seen)
            page.goto(world.app_url + "/auth/oidc/login?next=/api/v1/auth/session")
            assert page.url.startswith(world.issuer + "/interaction/"), page.url
            page.fill("#login", "anna")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_url(world.app_url + "/api/v1/auth/session")

            # What the app asked the provider for.
            assert len(authorize) == 1, authorize
            query = authorize[0]
            assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
            assert query["code_challenge_method"] == ["S256"]
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"][0])
            assert len(query["state"][0]) >= 20 and len(query["nonce"][0]) >= 20
            assert query["redirect_uri"] == [world.redirect_uri]
            assert set(query["scope"][0].split()) >= {"openid"}

            # Signed in on the app: a staff session cookie, the login cookie gone.
            cookies = {c["name"]: c for c in context.cookies(world.app_url)}
            session_cookie = cookies["onefamily_session"]
            assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
            assert "onefamily_oidc_login" not in cookies
            if _has_auth_middleware():
                answer = json.loads(page.inner_text("body"))
                assert answer["principal"]["kind"] == "staff" and answer["principal"]["id"] == "anna"
                assert answer["csrf_token"]

            # The callback cannot be replayed: the code and the login cookie are used up.
            assert len(callbacks) == 1
            replay = page.goto(callbacks[0])
            assert replay.status == 400
            assert "sign-in" in page.inner_text("body").lower()
        finally:
            browser.close()
    assert outside == [], f"the pages loaded something outside 127.0.0.1: {outside}"


# ---------------------------------------------------------------- the login, refused


@pytest.mark.parametrize("login", ["ghost", "retired"])
def test_someone_the_staff_directory_does_not_know_or_no_longer_gets_a_403_page(
        world: World, login: str) -> None:
    with httpx.Client(timeout=10) as client:
        answer = _app_login(world, client, login)
        assert answer.status_code == 403, answer.text[:500]
        assert "not an active member of OneFamily" in answer.text
        assert "onefamily_session" not in client.cookies


def test_next_accepts_only_relative_paths(world: World) -> None:
    for target in ("//evil.example/x", "http://evil.example/", "/\\evil.example", "https:evil"):
        with httpx.Client(timeout=10) as client:
            callback = _app_login(world, client, "anna", next=target, stop_at_callback=True)
            assert callback.headers["location"].startswith(world.redirect_uri)
            landed = client.get(callback.headers["location"])
            assert landed.status_code == 303 and landed.headers["location"] == "/", target
    with httpx.Client(timeout=10) as client:
        callback = _app_login(world, client, "anna", next="/cases?stage=active", stop_at_callback=True)
        landed = client.get(callback.headers["location"])
        assert landed.headers["location"] == "/cases?stage=active"


def test_a_forged_state_or_a_missing_login_cookie_is_refused(world: World) -> None:
    with httpx.Client(timeout=10) as client:
        callback = _app_login(world, client, "anna", stop_at_callback=True)
        url = callback.headers["location"]
        forged = re.sub(r"state=[^&]+", "state=forged", url)
        answer = client.get(forged)
        assert answer.status_code == 400 and "(state)" in answer.text
        assert "onefamily_session" not in client.cookies
    with httpx.Client(timeout=10) as stranger:  # a callback URL opened in another browser
        answer = stranger.get(url)
        assert answer.status_code == 400 and "another browser" in answer.text


def test_an_error_answer_from_the_provider_is_a_page_not_a_500(world: World) -> None:
    with httpx.Client(timeout=10) as client:
        start = client.get(world.app_url + "/auth/oidc/login")
        state = parse_qs(urlparse(start.headers["location"]).query)["state"][0]
        answer = client.get(world.redirect_uri, params={"state": state, "error": "access_denied"})
        assert answer.status_code == 401 and "access_denied" in answer.text


# ---------------------------------------------------------------- bearer tokens


def test_the_verifier_accepts_the_providers_access_token_and_refuses_the_rest(world: World) -> None:
    verifier = _verifier(world)
    tokens = _provider_tokens(world, "anna")
    assert verifier.verify_access_token(tokens["access_token"]) == "anna"

    other = _provider_tokens(world, "anna", resource=OTHER_AUDIENCE)["access_token"]
    _assert_refused(verifier, other, "another service (audience)")
    now = int(time.time())
    _assert_refused(verifier, _craft(world, exp=now - 120, iat=now - 420), "expired")
    assert verifier.verify_access_token(_craft(world, exp=now - 5)) == "anna"  # within the leeway
    _assert_refused(verifier, _craft(world, exp=None), "exp")
    _assert_refused(verifier, _craft(world, iss="http://127.0.0.1:1"), "another identity provider")
    _assert_refused(verifier, _craft(world, preferred_username=None), "does not name a staff member")

    stranger = RSAKey.generate_key(2048, parameters={"kid": "unknown-key"}, private=True)
    _assert_refused(verifier, _craft(world, stranger), "does not publish")
    impostor = RSAKey.generate_key(2048, parameters={"kid": KID}, private=True)  # the provider's kid
    _assert_refused(verifier, _craft(world, impostor), "signature does not verify")
    good = tokens["access_token"]
    head, body, signature = good.split(".")
    other_body = _b64url(json.dumps({**json.loads(base64.urlsafe_b64decode(body + "==")),
                                     "preferred_username": "mia"}).encode())
    _assert_refused(verifier, f"{head}.{other_body}.{signature}", "signature does not verify")
    unsigned = _b64url(b'{"alg":"none","typ":"at+jwt"}') + "." + body + "."
    _assert_refused(verifier, unsigned, "algorithm is not accepted")
    _assert_refused(verifier, "not a token", "not a signed JWT")
    _assert_refused(verifier, "a" * 20_000, "too long")

    # A client-credentials token names no person.
    machine = httpx.post(world.issuer + "/token", data={"grant_type": "client_credentials", "scope": "api"},
                         auth=(CLIENT_ID, CLIENT_SECRET))
    assert machine.status_code == 200, machine.text
    _assert_refused(verifier, machine.json()["access_token"], "does not name a staff member")

    # With the default audience (the client id), the provider's ID token still is no access token.
    by_client_id = _verifier(world, oidc_audience=CLIENT_ID)
    _assert_refused(by_client_id, tokens["id_token"], "ID token")


def test_an_unknown_key_fetches_the_jwks_again_at_most_once_a_minute(world: World) -> None:
    from api.oidc import OidcVerifier

    fetched: list[str] = []
    http = httpx.Client(timeout=5, event_hooks={"request": [lambda r: fetched.append(r.url.path)]})
    verifier = OidcVerifier(world.settings, http=http)
    assert verifier.verify_access_token(_craft(world)) == "anna"
    assert fetched == ["/.well-known/openid-configuration", "/jwks"]
    assert verifier.verify_access_token(_craft(world)) == "anna"  # cached
    assert len(fetched) == 2
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rotated-later"}, private=True)
    verifier._keys_tried -= 61  # a minute after the first fetch
    for _ in range(3):
        _assert_refused(verifier, _craft(world, stranger), "does not publish")
    assert fetched == ["/.well-known/openid-configuration", "/jwks", "/jwks"]


def test_the_api_takes_the_providers_access_token_as_bearer(world: World) -> None:
    if not _has_auth_middleware():
        pytest.skip("api/auth.py (the auth middleware) is not there yet")
    api = world.app_url + "/api/v1"
    token = _provider_tokens(world, "mia")["access_token"]
    answer = httpx.get(api + "/auth/session", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["principal"]["id"] == "mia"
    assert httpx.get(api + "/staff", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    now = int(time.time())
    refused = {
        "wrong audience": _provider_tokens(world, "anna", resource=OTHER_AUDIENCE)["access_token"],
        "expired": _craft(world, exp=now - 120, iat=now - 420),
        "unknown key": _craft(world, RSAKey.generate_key(2048, parameters={"kid": "nope"}, private=True)),
        "not in the directory": _provider_tokens(world, "ghost")["access_token"],
        "inactive": _provider_tokens(world, "retired")["access_token"],
        "garbage": "eyJhbGciOi.x.y",
    }
    for why, bad in refused.items():
        answer = httpx.get(api + "/auth/session", headers={"Authorization": f"Bearer {bad}"})
        assert answer.status_code == 401, (why, answer.status_code, answer.text)
        assert answer.json()["detail"], why
