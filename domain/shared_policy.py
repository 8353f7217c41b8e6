"""One Policy object per distinct policy in a worker process (issue 13: memory per cached case).

Every case carries its policy (DESIGN: policy data in the case's state), and the data
converter decodes a fresh copy for every workflow run: ~70 KiB of pydantic objects per cached
case, all equal. Policies are never changed in place (a new policy is a new object), so the
workflow swaps its copy for the shared one of the same content. Equal content, same object:
no change in behaviour. A passed-through module (worker.py), so the cache is process-wide.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from models.policy import Policy

MAX_POLICIES = 64  # distinct policies kept (countries x versions in use); least recent dropped
_lock = threading.Lock()
_shared: OrderedDict[bytes, Policy] = OrderedDict()


def shared(policy: Policy) -> Policy:
    """The process's one object equal to `policy` (`policy` itself when it is the first)."""
    key = hashlib.sha256(policy.model_dump_json().encode()).digest()
    with _lock:
        hit = _shared.get(key)
        if hit is not None:
            _shared.move_to_end(key)
            return hit
        _shared[key] = policy
        while len(_shared) > MAX_POLICIES:
            _shared.popitem(last=False)
        return policy
