"""The edge of the API (issue 8, point 5): security headers on every answer, the Host
allow-list, an access log without query strings, owner-only files at rest, and bounded fields
(a too large `reason` is refused before it reaches the case, which keeps working)."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from api.hardening import CSP, DOCUMENT_CSP, HardeningMiddleware, allowed_hosts, host_name
from api.main import create_app
from models.case import TEXT_CHARS, CaseCreate, PauseCase
from models.db import migrate, private_data_dir
from settings import Settings
from tests.e2e_stack import Stack
from tests.factories import case_create_body

TRUSTED = {"ONEFAMILY_AUTH": "trusted-header", "ONEFAMILY_TRUSTED_PROXIES": "127.0.0.1,::1,testclient",
           "ONEFAMILY_ALLOWED_HOSTS": "testserver"}
ADMIN = {"X-User": "admin"}
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
           "referrer-policy": "same-origin", "x-frame-options": "DENY"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A usual umask, whatever an earlier test (or app lifespan) left behind; restored after."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The whole app in-process, no Temporal (none of these requests needs the engine)."""
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path_factory.mktemp("hardening") / "data"),
                        TEMPORAL_ADDRESS="127.0.0.1:1", ONEFAMILY_TEMPORAL_CONNECT_WAIT=0, **TRUSTED)
    umask = os.umask(0o022)
    try:
        with TestClient(create_app(settings), follow_redirects=False) as c:
            yield c
    finally:
        os.umask(umask)


def has_headers(r: httpx.Response, csp: str = CSP) -> None:
    for name, value in {**HEADERS, "content-security-policy": csp}.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers)


# ---------------------------------------------------------------- headers


def test_security_headers_on_pages_json_errors_redirects_and_static(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    has_headers(page)

    staff = client.get("/api/v1/staff", headers=ADMIN)
    assert staff.status_code == 200, staff.text
    has_headers(staff)
    assert staff.headers["cache-control"] == "no-store"

    for missing in (client.get("/api/v1/no-such-thing", headers=ADMIN), client.get("/no-such-page")):
        assert missing.status_code == 404
        has_headers(missing)
    assert client.get("/api/v1/no-such-thing", headers=ADMIN).headers["cache-control"] == "no-store"

    redirect = client.get("/")  # not signed in
    assert redirect.status_code in (302, 303, 307) and "/login" in redirect.headers["location"]
    has_headers(redirect)

    unauthenticated = client.get("/api/v1/cases")
    assert unauthenticated.status_code == 401
    has_headers(unauthenticated)

    css = client.get("/static/onefamily.css")
    assert css.status_code == 200
    has_headers(css)
    assert "no-store" not in css.headers.get("cache-control", "")  # static files may be cached


def test_swagger_ui_is_off_and_the_spec_stays(client: TestClient) -> None:
    # Swagger UI and ReDoc load their scripts from a CDN: they cannot work under our CSP.
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "OneFamily"


def test_templates_have_no_inline_script_or_style() -> None:
    # A CSP without 'unsafe-inline' would silently drop them in the browser: a script is a
    # file of static/ loaded with <script src>.
    root = Path(__file__).resolve().parent.parent / "templates"
    templates = [*(root / "dashboard").glob("*.j2"), *(root / "pages").rglob("*.j2")]
    assert len(templates) > 10
    for template in templates:
        if template.name == "report_document.html.j2":
            continue  # a document (served with DOCUMENT_CSP): its print stylesheet is inline
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), (template.name, "inline <script>")
        for needle in ("style=", "<style", " onclick=", " onload=", " onsubmit=", "javascript:"):
            assert needle not in text, (template.name, needle)


def _mini_app(settings: Settings) -> Starlette:
    async def document(_request):
        return HTMLResponse("<html><style>h1{color:red}</style><h1>Plan</h1></html>")

    async def own_policy(_request):
        return PlainTextResponse("x", headers={"Content-Security-Policy": "sandbox",
                                               "Cache-Control": "private, max-age=5"})

    async def boom(_request):
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/api/v1/documents/{doc_id}", document),
                            Route("/reports/{month}/document", document),
                            Route("/api/v1/own", own_policy), Route("/boom", boom)])
    app.add_middleware(HardeningMiddleware, settings=settings)
    return app


def test_documents_keep_their_inline_style_but_no_script_and_routes_may_choose() -> None:
    settings = Settings(ONEFAMILY_ALLOWED_HOSTS="testserver")
    with TestClient(_mini_app(settings), raise_server_exceptions=False) as c:
        for path in ("/api/v1/documents/d1", "/reports/2026-11/document"):
            has_headers(c.get(path), csp=DOCUMENT_CSP)
        assert "script-src" not in DOCUMENT_CSP and "default-src 'none'" in DOCUMENT_CSP
        own = c.get("/api/v1/own")
        assert own.headers["content-security-policy"] == "sandbox"
        assert own.headers["cache-control"] == "private, max-age=5"
        assert own.headers["x-content-type-options"] == "nosniff"
        crash = c.get("/boom")  # an unexpected error: still a JSON sentence with the headers
        assert crash.status_code == 500 and "detail" in crash.json()
        has_headers(crash)


# ---------------------------------------------------------------- Host


def test_a_foreign_host_is_refused_and_loopback_answered(client: TestClient) -> None:
    r = client.get("/healthz", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert r.json() == {"detail": "This server does not answer to the host name 'evil.example'."}
    has_headers(r)
    # DNS rebinding against a command: refused before authentication or the body.
    r = client.post("/api/v1/cases", headers={"Host": "rebind.example:8000", **ADMIN}, json={})
    assert r.status_code == 400 and "rebind.example:8000" in r.json()["detail"]
    detail = client.get("/healthz", headers={"Host": "a" * 5000}).json()["detail"]
    assert len(detail) < 200 and detail.endswith("...'.")
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000", "testserver"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_from_the_settings() -> None:
    settings = Settings(ONEFAMILY_ALLOWED_HOSTS=" OneFamily.Kommune.dk , api:8000,",
                        ONEFAMILY_PUBLIC_URL="https://sag.kommune.dk/onefamily",
                        ONEFAMILY_API_HOST="10.1.2.3")
    assert allowed_hosts(settings) == {"127.0.0.1", "localhost", "::1", "onefamily.kommune.dk", "api",
                                       "sag.kommune.dk", "10.1.2.3"}
    assert allowed_hosts(Settings(ONEFAMILY_API_HOST="0.0.0.0")) == {"127.0.0.1", "localhost", "::1"}
    assert [host_name(h) for h in ("[::1]:80", "::1", "Example.org.", "x:1")] \
        == ["::1", "::1", "example.org", "x"]
    with TestClient(_mini_app(settings), base_url="https://sag.kommune.dk") as c:
        r = c.get("/api/v1/own")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")


# ---------------------------------------------------------------- access log


def test_the_access_log_has_no_query_string(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="onefamily.access"):
        r = client.get("/api/v1/staff?q=Emil+Jensen&stage=referred", headers=ADMIN)
        assert r.status_code == 200, r.text
        client.get("/healthz", headers={"Host": "evil.example"})
    text = [rec.getMessage() for rec in caplog.records if rec.name == "onefamily.access"]
    lines = [json.loads(line) for line in text]
    assert {"method": "GET", "path": "/api/v1/staff", "status": 200}.items() <= lines[0].items()
    assert set(lines[0]) == {"at", "method", "path", "status", "ms"}
    assert lines[1]["status"] == 400
    assert "Emil" not in caplog.text and "q=" not in caplog.text
    assert not any("admin" in line or "evil" in line for line in text)  # no headers either


# ---------------------------------------------------------------- files at rest


def test_a_new_read_model_is_owner_only(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'onefamily.db'}"
    migrate(url)
    assert mode(data) == 0o700
    files = sorted(p.name for p in data.iterdir())
    assert "onefamily.db" in files
    for name in files:  # the db and its -wal/-shm
        assert mode(data / name) == 0o600, name


def test_an_old_data_dir_is_put_right_at_start(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "temporal.db").write_text("x")
    (data / "temporal.db").chmod(0o644)
    (data / "tool").write_text("#!/bin/sh\n")
    (data / "tool").chmod(0o755)
    (data / "sub").mkdir(mode=0o755)
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / "elsewhere").chmod(0o644)
    (data / "link").symlink_to(tmp_path / "elsewhere")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: never ours to close
    try:
        private_data_dir(data)
        assert os.umask(0o022) == 0o077
        assert (mode(data), mode(data / "temporal.db"), mode(data / "tool"), mode(data / "sub")) \
            == (0o700, 0o600, 0o700, 0o700)
        assert mode(tmp_path / "elsewhere") == 0o644  # a symlink's target is not followed
        private_data_dir(shared)
        assert mode(shared) == 0o1777
        private_data_dir(tmp_path / "new", create=True)
        assert mode(tmp_path / "new") == 0o700
    finally:
        os.umask(0o022)


# ---------------------------------------------------------------- bounded fields


def test_limits_hold_for_every_body_model() -> None:
    with pytest.raises(ValidationError) as e:
        PauseCase(reason="x" * (TEXT_CHARS + 1))
    assert e.value.errors()[0]["loc"] == ("reason",)
    body = case_create_body()
    body["family"]["members"][0]["diagnoses"] = ["ADHD"] * 51
    with pytest.raises(ValidationError):
        CaseCreate.model_validate(body)
    body = case_create_body()
    body["family"]["members"][0]["name"] = "E" * 201
    with pytest.raises(ValidationError):
        CaseCreate.model_validate(body)
    CaseCreate.model_validate(case_create_body())  # a normal referral still passes


# ---------------------------------------------------------------- the real stack


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("hardening-e2e")) / "data", auth="trusted-header")
    try:
        await s.start()
        yield s
    finally:
        s.stop()


async def test_a_huge_reason_is_refused_and_the_case_keeps_working(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers=ADMIN, timeout=30) as c:
        r = await c.post("/cases", json=case_create_body(received_at=datetime.now(UTC).isoformat()))
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        too_long = case_create_body()
        too_long["referral"]["reason"] = "x" * 30_000
        r = await c.post("/cases", json=too_long)
        assert r.status_code == 422
        assert "referral.reason: String should have at most 20000 characters" in r.json()["detail"]
        crowd = case_create_body()
        crowd["family"]["members"] = crowd["family"]["members"] * 101  # 202 members
        r = await c.post("/cases", json=crowd)
        assert r.status_code == 422
        assert "family.members: List should have at most 200 items" in r.json()["detail"]
        r = await c.post(f"/cases/{case_id}/pause", json={"reason": "x" * 3_000_000})
        assert r.status_code in (413, 422), r.text
        r = await c.post(f"/cases/{case_id}/pause", json={"reason": "x" * 30_000})
        assert r.status_code == 422
        assert "reason: String should have at most 20000 characters" in r.json()["detail"]
        started = datetime.now(UTC)
        r = await c.post(f"/cases/{case_id}/pause", json={"reason": "The family is away for a month"})
        assert r.status_code == 200, r.text
        assert (datetime.now(UTC) - started).total_seconds() < 10  # not wedged
        assert r.json()["history"][-1]["event"] == "case_paused"
        assert (await c.get("/cases", params={"q": "Emil Jensen"})).status_code == 200


async def test_the_stack_keeps_files_owner_only_and_logs_no_query(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=ADMIN, timeout=30) as c:
        assert (await c.get("/api/v1/cases", params={"q": "Secret Childname"})).status_code == 200
        r = await c.get("/healthz", headers={"Host": "attacker.example"})
        assert r.status_code == 400
    data = stack.data_dir
    assert mode(data) == 0o700
    names = {p.name for p in data.iterdir()}
    assert {"onefamily.db", "temporal.db", "encryption.key"} <= names
    for p in data.iterdir():
        assert not mode(p) & 0o077, (p.name, oct(mode(p)))
    api_log = (data / "api.log").read_text()
    assert "Secret" not in api_log and "q=" not in api_log
    lines = [json.loads(line) for line in api_log.splitlines() if line.startswith('{"at"')]
    assert any(line.get("path") == "/api/v1/cases" and line.get("status") == 200 for line in lines)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package `chromium`)")
async def test_the_pages_break_no_rule_of_the_csp_in_a_browser(stack: Stack) -> None:
    """Chromium reports every inline style or script the policy drops on the console."""
    from playwright.async_api import async_playwright

    from tests.factories import STAFF

    async with httpx.AsyncClient(base_url=stack.base_url + "/api/v1", headers=ADMIN, timeout=30) as c:
        for person in STAFF:
            assert (await c.post("/staff", json=person)).status_code in (201, 409)
        r = await c.post("/cases", json=case_create_body(received_at=datetime.now(UTC).isoformat()))
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        r = await c.post(f"/cases/{case_id}/coordinator", json={"coordinator_id": "anna"})
        assert r.status_code == 200, r.text
    month = datetime.now(UTC).strftime("%Y-%m")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM),
                                          args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(extra_http_headers={"X-User": "mia"})
            complaints: list[str] = []
            page.on("console", lambda m: complaints.append(m.text)
                    if "Content Security Policy" in m.text else None)
            for path in ("/", "/dashboard", "/stuck", "/cases", "/cases/new", f"/cases/{case_id}",
                         "/committee", "/reports", f"/reports/{month}"):
                answer = await page.goto(stack.base_url + path)
                assert answer is not None and answer.status == 200, path
                assert answer.headers["content-security-policy"] == CSP
                # The stylesheet applies: Det Fælles Designsystem's typeface.
                font = await page.eval_on_selector("body", "e => getComputedStyle(e).fontFamily")
                assert "IBM Plex Sans" in font, (path, font)
            bar = await page.goto(stack.base_url + "/dashboard")
            assert bar is not None
            width = await page.eval_on_selector_all(".of-bar > span", "es => es.map(e => e.className)")
            assert width and all(w.startswith("w") for w in width)
            shown = await page.eval_on_selector(".of-bar > span", "e => getComputedStyle(e).width")
            assert shown.endswith("px"), shown
        finally:
            await browser.close()
    assert complaints == []
