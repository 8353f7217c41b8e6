"""The monthly report pages: managers only, a clear answer for a bad month or no login."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from api.main import create_app
from models.db import get_engine, migrate
from models.tables import StaffRow
from settings import Settings


def test_report_pages_guard_and_render(tmp_path: Path) -> None:
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path / "data"), TEMPORAL_ADDRESS="127.0.0.1:1")
    migrate(settings.db_url)
    with Session(get_engine(settings.db_url)) as session:
        for sid, roles in [("mia", ["manager"]), ("anna", ["coordinator"])]:
            session.add(StaffRow(id=sid, name=sid.title(), discipline="social_worker",
                                 department="children_disability", roles=roles,
                                 created_at=datetime.now(UTC)))
        session.commit()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/reports/2026-11").status_code == 303  # sign in first
        client.post("/login", data={"staff_id": "anna", "next": "/"})
        assert client.get("/reports/2026-11").status_code == 403
        client.post("/login", data={"staff_id": "mia", "next": "/"})
        assert client.get("/reports/2026-13").status_code == 404
        page = client.get("/reports/2026-11")
        assert page.status_code == 200 and "2026" in page.text
        doc = client.get("/reports/2026-11/document")
        assert doc.status_code == 200 and "<html" in doc.text.lower()
