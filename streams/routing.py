"""The routing decision: where one request goes, given its model's rollout state.

Pure code, no Kafka: the router compiles each state into a :class:`RoutePlan` once and asks it
for every request; the payload is republished unchanged to each route's version topic.

>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=10000, step_started_at=now, updated_at=now)
>>> [(r.version, r.arm.value, r.served) for r in routes_for(state, b"user-1")]
[('v2', 'canary', True)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from model_canary.streams.cohort import Cohorts
from model_canary.streams.messages import MAX_BP, Arm, Mode, RolloutState
from model_canary.streams.plan import plan_of
from model_canary.streams.rollout.machine import ACTIVE_PHASES
from model_canary.streams.stats.layout import (
    BASELINE,
    CANARY,
    CONTROL,
    SHADOW_PAIR_BP,
    control_share,
)

#: Routing keys whose routes a plan remembers (and the router, per compiled plan, their
#: outputs): users send many requests, and a dictionary hit costs a fraction of the hash (a
#: fifth in the router's process, where the memo's entries are mostly out of the CPU's cache).
#: Cleared when full, so memory stays bounded.
MEMO_KEYS = 65_536


@dataclass(frozen=True, slots=True)
class Route:
    """One destination of a request. ``weight_bp`` is the probability, in basis points, that
    this request would be served by the canary: the evaluator conditions on it."""

    version: str
    arm: Arm
    served: bool
    rollout_id: str
    weight_bp: int
    # Routes key dictionaries in the router's hot path: hashed once, not per lookup.
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        fields = (self.version, self.arm, self.served, self.rollout_id, self.weight_bp)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash


_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """Put ``value`` in ``memo`` under ``key`` and return it; a memo that holds
    :data:`MEMO_KEYS` keys is cleared first, so it stays bounded.

    >>> memo: dict[bytes, int] = {}
    >>> remember(memo, b"u1", 7), memo
    (7, {b'u1': 7})
    """
    if len(memo) >= MEMO_KEYS:
        memo.clear()
    memo[key] = value
    return value


class RoutePlan:
    """A rollout state compiled for routing: the few possible route tuples are built once, so
    routing a request costs one hash and a comparison (and a repeated key, a dictionary hit).

    With a control arm (the plan's ``control``, the default) the buckets just above the
    canary's go to the **control** arm: the baseline version, served by its own workers, at
    the canary's share - so latency is compared between two groups under the same load.

    ``routes(key, forced_arm)``: ``forced_arm`` ("baseline" or "canary", from the request's
    ``canary-arm`` header) overrides the split for testers; its weight is then 0 or 10000, the
    probability it really had, so forced requests carry no evidence about the arms.
    """

    __slots__ = (
        "_active",
        "_baseline",
        "_canary",
        "_cohorts",
        "_control",
        "_control_end",
        "_forced",
        "_memo",
        "_shadow",
        "_threshold",
    )

    def __init__(self, state: RolloutState) -> None:
        rid = state.rollout_id
        self._cohorts = Cohorts(rid)
        self._active = state.phase in ACTIVE_PHASES and state.canary_version is not None
        self._shadow = state.mode is Mode.SHADOW
        self._forced: dict[str, tuple[Route, ...]] = {}
        self._memo: dict[bytes, tuple[tuple[Route, ...], int]] = {}
        self._baseline: tuple[Route, ...]
        self._canary: tuple[Route, ...]
        self._control: tuple[Route, ...] = ()
        self._control_end = 0
        if not self._active:
            stable = (Route(state.stable_version, Arm.STABLE, True, rid, 0),)
            self._baseline = self._canary = stable
            self._threshold = 0
            return
        canary = state.canary_version
        assert canary is not None
        baseline = state.baseline_version
        if self._shadow:
            # A mirrored request is answered by both arms, so under "no difference" a bad
            # event among its two answers comes from the canary with probability 1/2: that
            # is the weight its two routes carry. A request that is not mirrored carries 0
            # (it says nothing about the canary).
            self._baseline = (Route(baseline, Arm.BASELINE, True, rid, 0),)
            self._canary = (
                Route(baseline, Arm.BASELINE, True, rid, SHADOW_PAIR_BP),
                Route(canary, Arm.CANARY, False, rid, SHADOW_PAIR_BP),
            )
            self._threshold = state.shadow_sample_bp
            self._forced = {Arm.BASELINE: self._baseline, Arm.CANARY: self._canary}
            return
        weight = state.weight_bp
        self._baseline = (Route(baseline, Arm.BASELINE, True, rid, weight),)
        self._canary = (Route(canary, Arm.CANARY, True, rid, weight),)
        self._threshold = weight
        control = plan_of(state.model, state.canary_version, state.plan_json).control
        self._control_end = weight + control_share(weight, control)
        if self._control_end > weight:
            self._control = (Route(baseline, Arm.CONTROL, True, rid, weight),)
        self._forced = {
            Arm.BASELINE: (Route(baseline, Arm.BASELINE, True, rid, 0),),
            Arm.CANARY: (Route(canary, Arm.CANARY, True, rid, MAX_BP),),
        }

    def routes(self, key: bytes, forced_arm: str | None = None) -> tuple[Route, ...]:
        """Where a request with routing key ``key`` goes (in shadow mode: the served route
        first, then the mirrored copy when the key is sampled)."""
        return self.routed(key, forced_arm)[0]

    def routed(self, key: bytes, forced_arm: str | None = None) -> tuple[tuple[Route, ...], int]:
        """:meth:`routes` and the key's cohort bucket (``-1`` when no rollout is active: the
        router counts its routed evidence per bucket)."""
        if not self._active:
            return self._baseline, -1
        if forced_arm is not None:
            forced = self._forced.get(forced_arm)
            if forced is not None:
                return forced, self._cohorts.bucket(key)
        got = self._memo.get(key)
        if got is None:
            got = remember(self._memo, key, self.decide(key))
        return got

    def decide(self, key: bytes) -> tuple[tuple[Route, ...], int]:
        """:meth:`routed` without a forced arm and without remembering the key: for a caller
        that keeps its own memo (the router remembers each key's outputs)."""
        if not self._active:
            return self._baseline, -1
        bucket = self._cohorts.bucket(key)
        if bucket < self._threshold:
            return self._canary, bucket
        if bucket < self._control_end:
            return self._control, bucket
        return self._baseline, bucket

    def route_sets(self) -> tuple[tuple[Route, ...], ...]:
        """Every tuple of routes :meth:`routed` can return, as the very objects it returns (a
        caller may key a table on their identity: the router looks its outputs up so).

        >>> from model_canary.streams.messages import Phase, RolloutState, utc_now
        >>> now = utc_now()
        >>> plan = RoutePlan(RolloutState(model="iris", rollout_id="r1", stable_version="v1",
        ...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
        ...     weight_bp=2000, step_started_at=now, updated_at=now))
        >>> any(plan.routed(b"user-1")[0] is s for s in plan.route_sets())
        True
        """
        return (self._baseline, self._canary, self._control, *self._forced.values())

    def all_routes(self) -> tuple[Route, ...]:
        """Every distinct route this plan can return."""
        seen = (
            *self._baseline,
            *self._canary,
            *self._control,
            *(r for f in self._forced.values() for r in f),
        )
        return tuple(dict.fromkeys(seen))


def arms_of_buckets(
    buckets: npt.ArrayLike, weight_bp: npt.ArrayLike, control: bool
) -> npt.NDArray[np.int64]:
    """The comparison arm (index in :data:`~.stats.layout.ARMS`) of cohort buckets at canary
    weights (broadcast): the same split as :class:`RoutePlan`, for many keys at once.

    >>> arms_of_buckets([5, 150, 300], 100, control=True).tolist()
    [0, 1, 2]
    """
    b = np.asarray(buckets, dtype=np.int64)
    w = np.asarray(weight_bp, dtype=np.int64)
    share = np.where(control & (w > 0) & (w < MAX_BP), np.minimum(w, MAX_BP - w), 0)
    return np.asarray(np.where(b < w, CANARY, np.where(b < w + share, CONTROL, BASELINE)))


def routes_for(state: RolloutState, key: bytes, forced_arm: str | None = None) -> tuple[Route, ...]:
    """Where a request with routing key ``key`` goes (see :class:`RoutePlan`)."""
    return RoutePlan(state).routes(key, forced_arm)
