"""The projection activity: the workflow's safety net for the read model (DESIGN §4). The
row-writing itself (`models.projection`) is shared with the API, which writes every command's
answer at once, and with `rebuild.py`."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from models.case import CaseState
from models.projection import write_case


class ProjectionActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="project_case")
    def project_case(self, state: CaseState) -> bool:
        with Session(self.engine) as session:
            written = write_case(session, state, datetime.now(UTC))
            session.commit()
        return written
