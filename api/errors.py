"""Temporal outcomes -> HTTP answers a coordinator understands. Never a 500 for bad input."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

STATUS_BY_KIND = {"forbidden": 403, "conflict": 409, "invalid": 422, "not_found": 404}


def update_failed(error: WorkflowUpdateFailedError) -> HTTPException:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in STATUS_BY_KIND:
        return HTTPException(STATUS_BY_KIND[cause.type], cause.message)
    return HTTPException(409, "The case could not take this command right now.")


def rpc_failed(error: RPCError, case_closed: bool) -> HTTPException:
    if error.status == RPCStatusCode.NOT_FOUND:
        if case_closed:
            return HTTPException(409, "The case is closed; a closed case is read-only.")
        return HTTPException(404, "No such case.")
    if error.status == RPCStatusCode.UNAVAILABLE:
        return HTTPException(503, "The case engine is not reachable; try again shortly.")
    return HTTPException(503, "The case engine could not take the command; try again shortly.")


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    readable = "; ".join(f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:10])
    return JSONResponse(
        status_code=422,
        content={
            "detail": f"The request is not valid: {readable}",
            "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors],
        },
    )
