"""The pages speak Danish, Swedish and English (issue 9 §3, DESIGN §10).

- Every text key of an area (templates/pages/i18n/<area>.<lang>.json) exists in all three
  languages of that area, and no text is empty.
- Every key a template asks for with `t('…')` (and the pages' code with `translate(…, "…")`)
  exists in English.
- `<html lang>` follows the language form; the choice is remembered for the user (signed out
  and in again, without the cookie: still that language); `Accept-Language` is the first guess.

The app runs in-process (FastAPI's TestClient, local sign-in); Temporal is not needed for
the sign-in page and the read-model pages used here.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.pages.i18n import CATALOGUES, LANGUAGES
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "pages"
PAGE_CODE = ROOT / "api" / "pages"
ADMIN_PW = "i18n admin password"

# `t('key')` / `t("key", n=3)`: a literal key (a key built at run time, `t('lang.' ~ code)`, is
# not a literal and is checked where its parts are listed).
T_CALL = re.compile(r"(?<![\w.])t\(\s*(['\"])([A-Za-z0-9_.\-]+)\1\s*[,)]")
TRANSLATE_CALL = re.compile(r"translate\([^,()]+,\s*(['\"])([A-Za-z0-9_.\-]+)\1\s*[,)]")


def areas() -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(CATALOGUES.glob("*.json")):
        area, _, lang = path.stem.rpartition(".")
        found.setdefault(area, {})[lang] = path
    return found


def load(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not an object of key → text"
    return data


def test_every_area_has_all_three_languages() -> None:
    found = areas()
    assert "common" in found
    missing = {area: sorted(set(LANGUAGES) - set(files)) for area, files in found.items()
               if set(files) != set(LANGUAGES)}
    assert not missing, f"areas without a file for some language: {missing}"
    unknown = {area: sorted(set(files) - set(LANGUAGES)) for area, files in found.items()
               if set(files) - set(LANGUAGES)}
    assert not unknown, f"files of a language the pages do not speak: {unknown}"


@pytest.mark.parametrize("area", sorted(areas()))
def test_an_area_has_the_same_keys_in_every_language_and_no_empty_text(area: str) -> None:
    files = areas()[area]
    texts = {lang: load(path) for lang, path in files.items()}
    english = set(texts.get("en", {}))
    problems: list[str] = []
    for lang, catalogue in texts.items():
        if lang == "en":
            continue
        if english - set(catalogue):
            problems.append(f"{area}.{lang}.json lacks {sorted(english - set(catalogue))}")
        if set(catalogue) - english:
            problems.append(f"{area}.{lang}.json has keys English lacks: {sorted(set(catalogue) - english)}")
    for lang, catalogue in texts.items():
        empty = sorted(k for k, v in catalogue.items() if not isinstance(v, str) or not v.strip())
        if empty:
            problems.append(f"{area}.{lang}.json: empty or not a text: {empty}")
    assert not problems, "\n".join(problems)


def test_a_key_lives_in_one_area_only() -> None:
    """The catalogues are merged: a key in two areas would silently shadow the other."""
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for area, files in areas().items():
        if "en" not in files:
            continue
        for key in load(files["en"]):
            if key in seen:
                clashes.append(f"{key}: {seen[key]} and {area}")
            seen[key] = area
    assert not clashes, "keys in more than one area:\n" + "\n".join(clashes)


def test_placeholders_match_across_languages() -> None:
    """`{name}` in English is `{name}` in Danish and Swedish too (else the text shows a hole
    or the raw braces)."""
    field = re.compile(r"{(\w+)}")
    problems: list[str] = []
    for area, files in areas().items():
        if "en" not in files:
            continue
        english = load(files["en"])
        for lang in ("da", "sv"):
            if lang not in files:
                continue
            for key, text in load(files[lang]).items():
                if key in english and set(field.findall(text)) != set(field.findall(english[key])):
                    problems.append(f"{area}.{lang} {key}: {sorted(field.findall(text))} vs "
                                    f"en {sorted(field.findall(english[key]))}")
    assert not problems, "\n".join(problems)


def used_keys() -> dict[str, set[str]]:
    """key → the files that use it literally."""
    used: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.rglob("*.j2")):
        for match in T_CALL.finditer(path.read_text(encoding="utf-8")):
            used.setdefault(match.group(2), set()).add(str(path.relative_to(ROOT)))
    for path in sorted(PAGE_CODE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (T_CALL, TRANSLATE_CALL):
            for match in pattern.finditer(text):
                used.setdefault(match.group(2), set()).add(str(path.relative_to(ROOT)))
    return used


def test_every_key_the_pages_use_exists_in_english() -> None:
    english: set[str] = set()
    for files in areas().values():
        if "en" in files:
            english |= set(load(files["en"]))
    used = used_keys()
    assert len(used) > 10, "the scan found (almost) no t('…') calls: is the pattern right?"
    missing = {key: sorted(where) for key, where in used.items() if key not in english}
    assert not missing, "keys used but not in any *.en.json:\n" + "\n".join(
        f"  {k}  ({', '.join(w)})" for k, w in sorted(missing.items()))


def test_every_form_of_the_case_page_has_a_name_for_its_link() -> None:
    """The case page's "What you can do now" links read `t('case.command.' ~ name)`, a key
    built at run time: every form the page can show has one (seven showed their raw key)."""
    from domain.workbench import FORM_ORDER

    english: set[str] = set()
    for files in areas().values():
        if "en" in files:
            english |= set(load(files["en"]))
    missing = [name for name in FORM_ORDER if f"case.command.{name}" not in english]
    assert not missing, f"case page forms without a link name: {missing}"


# ---------------------------------------------------------------- the language as a person sees it


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ONEFAMILY_STUCK_INDEX_SECONDS", "0")
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), TEMPORAL_ADDRESS="127.0.0.1:1",
                        ONEFAMILY_ALLOWED_HOSTS="testserver", ONEFAMILY_STUCK_INDEX_SECONDS="0",
                        ONEFAMILY_TEMPORAL_CONNECT_WAIT="0", ONEFAMILY_AUTH="local",
                        ONEFAMILY_ADMIN_PASSWORD=ADMIN_PW)
    application = create_app(settings)
    with TestClient(application, client=("198.51.100.7", 40000)) as client:
        token = client.post("/api/v1/auth/tokens", headers=basic("admin", ADMIN_PW)).json()["token"]
        r = client.post("/api/v1/staff", headers={"Authorization": f"Bearer {token}"}, json={
            "id": "mia", "name": "Mia Lund", "discipline": "manager",
            "department": "children_disability", "roles": ["manager"], "password": "mia's i18n pw 1"})
        assert r.status_code == 201, r.text
    yield application


def browser(app, accept: str = "en") -> TestClient:
    """A fresh browser: no cookies; `Accept-Language` as given."""
    return TestClient(app, client=("198.51.100.7", 40000), headers={"Accept-Language": accept})


def html_lang(html: str) -> str | None:
    match = re.search(r"<html[^>]*\blang=\"([^\"]+)\"", html)
    return match.group(1) if match else None


def sign_in(client: TestClient, staff_id: str = "mia", password: str = "mia's i18n pw 1") -> None:
    r = client.post("/login", data={"staff_id": staff_id, "password": password, "next": "/reports"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


def language_form(html: str) -> tuple[str, dict[str, str], list[str]]:
    """The language switch of a page: its action, its hidden fields, the languages offered."""
    match = re.search(r"<form[^>]*action=\"(/language)\"[^>]*>(.*?)</form>", html, re.S)
    assert match, "the page has no language form (action=/language)"
    body = match.group(2)
    hidden = dict(re.findall(r"<input[^>]*type=\"hidden\"[^>]*name=\"([^\"]+)\"[^>]*value=\"([^\"]*)\"",
                             body))
    select = re.search(r"<select[^>]*name=\"language\"[^>]*>(.*?)</select>", body, re.S)
    assert select, "the language form has no <select name=language>"
    offered = re.findall(r"<option[^>]*value=\"([^\"]+)\"", select.group(1))
    return match.group(1), hidden, offered


def switch(client: TestClient, page: str, language: str) -> str:
    """Choose `language` in the page's language form; returns the page it leads back to."""
    action, hidden, offered = language_form(client.get(page).text)
    assert sorted(offered) == sorted(LANGUAGES)
    r = client.post(action, data={**hidden, "language": language}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def test_accept_language_is_the_first_guess_on_the_login_page(app) -> None:
    for accept, lang in (("sv", "sv"), ("sv-SE,sv;q=0.9,en;q=0.5", "sv"), ("da-DK", "da"),
                         ("en-GB,en;q=0.8", "en"), ("fr, en;q=0.3", "en"), ("fr", "da")):
        with browser(app, accept) as client:
            r = client.get("/login")
            assert r.status_code == 200
            assert html_lang(r.text) == lang, f"Accept-Language {accept!r}: lang {html_lang(r.text)!r}"
            assert r.headers.get("content-language") == lang


def test_the_login_page_switches_language_for_someone_not_signed_in(app) -> None:
    with browser(app, "sv") as client:
        assert html_lang(client.get("/login").text) == "sv"
        back = switch(client, "/login", "en")
        assert back.startswith("/login")
        assert html_lang(client.get("/login").text) == "en"


def test_the_chosen_language_is_remembered_for_the_user(app) -> None:
    with browser(app, "en") as client:
        sign_in(client)
        page = client.get("/reports")
        assert page.status_code == 200 and html_lang(page.text) == "en"
        for language in ("da", "sv", "en", "sv"):
            back = switch(client, "/reports", language)
            assert back == "/reports"
            page = client.get(back)
            assert html_lang(page.text) == language, f"after choosing {language}"
        # Signed out and in again in another browser (no cookie, English asked for): still Swedish.
        csrf = re.search(r"name=\"csrf_token\" value=\"([^\"]+)\"", page.text).group(1)
        assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    with browser(app, "en-GB,en;q=0.9") as other:
        assert html_lang(other.get("/login").text) == "en"  # not signed in: the browser's guess
        sign_in(other)
        assert html_lang(other.get("/reports").text) == "sv", "the choice is the user's, not the cookie's"
        assert html_lang(other.get("/cases").text) == "sv"


def test_an_unknown_language_changes_nothing(app) -> None:
    with browser(app, "da") as client:
        sign_in(client)
        action, hidden, _ = language_form(client.get("/reports").text)
        r = client.post(action, data={**hidden, "language": "de"}, follow_redirects=False)
        assert r.status_code == 303
        assert html_lang(client.get("/reports").text) == "da"
