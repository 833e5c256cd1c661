"""The routing decision: where one request goes, given its model's rollout state.

Pure code, no Kafka: the router calls :func:`routes_for` for each request and republishes the
payload unchanged to each route's version topic.

>>> from streams.messages import Phase, RolloutState, utc_now
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=10000, step_started_at=now, updated_at=now)
>>> [(r.version, r.arm.value, r.served) for r in routes_for(state, b"user-1")]
[('v2', 'canary', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.cohort import bucket
from streams.messages import MAX_BP, Arm, Mode, RolloutState
from streams.rollout.machine import ACTIVE_PHASES


@dataclass(frozen=True, slots=True)
class Route:
    """One destination of a request. ``weight_bp`` is the probability, in basis points, that
    this request would be served by the canary: the evaluator conditions on it."""

    version: str
    arm: Arm
    served: bool
    rollout_id: str
    weight_bp: int


def routes_for(state: RolloutState, key: bytes, forced_arm: str | None = None) -> tuple[Route, ...]:
    """Where a request with routing key ``key`` goes. ``forced_arm`` ("baseline" or "canary",
    from the request's ``canary-arm`` header) overrides the split for testers; its weight is
    then 0 or 10000, the probability it really had, so forced requests carry no evidence."""
    rid = state.rollout_id
    if state.phase not in ACTIVE_PHASES or state.canary_version is None:
        return (Route(state.stable_version, Arm.STABLE, True, rid, 0),)
    baseline = state.baseline_version
    canary = state.canary_version
    if state.mode is Mode.SHADOW:
        routes = [Route(baseline, Arm.BASELINE, True, rid, 0)]
        mirrored = (
            forced_arm == Arm.CANARY
            if forced_arm in (Arm.CANARY, Arm.BASELINE)
            else bucket(key, rid) < state.shadow_sample_bp
        )
        if mirrored:
            routes.append(Route(canary, Arm.CANARY, False, rid, 0))
        return tuple(routes)
    if forced_arm == Arm.CANARY:
        return (Route(canary, Arm.CANARY, True, rid, MAX_BP),)
    if forced_arm == Arm.BASELINE:
        return (Route(baseline, Arm.BASELINE, True, rid, 0),)
    weight = state.weight_bp
    if bucket(key, rid) < weight:
        return (Route(canary, Arm.CANARY, True, rid, weight),)
    return (Route(baseline, Arm.BASELINE, True, rid, weight),)
