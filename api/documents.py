"""Documents: the list of a case's rendered documents, and one document as HTML or PDF.

Need-to-know (DESIGN §9): a case's documents for whoever may read the case
(`domain.access.read_refusal` on the case's facts from the read model). Documents that belong
to no single case (the committee agenda, `committee-<id>`; the municipality's monthly report,
`report-<YYYY-MM>`) follow `domain.access.non_case_refusal`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, select

from api.deps import Caller, get_caller, get_session
from api.scope import load_facts
from domain.access import non_case_refusal, read_refusal
from models.case import Actor
from models.tables_outbox import DocumentRow

router = APIRouter(tags=["documents"])

NON_CASE_PREFIXES = ("committee-", "report-")


def _plain(value: str) -> bool:
    """Ids are short printable strings; anything else cannot name a stored row (and a NUL
    byte would make PostgreSQL fail the query)."""
    return 0 < len(value) <= 200 and value.isprintable()


def check_owner(session: Session, actor: Actor, owner_id: str, what: str = "case") -> None:
    """404 for an unknown case, 403 for a caller without need-to-know (contract order).
    `what` = "documents": the family's consent must cover the case's documents too."""
    if not _plain(owner_id):
        raise HTTPException(404, "No such case.")
    facts = load_facts(session, owner_id)
    if facts is not None:
        refusal = read_refusal(actor, facts, what)
    elif owner_id.startswith(NON_CASE_PREFIXES):
        refusal = non_case_refusal(actor, owner_id)
    else:
        raise HTTPException(404, "No such case.")
    if refusal:
        raise HTTPException(403, refusal)


def _summary(row: DocumentRow) -> dict:
    return {
        "id": row.id,
        "case_id": row.case_id,
        "kind": row.kind,
        "version": row.version,
        "language": row.language,
        "content_hash": row.content_hash,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "url": f"/api/v1/documents/{row.id}",
    }


@router.get("/api/v1/cases/{case_id}/documents")
def list_documents(
    case_id: str,
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    kind: Annotated[str | None, Query(max_length=40)] = None,
) -> dict:
    actor = caller.require()
    check_owner(session, actor, case_id, "documents")
    query = select(DocumentRow).where(DocumentRow.case_id == case_id)
    if kind:
        query = query.where(DocumentRow.kind == kind)
    rows = session.exec(query.order_by(DocumentRow.kind, DocumentRow.version,
                                       DocumentRow.language)).all()
    return {"items": [_summary(r) for r in rows], "total": len(rows)}


@router.get(
    "/api/v1/documents/{doc_id}",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}, "application/pdf": {}},
                     "description": "The document: HTML, or PDF with ?format=pdf or "
                                    "Accept: application/pdf."}},
)
def get_document(
    doc_id: str,
    caller: Caller = Depends(get_caller),
    session: Session = Depends(get_session),
    format: Literal["html", "pdf"] | None = None,  # noqa: A002 - the contract's name
    accept: Annotated[str | None, Header(max_length=1000)] = None,
) -> Response:
    actor = caller.require()
    row = session.get(DocumentRow, doc_id) if _plain(doc_id) else None
    if row is None:
        raise HTTPException(404, "No such document.")
    check_owner(session, actor, row.case_id, "documents")
    headers = {"ETag": f'"{row.content_hash}"', "Cache-Control": "private, no-store"}
    wants_pdf = format == "pdf" or (format is None and "application/pdf" in (accept or "").lower())
    if wants_pdf:
        name = f"{row.kind}-v{row.version}-{row.language}.pdf"
        headers["Content-Disposition"] = f'inline; filename="{name}"'
        return Response(row.pdf, media_type="application/pdf", headers=headers)
    return HTMLResponse(row.html, headers=headers)
