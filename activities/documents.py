"""Document rendering: jinja2 -> HTML -> PDF (WeasyPrint), stored and versioned.

`render_document(DocumentRequest) -> DocumentRef` is idempotent:
- the content hash is the SHA-256 of the canonical input (kind, version, language, context),
  so a retried activity, a restarted worker or a replayed workflow that asks for the same
  version with the same content gets the stored document back (nothing re-rendered);
- a version is immutable: the same (case, kind, version, language) with a different content
  hash is refused with a non-retryable `ApplicationError` of type `DocumentVersionConflict`;
  render a new version instead.

The context comes from `activities.document_context` (pure, importable by the workflow).
Staff ids in it are printed as names from the staff directory at render time.

WeasyPrint needs Pango at the system level (Debian: libpango-1.0-0 libpangoft2-1.0-0) and a
font (fonts-dejavu-core); it is imported lazily so the rest of the worker runs without it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from jinja2 import TemplateError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import rendering
from activities.document_context import (  # noqa: F401 - re-exported for callers
    NoSuchContent,
    agenda_context,
    document_context,
    monthly_report_context,
)
from activities.rendering import TEMPLATES, render_document_html
from models.messaging import DocumentKind, DocumentRef, DocumentRequest
from models.tables import StaffRow
from models.tables_outbox import DocumentRow

CONFLICT = "DocumentVersionConflict"


def content_hash(req: DocumentRequest) -> str:
    canonical = json.dumps(
        {"kind": req.kind.value, "version": req.version, "language": req.language,
         "context": req.context},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def html_to_pdf(html: str) -> bytes:
    """Tagged PDF/A-3a + PDF/UA-1 (activities.rendering.html_to_pdf)."""
    return rendering.html_to_pdf(html, TEMPLATES / "documents")


def _ref(row: DocumentRow) -> DocumentRef:
    return DocumentRef(id=row.id, case_id=row.case_id, kind=DocumentKind(row.kind),
                       version=row.version, language=row.language,
                       content_hash=row.content_hash, pdf_bytes=len(row.pdf))


def _existing(session: Session, req: DocumentRequest) -> DocumentRow | None:
    return session.exec(select(DocumentRow).where(
        DocumentRow.case_id == req.case_id, DocumentRow.kind == req.kind.value,
        DocumentRow.version == req.version, DocumentRow.language == req.language,
    )).first()


def _check_same(row: DocumentRow, digest: str, req: DocumentRequest) -> DocumentRef:
    if row.content_hash != digest:
        raise ApplicationError(
            f"{req.kind.value} version {req.version} ({req.language}) of {req.case_id} already "
            "exists with different content; versions are immutable, render a new version.",
            type=CONFLICT, non_retryable=True,
        )
    return _ref(row)


class DocumentActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _staff_names(self, session: Session, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = session.exec(select(StaffRow).where(StaffRow.id.in_(ids))).all()
        return {r.id: r.name for r in rows}

    def render(self, req: DocumentRequest) -> tuple[DocumentRef, bool]:
        """Render and store; returns (ref, created). Usable without Temporal."""
        digest = content_hash(req)
        with Session(self.engine) as session:
            row = _existing(session, req)
            if row is not None:
                return _check_same(row, digest, req), False
            names = self._staff_names(session, list(req.context.get("staff_ids") or []))
        variables = {**req.context, "kind": req.kind.value, "version": req.version,
                     "staff_names": names}
        try:
            html = render_document_html(req.kind.value, req.language, variables)
        except TemplateError as error:  # a template bug or a context without a needed field
            raise ApplicationError(
                f"Template {req.kind.value} could not be rendered: {type(error).__name__}: "
                f"{getattr(error, 'message', '')}"[:300],
                type="DocumentTemplateError", non_retryable=True,
            ) from None
        pdf = html_to_pdf(html)
        row = DocumentRow(
            id=str(uuid.uuid4()), case_id=req.case_id, kind=req.kind.value, version=req.version,
            language=req.language, content_hash=digest, html=html, pdf=pdf,
            created_at=datetime.now(UTC), created_by=req.created_by,
        )
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # a concurrent attempt stored it first
                session.rollback()
                stored = _existing(session, req)
                if stored is None:
                    raise
                return _check_same(stored, digest, req), False
            session.refresh(row)
            return _ref(row), True

    @activity.defn(name="render_document")
    def render_document(self, req: DocumentRequest) -> DocumentRef:
        return self.render(req)[0]
