"""Sticky, monotone cohorts: which arm a routing key falls in.

The bucket is a stable hash of (rollout id, key) into 10,000 buckets, one per basis point.
A key is in the canary when its bucket is below the canary weight in basis points, so

* the same key gets the same arm for as long as the weight holds (stickiness), and
* raising the weight only adds buckets: no key ever moves from canary back to baseline
  (monotone), while a new rollout id reshuffles who goes first.

>>> bucket(b"user-42", "rollout-1") == Cohorts("rollout-1").bucket(b"user-42")
True
>>> in_canary(b"user-42", "rollout-1", 10_000), in_canary(b"user-42", "rollout-1", 0)
(True, False)
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import blake2b

BUCKETS = 10_000
_PERSON = b"canary-cohort"


class Cohorts:
    """The buckets of one rollout. BLAKE2b keyed by the rollout id (not Python's salted
    ``hash()``), so every process and every language computes the same buckets."""

    __slots__ = ("_base",)

    def __init__(self, rollout_id: str) -> None:
        # Hashing starts from a copy of this prepared state: cheaper than a new hasher.
        self._base = blake2b(digest_size=8, person=_PERSON, salt=_salt(rollout_id))

    def bucket(self, key: bytes) -> int:
        """The key's bucket in ``0..9999``."""
        h = self._base.copy()
        h.update(key)
        return int.from_bytes(h.digest(), "big") % BUCKETS


def bucket(key: bytes, rollout_id: str) -> int:
    """The key's bucket in ``0..9999`` for this rollout."""
    return _cohorts(rollout_id).bucket(key)


def in_canary(key: bytes, rollout_id: str, weight_bp: int) -> bool:
    """True when the key belongs to the canary at ``weight_bp`` basis points (0..10000)."""
    return bucket(key, rollout_id) < weight_bp


@lru_cache(maxsize=256)
def _cohorts(rollout_id: str) -> Cohorts:
    return Cohorts(rollout_id)


def _salt(rollout_id: str) -> bytes:
    # BLAKE2b takes a salt of at most 16 bytes: long ids are digested down to that.
    raw = rollout_id.encode()
    return raw if len(raw) <= 16 else blake2b(raw, digest_size=16).digest()
