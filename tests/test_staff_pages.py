"""The staff directory page (`/staff`, DESIGN §10), in-process with the real login, sessions and
CSRF (Temporal is not needed): administrators only; adding a staff member through the API's
own function (a refusal keeps what was typed, never the password; without a password the
one-time set-password link is shown once and works); deactivating; a new password link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlmodel import Session

from api.main import create_app
from api.pages import i18n
from models.tables import StaffRow
from tests.test_case_forms import forms_of
from tests.test_identity import ADMIN_PW, make_settings


def en(key: str, **values: object) -> str:
    return str(escape(i18n.translate("en", key, **values)))


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ONEFAMILY_STUCK_INDEX_SECONDS", "0")
    app = create_app(make_settings(tmp_path, ONEFAMILY_ADMIN_PASSWORD=ADMIN_PW))
    with TestClient(app, follow_redirects=False, headers={"Accept-Language": "en"}) as c:
        yield c


def sign_in(client: TestClient, staff_id: str, password: str) -> None:
    client.cookies.clear()
    r = client.post("/login", data={"staff_id": staff_id, "password": password, "next": "/"})
    assert r.status_code == 303, r.text


def add_form(client: TestClient) -> dict:
    r = client.get("/staff")
    assert r.status_code == 200, r.text
    return forms_of(r.text)["form-register_staff"]


def test_admins_add_deactivate_and_make_password_links(client: TestClient) -> None:
    assert client.get("/staff").status_code == 303  # sign in first
    sign_in(client, "admin", ADMIN_PW)
    form = add_form(client)
    assert form["command"] == "register_staff"

    # Refused by the model: what was typed comes back, the password never does.
    r = client.post("/staff", data={**form["fields"], "id": "bad id!", "name": "Karin Lund",
                                    "department": "school", "password": "secret enough password"})
    assert r.status_code == 422
    kept = forms_of(r.text)["form-register_staff"]["fields"]
    assert kept["name"] == "Karin Lund" and kept["department"] == "school" and kept["password"] == ""
    assert "secret enough password" not in r.text
    assert 'id="form-register_staff-id-error"' in r.text and 'id="form-register_staff-roles-error"' in r.text
    assert 'id="form-register_staff-discipline-error"' in r.text

    # With a password: added, and the directory lists her.
    r = client.post("/staff", data={**form["fields"], "id": "karin", "name": "Karin Lund",
                                    "discipline": "school_psychologist", "department": "school",
                                    "roles.0": "coordinator", "roles.1": "team_member",
                                    "password": "karin's long password"})
    assert r.status_code == 303 and r.headers["location"].startswith("/staff?ok=")
    page = client.get("/staff").text
    row = re.search(r'<tr data-staff="karin".*?</tr>', page, re.S).group(0)
    assert "Karin Lund" in row and en("staff.role.coordinator") in row and en("staff.role.team_member") in row
    # Twice: the API's sentence, nothing changed.
    r = client.post("/staff", data={**form["fields"], "id": "karin", "name": "Karin Again",
                                    "discipline": "other", "department": "school", "roles.0": "coordinator"})
    assert r.status_code == 409 and "already registered" in r.text

    # Without a password: the one-time link, shown once, and it works.
    r = client.post("/staff", data={**form["fields"], "id": "pia", "name": "Pia Holm", "discipline": "other",
                                    "department": "adult_services", "roles.2": "manager"})
    assert r.status_code == 201, r.text
    link = re.search(r'id="password-link-url">([^<]+)<', r.text).group(1)
    assert "/set-password?token=" in link
    assert link not in client.get("/staff").text  # shown once
    token = link.split("token=", 1)[1]
    anonymous = TestClient(client.app, follow_redirects=False)
    done = anonymous.post("/set-password", data={"token": token, "password": "pia's long password",
                                                  "repeat": "pia's long password"})
    assert done.status_code == 303

    # Deactivate Karin; a new password link for Pia.
    page = client.get("/staff").text
    forms = forms_of(page)
    deactivate = forms["form-deactivate_staff-karin"]
    r = client.post(deactivate["action"], data=deactivate["fields"])
    assert r.status_code == 303 and "ok=" in r.headers["location"]
    with Session(client.app.state.engine) as session:
        assert session.get(StaffRow, "karin").active is False
    assert "form-deactivate_staff-admin" not in forms  # not oneself
    r = client.post(forms["form-password_link-pia"]["action"], data=forms["form-password_link-pia"]["fields"])
    assert r.status_code == 200 and en("staff.link.heading", name="Pia Holm") in r.text
    assert "/set-password?token=" in r.text

    # No CSRF token: refused.
    assert client.post("/staff/pia/deactivate", data={}).status_code == 403

    # Pia is a manager, not an administrator: no staff page for her.
    sign_in(client, "pia", "pia's long password")
    r = client.get("/staff")
    assert r.status_code == 403 and en("staff.who") in r.text
