"""The OpenAPI spec tells the truth (DESIGN §5, issue 11 point 5): every operation documents
the error statuses it can answer, each with the one error body the API really sends
(`api.errors.ErrorBody`: `detail` is always a sentence, a string), and the way a caller proves
who they are in the mode the API runs in.

Done here, centrally, by route kind, rather than in every router, because the statuses come
from layers around the routes as much as from the routes themselves (api/auth.py, api/hardening.py,
api/unavailable.py, api/gateway.py):

| status | which operations | from |
|---|---|---|
| 401 | every `/api/` and `/codec/` operation | no or bad credentials, before the body is read |
| 403 | every `/api/` operation | the access policy; a family session on a staff path; CSRF |
| 404 | a path parameter or an `*_id` query parameter, or the router says so | unknown case, item ... |
| 409 | state-changing operations under cases, committee, staff, family | stage, closed, cap, duplicate |
| 413 | every POST/PUT/PATCH/DELETE | body over ONEFAMILY_MAX_BODY_BYTES, before it is parsed |
| 422 | every operation | malformed input: body not UTF-8, not JSON, not the schema; a NUL in the address |
| 429 | `POST /api/v1/auth/tokens` | too many failed sign-ins |
| 503 | every `/api/` operation | the database or case engine down; a command's deadline (`Retry-After`) |

A router may still declare a status itself (with a description of its own): its description
is kept, its content replaced by the real schema.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import ErrorBody
from api.sessions import COOKIE
from settings import Settings

STATE_CHANGING = {"post", "put", "patch", "delete"}
CONFLICT_PREFIXES = ("/api/v1/cases", "/api/v1/committee", "/api/v1/staff", "/api/v1/family")
COMMAND_PATHS = re.compile(r"^/api/v1/(cases(/\{case_id\}/.+)?|committee/items/.+)$")
TOKENS = "/api/v1/auth/tokens"
# Path parameters a router checks itself, to answer a sentence of its own (422): the spec
# still says what is valid, so a client (and the fuzzer) knows before it asks.
# A month (api/reports.py): 2000-01 ... 2075-12, the years domain/calendar.py has holidays for.
PARAMETER_PATTERNS = {"month": r"^20([0-6][0-9]|7[0-5])-(0[1-9]|1[0-2])$"}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "string"}}}

DESCRIPTIONS = {
    401: "No credentials, or credentials that are not valid (unknown, expired or revoked).",
    403: "Not allowed for this caller (not your case, not your role), or a browser form "
         "without its CSRF token.",
    404: "No such case or resource.",
    409: "Not allowed in the case's current stage, the case is closed, a cap is reached, or "
         "the thing exists already.",
    413: "The request body is larger than ONEFAMILY_MAX_BODY_BYTES.",
    422: "The request is not valid: a body that is not UTF-8, not JSON or not the schema (the "
         "fields are named in `detail` and listed in `errors`), or a bad parameter.",
    429: "Too many failed sign-ins; wait `Retry-After` seconds.",
    503: "The case database or the case engine is not reachable right now; try again after "
         "`Retry-After` seconds. Nothing was applied.",
}
COMMAND_503 = (
    "The case engine is not reachable, or did not answer within the command's deadline "
    "(ONEFAMILY_COMMAND_TIMEOUT). `detail` says whether the command may still be applied; a "
    "retry with the same Idempotency-Key is applied only once.")


def statuses(path: str, method: str, declared: set[int], query: set[str] = frozenset()) -> set[int]:
    """The error statuses one operation can answer."""
    out = {422} | declared
    if any(name.endswith("_id") for name in query):  # ?case_id= of a case that does not exist
        out.add(404)
    if path.startswith(("/api/", "/codec/")):
        out |= {401}
    if path.startswith("/api/"):
        out |= {403, 503}
    if "{" in path:
        out.add(404)
    if method in STATE_CHANGING:
        out.add(413)
        if path.startswith(CONFLICT_PREFIXES):
            out.add(409)
    if method == "post" and path == TOKENS:
        out.add(429)
    return out


def security_schemes(settings: Settings) -> dict[str, dict]:
    """How a caller proves who they are, in the mode this API runs in (DESIGN §9)."""
    schemes: dict[str, dict] = {
        "familySession": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                          "description": "A family member's session from the family portal's sign-in."},
    }
    if settings.auth == "trusted-header":
        schemes["trustedHeader"] = {
            "type": "apiKey", "in": "header", "name": settings.trusted_header,
            "description": "Trusted-header mode: the authenticating proxy sends the staff id."}
    else:
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": (
            "A personal API token (POST /api/v1/auth/tokens)" if settings.auth == "local"
            else "An access token of the municipality's OpenID Connect provider")}
        schemes["session"] = {"type": "apiKey", "in": "cookie", "name": COOKIE,
                              "description": "A browser session from /login (with X-CSRF-Token)."}
    if settings.auth == "local":
        schemes["basic"] = {"type": "http", "scheme": "basic",
                            "description": "Only to create a personal API token."}
    return schemes


def _security(path: str, method: str, schemes: dict[str, dict]) -> list[dict] | None:
    if not path.startswith(("/api/", "/codec/")):
        return None
    if path.startswith("/api/v1/family/"):
        return [{"familySession": []}]
    staff = [{name: []} for name in ("trustedHeader", "bearer", "session") if name in schemes]
    if path == TOKENS and method == "post" and "basic" in schemes:
        staff.append({"basic": []})
    if path == "/api/v1/auth/session":
        staff.append({"familySession": []})
    return staff


def _error_response(code: int, description: str) -> dict:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": ERROR_REF}}}
    if code in (429, 503):
        response["headers"] = RETRY_AFTER
    if code == 401:
        response["headers"] = {"WWW-Authenticate": {"description": "The scheme to use.",
                                                    "schema": {"type": "string"}}}
    return response


NO_NUL = "^[^\\x00]*$"  # the address is refused with a 422 when it holds one (api/auth.py)


def _no_nul(schema: dict) -> None:
    """A free-text parameter says it holds no NUL character, as the API enforces."""
    for member in schema.get("anyOf", ()):
        _no_nul(member)
    if schema.get("type") == "string" and not {"enum", "const", "pattern", "format"} & schema.keys():
        schema["pattern"] = NO_NUL


def document_errors(schema: dict, settings: Settings) -> dict:
    """Rewrite a generated spec in place: error answers, the error schema, security."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, definition in ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}").get("$defs", {}).items():
        schemas[name] = definition
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    body.pop("$defs", None)
    schemas["ErrorBody"] = body
    schemes = security_schemes(settings)
    components["securitySchemes"] = schemes
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "put", "post", "patch", "delete", "head", "options"}:
                continue
            responses = operation.setdefault("responses", {})
            declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
            parameters = operation.get("parameters", [])
            query = {p.get("name", "") for p in parameters if p.get("in") == "query"}
            for parameter in parameters:
                pattern = PARAMETER_PATTERNS.get(parameter.get("name", ""))
                if parameter.get("in") == "path" and pattern:
                    parameter.setdefault("schema", {})["pattern"] = pattern
                elif parameter.get("in") in ("path", "query"):
                    _no_nul(parameter.get("schema", {}))
            for code in sorted(statuses(path, method, declared, query)):
                own = responses.get(str(code), {}).get("description")
                if code == 503 and method in STATE_CHANGING and COMMAND_PATHS.match(path):
                    own = COMMAND_503
                elif code == 422 or own in (None, "Validation Error"):
                    own = DESCRIPTIONS.get(code, own or "Error.")
                responses[str(code)] = _error_response(code, own)
            security = _security(path, method, schemes)
            if security is not None:
                operation["security"] = security
    # FastAPI's own validation schemas describe an answer this API never sends.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install(app: FastAPI, settings: Settings) -> None:
    """`app.openapi()` answers the rewritten spec (built once, on first use)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes, openapi_version=app.openapi_version), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
