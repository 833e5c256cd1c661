"""Sticky, monotone cohorts: which arm a routing key falls in.

The bucket is a stable hash of (rollout id, key) into 10,000 buckets, one per basis point.
A key is in the canary when its bucket is below the canary weight in basis points, so

* the same key gets the same arm for as long as the weight holds (stickiness), and
* raising the weight only adds buckets: no key ever moves from canary back to baseline
  (monotone), while a new rollout id reshuffles who goes first.

>>> bucket(b"user-42", "rollout-1") == bucket(b"user-42", "rollout-1")
True
>>> in_canary(b"user-42", "rollout-1", 10_000), in_canary(b"user-42", "rollout-1", 0)
(True, False)
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import blake2b

BUCKETS = 10_000


def bucket(key: bytes, rollout_id: str) -> int:
    """The key's bucket in ``0..9999`` for this rollout (BLAKE2b, not Python's salted hash)."""
    digest = blake2b(key, digest_size=8, person=b"canary-cohort", salt=_salt(rollout_id)).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_canary(key: bytes, rollout_id: str, weight_bp: int) -> bool:
    """True when the key belongs to the canary at ``weight_bp`` basis points (0..10000)."""
    return bucket(key, rollout_id) < weight_bp


@lru_cache(maxsize=1024)
def _salt(rollout_id: str) -> bytes:
    # BLAKE2b takes a salt of at most 16 bytes: long ids are digested down to that.
    raw = rollout_id.encode()
    return raw if len(raw) <= 16 else blake2b(raw, digest_size=16).digest()
