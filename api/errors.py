"""Temporal outcomes -> HTTP answers a coordinator understands. Never a 500 for bad input."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body', 'query' or 'path', then the field.")
    msg: str


class ErrorBody(BaseModel):
    """Every error answer of the API, whatever its status (DESIGN §5): one readable sentence.
    Only a 422 for a request that does not fit the schema adds `errors[]`, one per field."""

    detail: str = Field(description="What went wrong, in a sentence a coordinator understands.")
    errors: list[FieldError] | None = Field(None, description="422 only: the fields at fault.")


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
        return HTTPException(503, "The case engine is not reachable, so the command has most likely "
                             f"not been applied. Try again shortly; {SAFE_RETRY}", headers=RETRY_AFTER)
    return HTTPException(503, "The case engine could not take the command, so it has not been "
                         f"applied. Try again shortly; {SAFE_RETRY}", headers=RETRY_AFTER)


# Every command's deadline (ONEFAMILY_COMMAND_TIMEOUT, docs/operations.md). The sentence says
# whether the command may still be applied: an Update the API stopped waiting for stays with
# the case engine and is applied when a worker takes it up; its Idempotency-Key is its update
# id, so a retry with the same key joins it (or gets its answer) instead of applying it again.
RETRY_AFTER = {"Retry-After": "5"}
SAFE_RETRY = "a retry with the same Idempotency-Key is safe: it is applied only once."
NO_KEY = (" This command was sent without an Idempotency-Key: look at the case before you send it "
          "again, or it may be applied twice.")


def _seconds(value: float) -> str:
    return f"{value:g} s"


def command_timed_out(seconds: float, *, sent: bool, keyed: bool) -> HTTPException:
    """No answer within the deadline. `sent`: the case engine may have the command."""
    if not sent:
        return HTTPException(503, (
            f"The case is busy: this command waited {_seconds(seconds)} for its turn and was not "
            "sent, so it has not been applied and will not be. Try again shortly; a retry is safe."
        ), headers=RETRY_AFTER)
    return HTTPException(503, (
        f"The case engine did not answer within {_seconds(seconds)} (no case worker may be "
        "running, or the case is busy). The command may still be applied later, when a worker "
        f"takes it up; {SAFE_RETRY} The retry gets the command's answer." + ("" if keyed else NO_KEY)
    ), headers=RETRY_AFTER)


def registration_timed_out(seconds: float, *, keyed: bool) -> HTTPException:
    """`POST /cases`: the start of the case's workflow was not confirmed in time."""
    tail = "" if keyed else (
        " This referral was sent without an Idempotency-Key: look for the family's case before "
        "you register it again, or it may be registered twice.")
    return HTTPException(503, (
        f"The case engine did not confirm the new case within {_seconds(seconds)}. The case may "
        "still have been created; registering it again with the same Idempotency-Key is safe: "
        "the key names the same case." + tail
    ), headers=RETRY_AFTER)


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}


def _json_type(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    readable = "; ".join(f"{_where(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:10])
    detail = f"The request is not valid: {readable.rstrip('.')}."
    if not _json_type(request) and any(
            tuple(e.get("loc", ())) == ("body",) and e.get("type") in NOT_AN_OBJECT for e in errors):
        # A form or plain text where a JSON object belongs: say what to send instead.
        detail = "The request body must be a JSON object, sent with Content-Type: application/json."
    elif any(e.get("type") == "json_invalid" for e in errors):
        detail = f"The request body is not valid JSON (at character {errors[0]['loc'][-1]})."
    return JSONResponse(
        status_code=422,
        content={
            "detail": detail,
            "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors],
        },
    )


# FastAPI answers 400 when it cannot even read a body (its JSON reader raises something other
# than a JSONDecodeError): bytes that are not UTF-8, JSON nested too deeply to parse. The
# contract says 422 for a malformed body, whatever the reason it is malformed.
FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"


def _unreadable(cause: BaseException | None) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return ("The request body is not valid text: JSON must be encoded as UTF-8 "
                f"(byte {cause.start} is not).")
    if isinstance(cause, RecursionError):
        return "The request body is nested too deeply to be read as JSON."
    return "The request body could not be read as JSON."


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path. Starlette's own 405 names only the methods
    of the first route that matched the path, and GET and POST of one path are two routes."""
    methods = []
    for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return ", ".join(methods)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == FASTAPI_UNREADABLE_BODY:
        return JSONResponse(status_code=422, content={"detail": _unreadable(exc.__cause__)})
    if exc.status_code == 405:
        allow = allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        return JSONResponse(status_code=405, headers={"Allow": allow}, content={
            "detail": f"This address does not take {request.method}; it takes {allow}."})
    return await http_exception_handler(request, exc)
