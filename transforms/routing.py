"""Which events a canary or a shadow takes: a share of event ids, chosen by a stable hash.

The choice depends on the event id alone, never on a worker, a process or a run: an event redelivered, replayed or
backfilled again lands on the same side, and a canary's predictions can be joined with a shadow's. Python's own
`hash` is salted per process, so a keyed BLAKE2b is used instead; the canary and the shadow have keys of their own,
so that the events a canary takes and those a shadow takes are independent shares.
"""

from __future__ import annotations

import hashlib

CANARY = b"canary"
SHADOW = b"shadow"
_SPACE = 2**64


def in_share(event_id: str, percent: float, key: bytes) -> bool:
    """Whether `event_id` falls in the `percent` (0 to 100) share that `key` picks."""
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") < percent * _SPACE / 100
