"""The monthly report pages: managers only, a clear answer for a bad month or no login."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from api.credentials import set_password
from api.main import create_app
from models.db import get_engine, migrate
from models.tables import StaffRow
from settings import Settings


def test_report_pages_guard_and_render(tmp_path: Path) -> None:
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), TEMPORAL_ADDRESS="127.0.0.1:1",
                        ONEFAMILY_ALLOWED_HOSTS="testserver", ONEFAMILY_TEMPORAL_CONNECT_WAIT="0")
    migrate(settings.db_url)
    with Session(get_engine(settings.db_url)) as session:
        for sid, roles in [("mia", ["manager"]), ("anna", ["coordinator"])]:
            session.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                                 department="children_disability", roles=roles,
                                 created_at=datetime.now(UTC)))
            set_password(session, sid, f"{sid}'s long password")
        session.commit()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/reports/2026-11").status_code == 303  # sign in first
        client.post("/login", data={"staff_id": "anna", "password": "anna's long password"})
        assert client.get("/reports/2026-11").status_code == 403
        client.post("/login", data={"staff_id": "mia", "password": "mia's long password"})
        assert client.get("/reports/2026-13").status_code == 404
        page = client.get("/reports/2026-11")
        assert page.status_code == 200 and "2026" in page.text
        doc = client.get("/reports/2026-11/document")
        assert doc.status_code == 200 and "<html" in doc.text.lower()
