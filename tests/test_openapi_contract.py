"""The OpenAPI spec tells the truth (issue 11 point 5, DESIGN §5): every operation documents the
error statuses it can answer with the one error schema the API sends, and real answers of the
whole app (in-process, no case engine) validate against what the spec declares for them.
Also: a body that is not UTF-8, or not JSON, is a 422 with a sentence (never FastAPI's 400)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import jsonschema
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from settings import Settings

TRUSTED = {"ONEFAMILY_AUTH": "trusted-header", "ONEFAMILY_TRUSTED_PROXIES": "127.0.0.1,::1,testclient",
           "ONEFAMILY_ALLOWED_HOSTS": "testserver", "ONEFAMILY_MAX_BODY_BYTES": "16384"}
ADMIN = {"X-User": "admin"}
CASE = "3f2c9a1e-1111-4222-8333-444455556666"
METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The whole app, its case engine unreachable (a command then answers 503)."""
    settings = Settings(ONEFAMILY_DATA_DIR=str(tmp_path_factory.mktemp("openapi") / "data"),
                        TEMPORAL_ADDRESS="127.0.0.1:1", ONEFAMILY_TEMPORAL_CONNECT_WAIT=0, **TRUSTED)
    umask = os.umask(0o022)
    try:
        with TestClient(create_app(settings), follow_redirects=False) as c:
            yield c
    finally:
        os.umask(umask)


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method in METHODS:
                yield path, method, op


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_operation_documents_its_error_statuses_with_the_real_schema(spec: dict) -> None:
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["detail"]["type"] == "string" and error["required"] == ["detail"]
    # FastAPI's own 422 schema (`detail` an array) describes an answer this API never sends.
    text = json.dumps(spec)
    assert "HTTPValidationError" not in text
    names = set(spec["components"]["schemas"])
    assert all(r.removeprefix("#/components/schemas/") in names for r in refs(spec)), "dangling $ref"

    checked = 0
    for path, method, op in operations(spec):
        if not path.startswith("/api/"):
            continue
        checked += 1
        want = {"401", "403", "422", "503"}
        if "{" in path:
            want.add("404")
        if method != "get":
            want.add("413")
        if method != "get" and path.startswith(("/api/v1/cases", "/api/v1/committee")):
            want.add("409")
        have = set(op["responses"])
        assert want <= have, f"{method.upper()} {path} lacks {sorted(want - have)}"
        for code, response in op["responses"].items():
            if int(code) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
                assert response["description"] and response["description"] != "Validation Error"
        assert op["security"], f"{method.upper()} {path} declares no way to prove who you are"
    assert checked >= 50

    commands = spec["paths"]["/api/v1/cases/{case_id}/contacts"]["post"]["responses"]
    assert "Idempotency-Key" in commands["503"]["description"]
    assert "Retry-After" in commands["503"]["headers"]
    tokens = spec["paths"]["/api/v1/auth/tokens"]["post"]["responses"]
    assert "429" in tokens
    schemes = spec["components"]["securitySchemes"]
    assert schemes["trustedHeader"] == {**schemes["trustedHeader"], "type": "apiKey", "in": "header",
                                        "name": "X-User"}
    assert spec["paths"]["/api/v1/family/case"]["get"]["security"] == [{"familySession": []}]


def declared(spec: dict, path: str, method: str, status: int) -> dict:
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, not in the spec"
    return responses[str(status)]["content"]["application/json"]["schema"]


def conforms(spec: dict, path: str, method: str, answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    schema = declared(spec, path, method, status)
    body = answer.json()
    resolver = {"components": spec["components"], **schema}
    jsonschema.validate(body, resolver)
    assert isinstance(body["detail"], str) and body["detail"].endswith((".", ")"))
    return body


def test_real_error_answers_validate_against_the_spec(client: TestClient, spec: dict) -> None:
    contacts = "/api/v1/cases/{case_id}/contacts"
    command = f"/api/v1/cases/{CASE}/contacts"
    conforms(spec, "/api/v1/cases", "get", client.get("/api/v1/cases"), 401)
    conforms(spec, "/api/v1/cases", "get", client.get("/api/v1/cases", headers={"X-User": "ghost"}), 401)
    assert client.get("/api/v1/cases").headers["www-authenticate"] == "Bearer"
    conforms(spec, "/api/v1/documents/{doc_id}", "get",
             client.get("/api/v1/documents/nope", headers=ADMIN), 404)
    json_type = {**ADMIN, "content-type": "application/json"}
    conforms(spec, contacts, "post", client.post(command, content=b"x" * 20000, headers=json_type), 413)
    document = "/api/v1/documents/{doc_id}"
    body = conforms(spec, document, "get",
                    client.get("/api/v1/documents/x", params={"format": "doc"}, headers=ADMIN), 422)
    assert body["errors"][0]["loc"] == ["query", "format"] and "format" in body["detail"]
    conforms(spec, document, "get", client.get("/api/v1/documents/x?format=a%00b", headers=ADMIN), 422)
    # The case engine is down: the command is not applied, and the answer says so.
    body = conforms(spec, contacts, "post",
                    client.post(command, json={"kind": "phone", "at": "2026-11-20T09:00:00Z"},
                                headers=ADMIN), 503)
    assert "not reachable" in body["detail"]
    # A staff member without the role: 403 (only an admin changes the policy).
    staff = {"id": "anna", "name": "Anna Berg", "discipline": "social_worker",
             "department": "children_disability", "roles": ["coordinator"], "email": "anna@example.org"}
    assert client.post("/api/v1/staff", json=staff, headers=ADMIN).status_code in (201, 409)
    conforms(spec, "/api/v1/staff", "post",
             client.post("/api/v1/staff", json=staff, headers={"X-User": "anna"}), 403)
    conforms(spec, "/api/v1/staff", "post", client.post("/api/v1/staff", json=staff, headers=ADMIN), 409)
    # ?case_id= of a case that does not exist: the 404 the spec declares.
    conforms(spec, "/api/v1/notifications", "get",
             client.get("/api/v1/notifications", params={"case_id": CASE}, headers=ADMIN), 404)
    # A method the path does not take: 405, and `Allow` names every method of the path (GET and
    # POST of /api/v1/cases are two routes; Starlette's own answer named only the first).
    wrong = client.delete("/api/v1/cases", headers=ADMIN)
    assert wrong.status_code == 405 and isinstance(wrong.json()["detail"], str)
    assert wrong.headers["allow"] == "GET, POST"
    month = spec["paths"]["/api/v1/reports/{month}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert re.fullmatch(month, "2026-11") and not re.fullmatch(month, "2026-13")


@pytest.mark.parametrize("path", ["/api/v1/cases", f"/api/v1/cases/{CASE}/contacts"])
def test_a_body_that_is_not_utf8_or_not_json_is_422(client: TestClient, spec: dict, path: str) -> None:
    template = "/api/v1/cases" if path == "/api/v1/cases" else "/api/v1/cases/{case_id}/contacts"
    json_type = {**ADMIN, "content-type": "application/json"}

    latin1 = '{"kind": "phone", "notes": "Blåbær"}'.encode("latin-1")
    body = conforms(spec, template, "post", client.post(path, content=latin1, headers=json_type), 422)
    assert body["detail"] == ("The request body is not valid text: JSON must be encoded as UTF-8 "
                              "(byte 30 is not).")
    assert "Blåbær" not in body["detail"] and "Bl" not in body["detail"]  # no content quoted back

    utf16 = json.dumps({"kind": "phone"}).encode("utf-16")
    assert client.post(path, content=utf16, headers=json_type).status_code == 422

    body = conforms(spec, template, "post", client.post(path, content=b"kind=phone", headers=json_type), 422)
    assert "JSON" in body["detail"]
    deep = b"[" * 6000 + b"]" * 6000  # past the recursion limit of Python's JSON reader
    body = conforms(spec, template, "post", client.post(path, content=deep, headers=json_type), 422)
    assert body["detail"] == "The request body is nested too deeply to be read as JSON."
    # (A form where JSON belongs is a 422 too, once the body is checked against the schema: with
    # the case engine up; tests/test_fuzz_api.py checks it on the real stack.)


def test_free_text_parameters_say_they_hold_no_nul(spec: dict) -> None:
    """The API refuses a NUL in the address (422, api/auth.py); the spec says so, or a fuzzer
    sends one as valid data (schemathesis found it with `reason` of /dashboard/stuck)."""
    def strings(schema: dict) -> list[dict]:
        found = [s for member in schema.get("anyOf", ()) for s in strings(member)]
        return found + ([schema] if schema.get("type") == "string" else [])

    free = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] not in ("path", "query"):
                    continue
                for schema in strings(parameter["schema"]):
                    if not {"enum", "const", "format"} & schema.keys():
                        free.append((method, path, parameter["name"], schema))
    assert any(name == "reason" for _, _, name, _ in free)
    for method, path, name, schema in free:
        pattern = schema.get("pattern")
        assert pattern and re.search(pattern, "a\x00b") is None, (method, path, name)
