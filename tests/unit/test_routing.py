from __future__ import annotations

from typing import Any

from model_canary.streams.messages import Arm, Mode, Phase, RolloutState, utc_now
from model_canary.streams.routing import routes_for

NOW = utc_now()


def state(**fields: Any) -> RolloutState:
    base: dict[str, Any] = dict(
        model="iris",
        rollout_id="r1",
        stable_version="v1",
        baseline_version="v1",
        canary_version="v2",
        phase=Phase.PROGRESSING,
        weight_bp=2000,
        step_started_at=NOW,
        updated_at=NOW,
    )
    base.update(fields)
    return RolloutState(**base)


KEYS = [f"user-{i}".encode() for i in range(5000)]


def test_split_follows_the_weight_and_is_sticky() -> None:
    s = state()
    first = [routes_for(s, k)[0].arm for k in KEYS]
    assert [routes_for(s, k)[0].arm for k in KEYS] == first
    share = first.count(Arm.CANARY) / len(KEYS)
    assert 0.17 < share < 0.23
    assert all(r.weight_bp == 2000 for k in KEYS[:20] for r in routes_for(s, k))


def test_forced_arm_overrides_with_its_true_probability() -> None:
    s = state(weight_bp=0)
    (route,) = routes_for(s, b"k", forced_arm="canary")
    assert (route.version, route.arm, route.weight_bp) == ("v2", Arm.CANARY, 10_000)
    (route,) = routes_for(state(weight_bp=10_000), b"k", forced_arm="baseline")
    assert (route.version, route.arm, route.weight_bp) == ("v1", Arm.BASELINE, 0)


def test_no_rollout_goes_to_stable() -> None:
    for phase in (Phase.STABLE, Phase.ROLLED_BACK):
        (route,) = routes_for(state(phase=phase, weight_bp=0), b"k", forced_arm="canary")
        assert (route.version, route.arm) == ("v1", Arm.STABLE)
    (route,) = routes_for(state(phase=Phase.SUCCEEDED, stable_version="v2", weight_bp=0), b"k")
    assert route.version == "v2"


def test_shadow_serves_baseline_and_mirrors_a_sample() -> None:
    s = state(mode=Mode.SHADOW, weight_bp=0, shadow_sample_bp=5000)
    mirrored = 0
    for k in KEYS:
        routes = routes_for(s, k)
        assert routes[0].served and routes[0].arm is Arm.BASELINE
        assert all(not r.served for r in routes[1:])
        # Both answers of a mirrored request carry 1/2; an unmirrored one carries 0.
        assert {r.weight_bp for r in routes} == ({5000} if len(routes) == 2 else {0})
        mirrored += len(routes) - 1
    assert 0.45 < mirrored / len(KEYS) < 0.55


def test_a_plan_remembers_routes_without_changing_them(monkeypatch: Any) -> None:
    import model_canary.streams.routing as routing

    monkeypatch.setattr(routing, "MEMO_KEYS", 100)  # cleared many times over 5,000 keys
    s = state()
    plan = routing.RoutePlan(s)
    fresh = [routes_for(s, k) for k in KEYS]
    assert [plan.routes(k) for k in KEYS] == fresh
    assert [plan.routes(k) for k in reversed(KEYS)] == fresh[::-1]
    assert len(plan._memo) <= 100


def test_the_control_arm_takes_the_canarys_share_from_the_buckets_above_it() -> None:
    import numpy as np

    from model_canary.streams.cohort import bucket
    from model_canary.streams.routing import arms_of_buckets

    s = state(weight_bp=2000)  # no stored plan: the default plan, which routes a control arm
    arms = [routes_for(s, k)[0] for k in KEYS]
    control = [r for r in arms if r.arm is Arm.CONTROL]
    assert 0.17 < len(control) / len(KEYS) < 0.23
    assert all(r.version == "v1" and r.served and r.weight_bp == 2000 for r in control)
    # The split is the vectorised one the evaluator and the simulator use.
    buckets = np.array([bucket(k, "r1") for k in KEYS])
    expected = arms_of_buckets(buckets, 2000, control=True)
    names = {Arm.CANARY: 0, Arm.CONTROL: 1, Arm.BASELINE: 2}
    assert [names[r.arm] for r in arms] == expected.tolist()


def test_a_plan_without_a_control_arm_splits_in_two() -> None:
    from model_canary.streams.plan import parse_plan

    plan = parse_plan({"model": "iris", "canary": "v2", "control": False})
    s = state(plan_json=plan.to_json())
    assert {routes_for(s, k)[0].arm for k in KEYS} == {Arm.CANARY, Arm.BASELINE}
    # At 50% the control arm is everything that is not the canary.
    half = state(weight_bp=5000)
    assert {routes_for(half, k)[0].arm for k in KEYS} == {Arm.CANARY, Arm.CONTROL}


def test_deciding_agrees_with_routing_and_returns_the_plans_own_tuples(
    monkeypatch: Any,
) -> None:
    # The router's hot loop remembers plan.decide(key) in a memo of its own, and finds its
    # outputs by the identity of the tuple of routes (plan.route_sets()).
    import model_canary.streams.routing as routing

    monkeypatch.setattr(routing, "MEMO_KEYS", 100)
    for s in (state(), state(mode=Mode.SHADOW, shadow_sample_bp=3000), state(phase=Phase.STABLE)):
        plan = routing.RoutePlan(s)
        sets = [id(t) for t in plan.route_sets()]
        for k in [*KEYS[:300], *KEYS[:300]]:
            decided = plan.decide(k)
            got = plan.routed(k)
            assert decided == got and decided[0] is got[0]
            assert got == routing.RoutePlan(s).routed(k)
            assert id(got[0]) in sets
