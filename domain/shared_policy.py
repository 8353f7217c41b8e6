"""One Policy object per distinct policy in a process, known by its digest (issue 13).

Every case carries its policy (DESIGN: policy data in the case's state), and the data
converter decodes a fresh copy for every workflow run: ~70 KiB of pydantic objects per cached
case, all equal. Policies are never changed in place (a new policy is a new object), so the
workflow swaps its copy for the shared one of the same content. Equal content, same object:
no change in behaviour. A passed-through module (worker.py), so the cache is process-wide.

The digest (SHA-256 of the policy's JSON) is also how a command's answer names its policy
(`models.case.CaseAnswer`): ~9.5 KB of the ~12 KB of a case's JSON is its policy, equal in
every case, so the answers, their history events and the API's decoding carry 64 hex digits
instead. A process that has not met a digest yet asks the case for its policy (api/gateway.py).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from models.policy import Policy

MAX_POLICIES = 64  # distinct policies kept (countries x versions in use); least recent dropped
_lock = threading.Lock()
_shared: OrderedDict[str, Policy] = OrderedDict()
# id(policy) -> (that policy, its digest): the object is held, so its id is not reused.
_digests: OrderedDict[int, tuple[Policy, str]] = OrderedDict()


def _content_digest(policy: Policy) -> str:
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


def _known(policy: Policy) -> str | None:
    hit = _digests.get(id(policy))
    if hit is not None and hit[0] is policy:
        _digests.move_to_end(id(policy))
        return hit[1]
    return None


def _remember(policy: Policy, value: str) -> None:
    _digests[id(policy)] = (policy, value)
    while len(_digests) > MAX_POLICIES:
        _digests.popitem(last=False)


def _share(policy: Policy, value: str) -> Policy:
    """The shared object of digest `value`: the one kept, or `policy`, kept from now on."""
    hit = _shared.get(value)
    if hit is not None:
        _shared.move_to_end(value)
        return hit
    _shared[value] = policy
    _remember(policy, value)
    while len(_shared) > MAX_POLICIES:
        _shared.popitem(last=False)
    return policy


def digest(policy: Policy) -> str:
    """The digest of `policy`'s content (computed once per object kept here). A digest this
    process gives out, it can resolve (`by_digest`)."""
    with _lock:
        value = _known(policy)
    if value is None:
        value = _content_digest(policy)
        with _lock:
            _remember(policy, value)
            _share(policy, value)
    return value


def shared(policy: Policy) -> Policy:
    """The process's one object equal to `policy` (`policy` itself when it is the first).
    A copy that finds its equal is not kept (each run decodes one)."""
    with _lock:
        value = _known(policy)
    if value is None:
        value = _content_digest(policy)
    with _lock:
        return _share(policy, value)


def by_digest(value: str) -> Policy | None:
    """The shared policy of this digest, if this process has met it."""
    with _lock:
        return _shared.get(value)
