"""Payload encryption (workflows/codec.py) and the codec server (api/codec.py), DESIGN §7/§8."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from sqlmodel import Session
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api import codec as codec_api
from domain.lifecycle import new_case
from domain.policy import DK
from models.case import Actor, CaseAnswer, CaseCreate
from models.commands import CaseWorkflowInput, CommandInput
from models.db import get_engine
from models.projection import write_case
from models.tables import StaffRow
from settings import Settings
from tests.apps import router_client
from tests.conftest import running_worker
from tests.factories import case_create_body, ctx
from workflows.case import FamilyCaseWorkflow
from workflows.codec import (
    COMPRESSION_META,
    ENCODING,
    ENV_KEY,
    ENV_KEY_ID,
    ENV_PREVIOUS,
    KEY_FILE,
    KEY_ID_META,
    PYDANTIC,
    EncryptionCodec,
    EncryptionKeyError,
    data_converter,
    key_fingerprint,
    load_keys,
    make_codec,
)
from workflows.sealing import SealingInterceptor, seal_keyring

ADMIN = Actor(id="admin", roles=["admin"])
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


# ---------------------------------------------------------------- the codec itself


async def test_round_trip_hides_data_and_metadata() -> None:
    codec = EncryptionCodec("a", {"a": KEY_A})
    originals = [plain('{"family": "Jensen", "diagnoses": ["ADHD"]}'), plain('"x"')]
    encoded = await codec.encode(originals)
    for enc in encoded:
        assert enc.metadata["encoding"] == ENCODING
        assert enc.metadata[KEY_ID_META] == b"a"
        assert b"Jensen" not in enc.SerializeToString() and b"json/plain" not in enc.data
    # A fresh nonce per payload: the same plaintext never encrypts the same way twice.
    assert (await codec.encode(originals[:1]))[0].data != encoded[0].data
    assert await codec.decode(encoded) == originals


async def test_plaintext_payloads_pass_through_decode() -> None:
    # Histories written before encryption was switched on stay readable.
    codec = EncryptionCodec("a", {"a": KEY_A})
    assert await codec.decode([plain("old")]) == [plain("old")]


async def test_key_rotation_encrypts_with_current_and_decrypts_with_all() -> None:
    old = await EncryptionCodec("a", {"a": KEY_A}).encode([plain("Jensen")])
    rotated = EncryptionCodec("b", {"a": KEY_A, "b": KEY_B})
    new = await rotated.encode([plain("Jensen")])
    assert new[0].metadata[KEY_ID_META] == b"b"
    assert await rotated.decode(old + new) == [plain("Jensen")] * 2


async def test_unknown_key_id_and_tampering_are_refused() -> None:
    encoded = await EncryptionCodec("a", {"a": KEY_A}).encode([plain("Jensen")])
    with pytest.raises(EncryptionKeyError, match="key id 'a'.*known: b"):
        await EncryptionCodec("b", {"b": KEY_B}).decode(encoded)
    # Same id, other key material: authentication fails instead of returning garbage.
    with pytest.raises(EncryptionKeyError, match="failed authentication"):
        await EncryptionCodec("a", {"a": KEY_B}).decode(encoded)
    relabelled = Payload()
    relabelled.CopyFrom(encoded[0])
    relabelled.metadata[KEY_ID_META] = b"b"  # the key id is bound as associated data
    with pytest.raises(EncryptionKeyError, match="failed authentication"):
        await EncryptionCodec("b", {"a": KEY_A, "b": KEY_A}).decode([relabelled])


async def test_big_payloads_are_compressed_and_the_mark_is_authenticated() -> None:
    codec = EncryptionCodec("a", {"a": KEY_A})
    state = plain(json.dumps({"history": [{"event": "contact_recorded", "detail": "phone"}] * 200}))
    small = plain('"x"')
    big, tiny = await codec.encode([state, small])
    assert big.metadata[COMPRESSION_META] == b"zlib" and COMPRESSION_META not in tiny.metadata
    assert len(big.data) < len(state.SerializeToString()) / 4
    assert await codec.decode([big, tiny]) == [state, small]
    # Written before compression (no mark): still readable.
    before = Payload()
    before.CopyFrom(tiny)
    assert await codec.decode([before]) == [small]
    # The mark is bound as associated data: dropping or adding it fails authentication.
    for forged, mark in ((big, None), (tiny, b"zlib")):
        changed = Payload()
        changed.CopyFrom(forged)
        if mark is None:
            del changed.metadata[COMPRESSION_META]
        else:
            changed.metadata[COMPRESSION_META] = mark
        with pytest.raises(EncryptionKeyError, match="failed authentication"):
            await codec.decode([changed])
    unknown = Payload()
    unknown.CopyFrom(big)
    unknown.metadata[COMPRESSION_META] = b"lz4"
    with pytest.raises(EncryptionKeyError, match="unknown compression"):
        await codec.decode([unknown])


async def test_decrypt_only_codec_writes_plaintext() -> None:
    codec = EncryptionCodec("a", {"a": KEY_A}, encrypt=False)
    assert await codec.encode([plain("x")]) == [plain("x")]


# ---------------------------------------------------------------- where keys come from


def test_key_file_created_once_with_0600_and_reused(settings: Settings) -> None:
    current, keys = load_keys(settings, {})
    path = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(keys[current]) == 32 and current == key_fingerprint(keys[current])
    assert load_keys(settings, {}) == (current, keys)  # a restart keeps the key


def test_concurrent_first_use_agrees_on_one_key(settings: Settings) -> None:
    # The worker and the API start together on a fresh data dir.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: load_keys(settings, {}), range(16)))
    assert len({r[0] for r in results}) == 1
    assert [p.name for p in settings.data_dir.iterdir() if "encryption" in p.name] == [KEY_FILE]


def test_env_key_with_previous_keys_and_old_key_file(settings: Settings) -> None:
    file_id, file_keys = load_keys(settings, {})  # as after `make run` on this data dir
    env = {
        ENV_KEY: base64.b64encode(KEY_B).decode(),
        ENV_KEY_ID: "2027-01",
        ENV_PREVIOUS: f"2026-01:{base64.b64encode(KEY_A).decode()}",
    }
    current, keys = load_keys(settings, env)
    assert current == "2027-01"
    assert keys == {"2027-01": KEY_B, "2026-01": KEY_A, file_id: file_keys[file_id]}


def test_env_key_alone_creates_no_key_file(settings: Settings) -> None:
    current, keys = load_keys(settings, {ENV_KEY: base64.b64encode(KEY_A).decode()})
    assert keys == {current: KEY_A} and current == key_fingerprint(KEY_A)
    assert not (settings.data_dir / KEY_FILE).exists()


@pytest.mark.parametrize(
    "env",
    [
        {ENV_KEY: "not base64!"},
        {ENV_KEY: base64.b64encode(b"short").decode()},
        {ENV_KEY: base64.b64encode(KEY_A).decode(), ENV_PREVIOUS: "no-colon"},
    ],
)
def test_bad_keys_are_refused_without_echoing_them(settings: Settings, env: dict[str, str]) -> None:
    with pytest.raises(EncryptionKeyError) as error:
        load_keys(settings, env)
    assert env[ENV_KEY] not in str(error.value)


def test_switched_off_keeps_old_data_readable(tmp_path: Path) -> None:
    off = Settings(ONEFAMILY_DATA_DIR=str(tmp_path), ONEFAMILY_ENCRYPT_PAYLOADS="false")
    # Never used before: plain converter, and no key file appears.
    assert data_converter(off) is PYDANTIC
    assert not (tmp_path / KEY_FILE).exists()
    # Used before: old payloads must still decrypt, new ones are written in plaintext.
    load_keys(off, {})
    codec = make_codec(off, {})
    assert codec is not None and not codec.encrypt


# ---------------------------------------------------------------- real Temporal history


async def test_history_is_encrypted_at_rest(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    converter = data_converter(settings)
    # As the API's client: encrypting, and sealing its commands (the workers obey nothing else).
    client = Client(ts_env.client.service_client, namespace="default", data_converter=converter,
                    interceptors=[SealingInterceptor(seal_keyring(settings))])
    case_id = str(uuid.uuid4())
    create = CaseCreate.model_validate(case_create_body())
    async with running_worker(client, settings):
        handle = await client.start_workflow(
            FamilyCaseWorkflow.run,
            CaseWorkflowInput(case_id=case_id, policy=DK, actor=ADMIN, create=create),
            id=f"case-{case_id}",
            task_queue=settings.task_queue,
        )
        state = await handle.execute_update(
            "assign_coordinator",
            CommandInput(actor=ADMIN, body={"coordinator_id": "anna"}),
            result_type=CaseAnswer,
        )
        assert state.family.name == "Family Jensen"  # the codec client reads it back
        assert (await handle.query(FamilyCaseWorkflow.case)).coordinator_id == "anna"

    # The server's copy, fetched without the codec: no names, diagnoses or phone numbers.
    raw = await ts_env.client.get_workflow_handle(handle.id).fetch_history()
    raw_bytes = b"".join(e.SerializeToString() for e in raw.events)
    # (The coordinator's staff id is a search attribute by design: not health data.)
    for secret in (b"Jensen", b"Emil", b"ADHD", b"+4521111111"):
        assert secret not in raw_bytes
    started = raw.events[0].workflow_execution_started_event_attributes.input.payloads
    assert started[0].metadata["encoding"] == ENCODING
    # ...and the plain pydantic converter cannot make sense of it.
    with pytest.raises(KeyError, match="binary/encrypted"):
        await pydantic_data_converter.decode(started, [CaseWorkflowInput])
    # A case left running would stop the shared test server from skipping time.
    await handle.terminate()
    decoded = await converter.decode(started, [CaseWorkflowInput])
    assert decoded[0].create.family.members[0].diagnoses == ["ADHD"]


# ---------------------------------------------------------------- the codec server


UI = "http://127.0.0.1:8233"
CASE_OF_ANNA = "9b1c0000-0000-4000-8000-0000000000a1"
CASE_OF_NOBODY = "9b1c0000-0000-4000-8000-0000000000b2"


class RecordAuditIds:
    """What the audit middleware does first: a list the endpoints add case ids to."""

    def __init__(self, app, seen: list) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["audit_case_ids"] = ids = []
            await self.app(scope, receive, send)
            self.seen.append(ids)
            return
        await self.app(scope, receive, send)


@pytest.fixture
def audited() -> list:
    return []


@pytest.fixture
def http(settings: Settings, audited: list) -> Iterator[TestClient]:
    engine = get_engine(settings.db_url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        for sid, role in (("admin", "admin"), ("maria", "manager"), ("anna", "coordinator")):
            session.add(
                StaffRow(id=sid, name=sid, discipline="x", department="x", roles=[role], created_at=now)
            )
        for case_id, coordinator in ((CASE_OF_ANNA, "anna"), (CASE_OF_NOBODY, "bo")):
            state = new_case(case_id, CaseCreate.model_validate(case_create_body()), ctx(ADMIN))
            state.coordinator_id = coordinator
            write_case(session, state, now)
        session.commit()
    # Seen from 127.0.0.1 (a trusted proxy of trusted-header mode), like the browser running
    # the Temporal UI on this machine.
    client = router_client(engine, settings, codec_api.router)
    client.app.add_middleware(RecordAuditIds, seen=audited)
    with client:
        yield client


def server_codec(settings: Settings) -> EncryptionCodec:
    codec = make_codec(settings)  # the same keys as the endpoint's
    assert codec is not None
    return codec


def body(payloads: list[Payload]) -> dict:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def parse(data: dict) -> list[Payload]:
    return list(json_format.ParseDict(data, Payloads()).payloads)


async def test_codec_endpoint_round_trip_for_an_admin(http: TestClient, settings: Settings) -> None:
    encrypted = await server_codec(settings).encode([plain("Family Jensen")])
    res = http.post("/codec/decode", json=body(encrypted), headers={"X-User": "admin"})
    assert res.status_code == 200, res.text
    assert parse(res.json()) == [plain("Family Jensen")]
    res = http.post("/codec/encode", json=body([plain("x")]), headers={"X-User": "admin"})
    assert res.status_code == 200
    assert parse(res.json())[0].metadata["encoding"] == ENCODING


async def test_the_temporal_ui_origin_on_loopback_is_no_identity(http: TestClient,
                                                                 settings: Settings) -> None:
    """A local process can forge `Origin` and a loopback peer: neither decrypts anything."""
    encrypted = await server_codec(settings).encode([plain("Family Jensen")])
    pre = http.options(
        "/codec/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == UI
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    res = http.post("/codec/decode", json=body(encrypted), headers={"Origin": UI, "X-Namespace": "default"})
    assert res.status_code == 401 and "Jensen" not in res.text
    # The UI signs in like anyone else (here the trusted header of an admin): then it decodes.
    res = http.post("/codec/decode", json=body(encrypted),
                    headers={"Origin": UI, "X-Namespace": "default", "X-User": "admin"})
    assert res.status_code == 200 and res.headers["access-control-allow-origin"] == UI
    assert parse(res.json()) == [plain("Family Jensen")]


def test_codec_endpoint_refusals(http: TestClient, settings: Settings) -> None:
    payload = body([plain("x")])
    assert http.post("/codec/decode", json=payload).status_code == 401
    assert http.post("/codec/decode", json=payload, headers={"X-User": "nobody"}).status_code == 401
    assert http.post("/codec/decode", json=payload, headers={"X-User": "anna"}).status_code == 403
    # A manager reads their unit's cases, not every payload of every case.
    assert http.post("/codec/decode", json=payload, headers={"X-User": "maria"}).status_code == 403
    assert http.post("/codec/encode", json=payload, headers={"X-User": "maria"}).status_code == 403
    # Another website in the same browser: wrong origin, and no CORS headers to read the answer.
    evil = http.post("/codec/decode", json=payload, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 401 and "access-control-allow-origin" not in evil.headers
    # Another machine is not a trusted proxy: its X-User is nobody.
    remote = TestClient(http.app, client=("192.0.2.7", 50000))
    assert remote.post("/codec/decode", json=payload, headers={"X-User": "admin"}).status_code == 401
    # Errors still carry CORS headers so the UI can show them.
    bad = http.post("/codec/decode", json={"payloads": "nope"}, headers={"Origin": UI, "X-User": "admin"})
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == UI


async def test_codec_endpoint_names_an_unknown_key_id(http: TestClient) -> None:
    foreign = await EncryptionCodec("retired-2019", {"retired-2019": KEY_A}).encode([plain("x")])
    res = http.post("/codec/decode", json=body(foreign), headers={"X-User": "admin"})
    assert res.status_code == 400 and "retired-2019" in res.json()["detail"]
    assert base64.b64encode(KEY_A).decode() not in res.text


def named(case_id: str, shape: str) -> Payload:
    value = {"case_id": {"case_id": case_id, "actor": {"id": "anna"}},
             "state": {"id": case_id, "stage": "referred", "version": 3},
             "item": {"actor": {"id": "board"}, "item_id": f"{case_id}-1"}}[shape]
    return plain(json.dumps(value))


async def test_decoded_payloads_naming_a_case_are_audited(http: TestClient, settings: Settings,
                                                          audited: list) -> None:
    other = str(uuid.uuid4())
    payloads = [named(CASE_OF_ANNA, "case_id"), named(CASE_OF_NOBODY, "state"),
                named(other, "item"), plain("not json"), named(CASE_OF_ANNA, "state")]
    encrypted = await server_codec(settings).encode(payloads)
    res = http.post("/codec/decode", json=body(encrypted), headers={"X-User": "admin"})
    assert res.status_code == 200, res.text
    assert audited[-1] == [CASE_OF_ANNA, CASE_OF_NOBODY, other]
    res = http.post("/codec/decode", json=body(await server_codec(settings).encode([plain("x")])),
                    headers={"X-User": "admin"})
    assert res.status_code == 200 and audited[-1] == []


async def test_decoded_payloads_follow_the_read_rule_of_their_case(
        http: TestClient, settings: Settings, audited: list, monkeypatch: pytest.MonkeyPatch) -> None:
    # Should the policy ever let more than admins decrypt, each case still decides.
    monkeypatch.setattr(codec_api, "may_decrypt", lambda actor: True)
    codec = server_codec(settings)
    mine = await codec.encode([named(CASE_OF_ANNA, "case_id")])
    assert http.post("/codec/decode", json=body(mine), headers={"X-User": "anna"}).status_code == 200
    for case_id in (CASE_OF_NOBODY, str(uuid.uuid4())):  # another's case; one nobody knows
        theirs = await codec.encode([named(case_id, "state")])
        res = http.post("/codec/decode", json=body(theirs), headers={"X-User": "anna"})
        assert res.status_code == 403 and "Jensen" not in res.text, res.text
        assert audited[-1] == [case_id]


def test_every_data_converter_shares_one_payload_and_failure_converter(tmp_path: Path) -> None:
    """The SDK builds data converters per activation (context, codec): they must not build a
    pydantic converter each (workflows/codec.py `_OnePerProcess`)."""
    from temporalio.converter import WorkflowSerializationContext

    dc = data_converter(Settings(ONEFAMILY_DATA_DIR=str(tmp_path)))
    context = WorkflowSerializationContext(namespace="default", workflow_id="case-1")
    made = [dc, dataclasses.replace(dc), dc.with_context(context), dataclasses.replace(PYDANTIC)]
    runs = [d._new_payload_converter() for d in made]  # what each workflow run is given
    inner = {id(c._inner_payload_converter) for c in [*runs, *(d.payload_converter for d in made)]}  # type: ignore[attr-defined]
    assert len(inner) == 1 and {id(d.failure_converter) for d in made} == {id(made[0].failure_converter)}
