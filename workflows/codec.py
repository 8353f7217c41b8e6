"""Payload encryption for Temporal history (DESIGN §7 "Privacy", §8 "Payload encryption").

Case state carries names, diagnoses and notes, i.e. personal health data. Every payload our
clients (API, worker) hand to Temporal goes through `EncryptionCodec`: AES-256-GCM over the
whole serialized payload (data *and* metadata, so not even the JSON type hints leak), with the
key id in the clear metadata so that keys can be rotated:

- the *current* key encrypts, every known key decrypts;
- a payload whose key id we don't know is refused with an error naming the id (never a
  silent garbage decrypt);
- payloads that are not encrypted (written before encryption was switched on, or with
  ONEFAMILY_ENCRYPT_PAYLOADS=false) pass through unchanged, so switching on needs no migration.

Where the keys come from (`load_keys`), first match wins for the current key:
1. `ONEFAMILY_ENCRYPTION_KEY` = base64 of 32 random bytes (`ONEFAMILY_ENCRYPTION_KEY_ID`
   optional, default: a fingerprint of the key);
2. otherwise `<data_dir>/encryption.key` (base64 text, mode 0600), created on first use, so
   `make run` needs no setup and a restart keeps the key.
Decrypt-only keys: `ONEFAMILY_ENCRYPTION_PREVIOUS_KEYS` = "id:base64,id:base64", plus the key
file if it exists while an env key is current (e.g. after moving from dev to a managed key).

Search attributes are not codec-encoded; they hold no personal data by design (DESIGN §8).
Keys are never logged or put into exception messages; key ids are not secret.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import os
import secrets
import stat
import threading
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverter, PayloadCodec

from settings import Settings

log = logging.getLogger("onefamily.codec")

ENCODING = b"binary/encrypted"
KEY_ID_META = "encryption-key-id"
CIPHER_META = "encryption-cipher"
CIPHER = b"AES-256-GCM"
# Payloads of at least COMPRESS_FROM bytes are zlib-compressed before encryption when that
# makes them smaller (a case state is ~12-30 KB of JSON, ~4x smaller compressed: less history
# per command in Temporal's database and on the wire; issue 13). The mark is in the clear
# metadata AND in the associated data, so it cannot be flipped without failing authentication.
COMPRESSION_META = "encryption-compression"
ZLIB = b"zlib"
COMPRESS_FROM = 512
ZLIB_LEVEL = 1  # the fastest: ~0.1 ms for a 25 KB state, most of the gain of level 9
KEY_FILE = "encryption.key"
KEY_BYTES = 32
NONCE_BYTES = 12

ENV_KEY = "ONEFAMILY_ENCRYPTION_KEY"
ENV_KEY_ID = "ONEFAMILY_ENCRYPTION_KEY_ID"
ENV_PREVIOUS = "ONEFAMILY_ENCRYPTION_PREVIOUS_KEYS"


class EncryptionKeyError(ValueError):
    """A key is missing, malformed, or does not match the payload."""


class EncryptionCodec(PayloadCodec):
    """With `encrypt=False` it only decrypts: encryption switched off must not make the cases
    already encrypted unreadable."""

    def __init__(self, current_id: str, keys: Mapping[str, bytes], *, encrypt: bool = True) -> None:
        if current_id not in keys:
            raise EncryptionKeyError(f"current key id {current_id!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise EncryptionKeyError(f"key {key_id!r} must be {KEY_BYTES} bytes, got {len(key)}")
        self.current_id = current_id
        self.encrypt = encrypt
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypt:
            return list(payloads)
        cipher = self._ciphers[self.current_id]
        key_id = self.current_id.encode()
        out = []
        for payload in payloads:
            nonce = secrets.token_bytes(NONCE_BYTES)  # random 96-bit nonce: fresh per payload
            plain = payload.SerializeToString()
            metadata = {"encoding": ENCODING, KEY_ID_META: key_id, CIPHER_META: CIPHER}
            # The key id as associated data: a payload can't be relabelled to another key.
            aad = key_id
            if len(plain) >= COMPRESS_FROM:
                packed = zlib.compress(plain, ZLIB_LEVEL)
                if len(packed) < len(plain):
                    plain, aad = packed, _aad(key_id, ZLIB)
                    metadata[COMPRESSION_META] = ZLIB
            sealed = cipher.encrypt(nonce, plain, aad)
            out.append(Payload(metadata=metadata, data=nonce + sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plaintext from before encryption was on: readable as is
        key_id = payload.metadata.get(KEY_ID_META, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise EncryptionKeyError(
                f"payload is encrypted with key id {key_id!r}, which this process does not have "
                f"(known: {', '.join(self.key_ids)}); add it to {ENV_PREVIOUS} to read old data"
            )
        compression = payload.metadata.get(COMPRESSION_META)
        if compression is not None and compression != ZLIB:
            raise EncryptionKeyError(f"payload with key id {key_id!r} has an unknown compression")
        aad = _aad(key_id.encode(), compression) if compression else key_id.encode()
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
        except InvalidTag:
            raise EncryptionKeyError(
                f"payload with key id {key_id!r} failed authentication: wrong key or tampered data"
            ) from None
        if compression:
            plain = zlib.decompress(plain)  # authenticated: only our own encoder wrote it
        return Payload.FromString(plain)


def _aad(key_id: bytes, compression: bytes) -> bytes:
    return key_id + b"\0" + compression


def key_fingerprint(key: bytes) -> str:
    """A stable, non-secret id for a key (one-way, domain-separated hash)."""
    return "k-" + hashlib.sha256(b"onefamily-encryption-key-id\0" + key).hexdigest()[:12]


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(f"{where} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise EncryptionKeyError(f"{where} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode)
    return _decode_key(path.read_text(), str(path))


def _create_key_file(path: Path) -> None:
    """Atomically create the key file unless it exists: the worker and the API start at the
    same moment on a fresh data dir, and both must end up with the *same* key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        else:
            log.info("created a new payload encryption key in %s", path)
    finally:
        tmp.unlink(missing_ok=True)


def load_keys(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, bytes]]:
    """(current key id, {key id: key}) from the environment or the data dir's key file."""
    env = os.environ if environ is None else environ
    keys: dict[str, bytes] = {}
    path = settings.data_dir / KEY_FILE

    if env.get(ENV_KEY):
        key = _decode_key(env[ENV_KEY], ENV_KEY)
        current = env.get(ENV_KEY_ID) or key_fingerprint(key)
        if path.exists():
            old = _read_key_file(path)
            keys[key_fingerprint(old)] = old
    else:
        if not path.exists():
            _create_key_file(path)
        key = _read_key_file(path)
        current = key_fingerprint(key)

    for item in filter(None, (s.strip() for s in env.get(ENV_PREVIOUS, "").split(","))):
        key_id, sep, text = item.partition(":")
        if not sep or not key_id:
            raise EncryptionKeyError(f"{ENV_PREVIOUS} entries must look like 'id:base64key'")
        keys[key_id] = _decode_key(text, f"{ENV_PREVIOUS} entry {key_id!r}")

    keys[current] = key  # set last: the current key always wins an id clash
    return current, keys


def make_codec(settings: Settings, environ: Mapping[str, str] | None = None) -> EncryptionCodec | None:
    """The codec for `settings`; None if encryption is off and there is no key to read old data."""
    env = os.environ if environ is None else environ
    if not settings.encrypt_payloads and not (env.get(ENV_KEY) or (settings.data_dir / KEY_FILE).exists()):
        return None  # don't create a key file nobody asked for
    return EncryptionCodec(*load_keys(settings, env), encrypt=settings.encrypt_payloads)


class _OnePerProcess:
    """A converter class whose every "new" instance is the process's one instance.

    A `DataConverter` builds its payload and failure converters from their classes in
    `__post_init__`, and the SDK's worker builds several data converters per activation (for
    decoding it, for encoding its completion, per serialization context): a new pydantic
    payload converter each time, with its own serializer and TypeAdapter cache (worker profile
    of a no-op Update: ~8 % of its CPU; issue 13). Both converters are stateless but for that
    cache (functools.lru_cache, thread-safe), so one serves every run and every thread."""

    _one = None
    _making = threading.Lock()

    def __new__(cls):
        with cls._making:
            if cls.__dict__.get("_one") is None:
                one = super().__new__(cls)
                super(_OnePerProcess, one).__init__()  # the converter's own, once
                cls._one = one
            return cls._one

    def __init__(self) -> None:
        pass  # made once, in __new__


class SharedPayloadConverter(_OnePerProcess, PydanticPayloadConverter):
    pass


class SharedFailureConverter(_OnePerProcess, DefaultFailureConverter):
    pass


# The SDK's `pydantic_data_converter` with the shared converters.
PYDANTIC = DataConverter(payload_converter_class=SharedPayloadConverter,
                         failure_converter_class=SharedFailureConverter)


def data_converter(settings: Settings) -> DataConverter:
    """The project's converter (pydantic JSON) with payloads encrypted by our codec
    (ONEFAMILY_ENCRYPT_PAYLOADS=false: new payloads in plaintext, old ones still readable)."""
    codec = make_codec(settings)
    if codec is None:
        return PYDANTIC
    return dataclasses.replace(PYDANTIC, payload_codec=codec)
