"""Sealed read-model columns (DESIGN §9 "Files at rest"; issue 8 point 5).

The read model must not hold names or free text in plaintext. Columns that carry them use the
types of this module:

- `SealedText`, `SealedJSON`, `SealedBytes` encrypt on write with AES-256-GCM and decrypt on
  read. A stored text value is `v1:<key id>:<base64(nonce + ciphertext)>` (`SealedJSON`: that
  string as a JSON string, so the column stays JSON on PostgreSQL; `SealedBytes`:
  `b"v1:<key id>:" + nonce + ciphertext`). The associated data is `v1:<key id>:<purpose>`
  (`purpose` = "table.column"), so a value can neither be relabelled to another key nor moved
  into another column. Any known key decrypts; the current key encrypts.
- Values written before sealing existed (no well-formed `v1:<id>:<base64>`) are returned
  unchanged: existing data dirs keep working without a data migration; every new write is
  sealed, and a row is rewritten sealed the next time it is written (a case: its next
  projected version). A well-formed value with an unknown key id, or one that fails
  authentication, raises `SealedValueError` (never ciphertext passed off as text).
- Sealed columns cannot be compared or sorted in SQL (each write uses a fresh nonce): any SQL
  operator on them other than IS [NOT] NULL raises, instead of silently never matching.

Search and duplicate detection use keyed hashes instead (`name_hashes`, `name_match`,
`person_hashes`): HMAC-SHA256, hex truncated to 32 characters (128 bits).

Keys. The key material is the Temporal payload codec's (`workflows.codec.load_keys`: the
current key id and every known key). From each key K two keys are derived with HKDF-SHA256
(no salt, 32 bytes): `info=b"onefamily/read-model/seal/v1"` for AES-GCM and
`info=b"onefamily/read-model/index/v1"` for the HMAC; the key ids are the codec's ids.
Whoever builds an engine calls `init_keys(settings)` (`models.db.init_read_model`): the API's
lifespan, the worker, the tests' `settings` fixture. The keys are loaded on first use, so
binding creates no key file by itself; unbound, the keys of `settings.get_settings()` are used.
Decrypt keys of earlier bindings stay known to the process (so a test process that binds one
data dir after another still reads what it wrote); hashing uses only the keys of the last
binding, the current one first. Key bytes never appear in messages; key ids are not secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import JSON, LargeBinary, Text, or_, true
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from settings import Settings

VERSION = "v1"
PREFIX = VERSION + ":"
PREFIX_BYTES = PREFIX.encode()
SEAL_INFO = b"onefamily/read-model/seal/v1"
INDEX_INFO = b"onefamily/read-model/index/v1"
NONCE_BYTES = 12
HASH_CHARS = 32


class SealedValueError(ValueError):
    """A sealed value names a key this process does not have, or fails authentication."""


def derive_key(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass(frozen=True)
class _Keys:
    current_id: str
    index_keys: tuple[bytes, ...]  # of the last binding, current first


_lock = threading.Lock()
_load_lock = threading.Lock()
_source: Settings | None = None
_keys: _Keys | None = None
_ciphers: dict[str, AESGCM] = {}  # every key id this process has known: decryption


def configure(current_id: str, keys: Mapping[str, bytes]) -> None:
    """Use these codec keys (`load_keys` output) from now on."""
    global _keys, _ciphers
    if current_id not in keys:
        raise SealedValueError(f"current key id {current_id!r} is not among the keys")
    with _lock:  # copy on write: readers never see the dict change under them
        _ciphers = {**_ciphers, **{k: AESGCM(derive_key(key, SEAL_INFO)) for k, key in keys.items()}}
        order = [current_id, *sorted(k for k in keys if k != current_id)]
        _keys = _Keys(current_id, tuple(derive_key(keys[k], INDEX_INFO) for k in order))


def init_keys(settings: Settings) -> None:
    """Bind to the keys of `settings`; they are loaded (the key file created) on first use."""
    global _source, _keys
    with _lock:
        _source, _keys = settings, None


def _current() -> _Keys:
    keys = _keys
    if keys is not None:
        return keys
    from settings import get_settings
    from workflows.codec import load_keys

    with _load_lock:
        if _keys is not None:
            return _keys
        source = _source or get_settings()
        current_id, material = load_keys(source)  # may create the data dir's key file
        configure(current_id, material)
        return _keys


def _cipher(key_id: str) -> AESGCM:
    cipher = _ciphers.get(key_id)
    if cipher is None:
        _current()  # the first read of a process may come before any write
        cipher = _ciphers.get(key_id)
    if cipher is None:
        raise SealedValueError(
            f"a read-model value is sealed with key id {key_id!r}, which this process does not "
            f"have (known: {', '.join(sorted(_ciphers))}); add it to "
            "ONEFAMILY_ENCRYPTION_PREVIOUS_KEYS to read old data")
    return cipher


def _aad(key_id: str, purpose: str) -> bytes:
    return f"{PREFIX}{key_id}:{purpose}".encode()


def _seal(purpose: str, plain: bytes) -> tuple[str, bytes]:
    key_id = _current().current_id
    nonce = secrets.token_bytes(NONCE_BYTES)
    return key_id, nonce + _cipher(key_id).encrypt(nonce, plain, _aad(key_id, purpose))


def _open(purpose: str, key_id: str, blob: bytes) -> bytes:
    try:
        return _cipher(key_id).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(key_id, purpose))
    except InvalidTag:
        raise SealedValueError(
            f"a read-model value ({purpose}, key id {key_id!r}) failed authentication: "
            "wrong key, tampered, or moved from another column") from None


def seal_text(purpose: str, text: str) -> str:
    key_id, blob = _seal(purpose, text.encode("utf-8"))
    return f"{PREFIX}{key_id}:{base64.b64encode(blob).decode('ascii')}"


def is_sealed(value: str | bytes) -> bool:
    return value.startswith(PREFIX_BYTES if isinstance(value, bytes) else PREFIX)


def open_text(purpose: str, value: str) -> str:
    """The plaintext of a sealed value; a legacy (never sealed) value as it is."""
    if not value.startswith(PREFIX):
        return value
    key_id, sep, text = value[len(PREFIX):].rpartition(":")
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    if not sep or not key_id or len(blob) <= NONCE_BYTES:
        return value  # not of our making: a legacy text that happens to start with "v1:"
    return _open(purpose, key_id, blob).decode("utf-8")


def seal_bytes(purpose: str, data: bytes) -> bytes:
    key_id, blob = _seal(purpose, data)
    return PREFIX_BYTES + key_id.encode() + b":" + blob


def open_bytes(purpose: str, value: bytes) -> bytes:
    value = bytes(value)
    if not value.startswith(PREFIX_BYTES):
        return value  # e.g. a PDF stored before sealing: b"%PDF-..."
    _current()
    rest = value[len(PREFIX_BYTES):]
    # The key id is text without ':' in practice, but match the known ids rather than split:
    # the ciphertext may contain ':' bytes.
    for key_id in sorted(_ciphers, key=len, reverse=True):
        head = key_id.encode() + b":"
        if rest.startswith(head):
            return _open(purpose, key_id, rest[len(head):])
    key_id = rest.split(b":", 1)[0].decode(errors="replace")
    return _open(purpose, key_id, b"")  # raises: unknown key id


# ---------------------------------------------------------------- column types


class _NoSQLComparison(TypeDecorator.Comparator):
    """Ciphertext is meaningless to SQL (a fresh nonce every write): comparing a sealed column
    with a value (==, LIKE, IN, ...) or sorting it with .asc()/.desc() raises instead of
    silently never matching. IS [NOT] NULL, and column-to-column comparisons (SQLAlchemy
    uses those internally), pass."""

    REFUSED = frozenset({operators.asc_op, operators.desc_op})

    def operate(self, op, *other, **kwargs):
        if op in self.REFUSED or any(not isinstance(o, ClauseElement) and o is not None for o in other):
            raise TypeError(f"a sealed column cannot be used with SQL operator {op.__name__!r}: "
                            "filter or sort in Python, or on a keyed hash column")
        return super().operate(op, *other, **kwargs)


class _Sealed(TypeDecorator):
    """A column stored sealed; `purpose` ("table.column") is bound into each value."""

    comparator_factory = _NoSQLComparison

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose


class SealedText(_Sealed):
    impl = Text
    cache_ok = True  # SQLAlchemy reads it on each class itself

    def process_bind_param(self, value: Any, dialect) -> str | None:
        return None if value is None else seal_text(self.purpose, str(value))

    def process_result_value(self, value: Any, dialect) -> str | None:
        return None if value is None else open_text(self.purpose, value)


class JSONText(str):
    """A value already serialised as JSON (e.g. by pydantic's `model_dump_json`): `SealedJSON`
    seals it as it is instead of serialising it again."""


class SealedJSON(_Sealed):
    """A JSON column whose value is stored as one sealed JSON string; a legacy JSON object
    (or any non-sealed JSON value) is returned as it was stored. A `JSONText` is taken as the
    JSON it already is."""

    impl = JSON
    cache_ok = True  # SQLAlchemy reads it on each class itself

    def process_bind_param(self, value: Any, dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, JSONText):
            return seal_text(self.purpose, str(value))
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return seal_text(self.purpose, text)

    def process_result_value(self, value: Any, dialect) -> Any:
        if isinstance(value, str) and value.startswith(PREFIX):
            return json.loads(open_text(self.purpose, value))
        return value


class SealedBytes(_Sealed):
    impl = LargeBinary
    cache_ok = True  # SQLAlchemy reads it on each class itself

    def process_bind_param(self, value: Any, dialect) -> bytes | None:
        return None if value is None else seal_bytes(self.purpose, bytes(value))

    def process_result_value(self, value: Any, dialect) -> bytes | None:
        return None if value is None else open_bytes(self.purpose, value)


# ---------------------------------------------------------------- keyed hashes: search, duplicates


def normalise_name(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: 'Family  JENSEN ' -> 'family jensen'."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def name_terms(name: str) -> set[str]:
    """What `q` matches exactly for one name: the whole name, each word of it, and the parts
    of a hyphenated word ('Anne-Marie Holm' -> 'anne-marie holm', 'anne-marie', 'anne',
    'marie', 'holm')."""
    whole = normalise_name(name)
    if not whole:
        return set()
    terms = {whole}
    for word in whole.split(" "):
        terms.add(word)
        terms.update(part for part in word.split("-") if part)
    return terms


def _hash(key: bytes, domain: bytes, text: str) -> str:
    return hmac.new(key, domain + b"\0" + text.encode("utf-8"), hashlib.sha256).hexdigest()[:HASH_CHARS]


def name_hashes(names: Iterable[str]) -> str:
    """The `search_text` of a case: ',h1,h2,...,' over the terms of all its names (sorted, so
    the order of names leaks nothing), hashed with the current key."""
    key = _current().index_keys[0]
    terms = set().union(*(name_terms(n) for n in names if n))
    return "," + "".join(f"{h}," for h in sorted({_hash(key, b"name", t) for t in terms}))


def name_match(column: ColumnElement, q: str) -> ColumnElement:
    """`q` matched exactly (DESIGN §9: never as a LIKE pattern): the whole name of the family
    or of a member, or one whole word of it, after `normalise_name`. Rows hashed with an older
    (still known) key match too. A blank `q` filters nothing."""
    term = normalise_name(q)
    if not term:
        return true()
    hashes = dict.fromkeys(_hash(k, b"name", term) for k in _current().index_keys)
    return or_(*(column.contains(f",{h},", autoescape=True) for h in hashes))


def person_term(name: str, birth_date: object) -> str:
    return f"{normalise_name(name)}|{birth_date or ''}"


def person_hashes(name: str, birth_date: object) -> list[str]:
    """The keyed hash of a person ('name|birthdate'), with every key of the binding, current
    first: index 0 is what a new `case_persons` row stores; all of them are what a lookup
    matches."""
    term = person_term(name, birth_date)
    return list(dict.fromkeys(_hash(k, b"person", term) for k in _current().index_keys))


def keyed_hashes(domain: bytes, text: str) -> list[str]:
    """The keyed hash of `text` in `domain` (e.g. b"family-contact"), with every key of the
    binding, current first: index 0 is what a new row stores, all of them what a lookup
    matches. For identifiers that must be found again but never stored in plaintext."""
    return list(dict.fromkeys(_hash(k, domain, text) for k in _current().index_keys))
