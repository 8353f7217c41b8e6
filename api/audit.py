"""Audit trail: every read and write of case data through the API (DESIGN §4, §7).

Only who, what path, which case and the answer's status are kept: bodies hold health data.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

from sqlmodel import Session
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from models.tables import AuditRow

AUDITED = re.compile(r"^(/api/v1/(cases|documents|committee|notifications)|/codec/decode)")
CASE_ID = re.compile(r"^/api/v1/cases/([0-9a-fA-F-]{36})")


def _write(engine, row: AuditRow) -> None:
    with Session(engine) as session:
        session.add(row)
        session.commit()


class AuditMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        path = request.url.path
        if AUDITED.match(path):
            match = CASE_ID.match(path)
            row = AuditRow(
                at=datetime.now(UTC),
                actor=(request.headers.get("x-user") or "-")[:64],
                method=request.method,
                path=path,
                case_id=match.group(1) if match else None,
                status=response.status_code,
            )
            await asyncio.to_thread(_write, request.app.state.engine, row)
        return response
