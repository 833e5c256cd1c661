from __future__ import annotations

from datetime import timedelta
from typing import Any

from model_canary.streams.evaluation import (
    MAX_LAG_MS,
    SLACK_MS,
    THRESHOLD_SAMPLES,
    Aggregate,
    policy,
)
from model_canary.streams.messages import Arm, MetricEvent, Phase, RolloutState, utc_now
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats import StepSnapshot


def counts(snap: StepSnapshot, metric: str, weight: int) -> tuple[int, int, int, int]:
    """(canary_n, baseline_n, canary_bad, baseline_bad) of one weight in a snapshot."""
    c = snap.comparisons[metric]
    if weight not in c.weights:
        return (0, 0, 0, 0)
    w = c.weights.index(weight)
    return (
        int(c.canary_n[0, w]),
        int(c.other_n[0, w]),
        int(c.canary_bad[0, w]),
        int(c.other_bad[0, w]),
    )


NOW = utc_now()
PLAN = parse_plan(
    {
        "model": "iris",
        "canary": "v2",
        "steps": [1, 20, 100],
        "step": {"warmup": "10s", "min_duration": "1m", "min_canary_requests": 5},
        "metrics": {
            "errors": {"rollback_tolerance": 0.1},
            "latency_p95": {},
            "accuracy": {"min_label_coverage": 0.2},
        },
    }
)


def state(**fields: Any) -> RolloutState:
    base: dict[str, Any] = dict(
        model="iris",
        rollout_id="r1",
        stable_version="v1",
        baseline_version="v1",
        canary_version="v2",
        phase=Phase.PROGRESSING,
        steps_bp=(100, 2000, 10000),
        weight_bp=100,
        step_started_at=NOW - timedelta(minutes=5),
        updated_at=NOW,
    )
    base.update(fields)
    return RolloutState(**base)


def event(
    arm: Arm,
    *,
    error: bool = False,
    latency: float = 10.0,
    weight: int = 100,
    routed: Any = NOW,
    prediction: str | None = "setosa",
) -> MetricEvent:
    return MetricEvent(
        request_id="x",
        model="iris",
        version="v2" if arm is Arm.CANARY else "v1",
        arm=arm,
        rollout_id="r1",
        weight_bp=weight,
        latency_ms=latency,
        error=error,
        prediction=prediction,
        routed_at=routed,
        completed_at=routed,
    )


def test_counts_are_kept_per_weight_and_arm() -> None:
    agg = Aggregate.new("r1")
    s = state()
    agg.record(event(Arm.CANARY, error=True), s, PLAN)
    agg.record(event(Arm.BASELINE), s, PLAN)
    agg.record(event(Arm.BASELINE, error=True, weight=2000), s, PLAN)
    assert agg.counts["errors"] == {"100": [1, 1, 1, 0], "2000": [0, 1, 0, 1]}
    assert agg.step == [1, 1, 0], "only the current weight's requests count for the step"
    assert Aggregate.from_json(agg.to_json()) == agg


def test_latency_thresholds_come_from_the_baseline_before_any_comparison() -> None:
    agg = Aggregate.new("r1")
    s = state()
    for i in range(THRESHOLD_SAMPLES):
        agg.record(event(Arm.BASELINE, latency=float(i)), s, PLAN)
    assert "latency_p95" not in agg.counts, "warm-up latencies are not compared"
    assert agg.thresholds["latency_p95"] == 190.0
    agg.record(event(Arm.CANARY, latency=500.0), s, PLAN)
    agg.record(event(Arm.BASELINE, latency=5.0), s, PLAN)
    assert agg.counts["latency_p95"]["100"] == [1, 1, 1, 0]


def test_warmup_after_a_weight_change_is_excluded() -> None:
    agg = Aggregate.new("r1")
    s = state(step_started_at=NOW)
    assert agg.record(event(Arm.CANARY, routed=NOW + timedelta(seconds=3)), s, PLAN) is False
    assert "errors" not in agg.counts
    agg.record(event(Arm.CANARY, routed=NOW + timedelta(seconds=11)), s, PLAN)
    assert agg.counts["errors"]["100"][0] == 1


def test_labels_and_the_snapshot() -> None:
    agg = Aggregate.new("r1")
    s = state()
    for _ in range(10):
        agg.record(event(Arm.CANARY), s, PLAN)
    agg.label(weight_bp=100, canary=True, correct=False, this_step=True)
    agg.label(weight_bp=100, canary=False, correct=True, this_step=True)
    snap = agg.snapshot(s, PLAN, NOW)
    assert snap.canary_requests[0] == 10 and snap.weight_bp[0] == 100
    assert snap.label_coverage is not None and snap.label_coverage[0] == 0.2
    assert counts(snap, "accuracy", 100)[2] == 1
    assert snap.labels is not None
    assert (snap.labels.canary_bad[0, 0], snap.labels.other_bad[0, 0]) == (1, 1)
    assert 299 <= snap.elapsed_s[0] <= 301
    assert not snap.final[0]
    assert agg.snapshot(state(step_index=1, weight_bp=2000), PLAN, NOW).final[0]


def test_policy_from_plan() -> None:
    p = policy(PLAN)
    assert p.min_duration_s == 60 and p.min_canary_requests == 5
    assert p.min_label_coverage == 0.2 and p.metrics["accuracy"].tolerance == 0.02
    assert p.metrics["errors"].rollback_tolerance == 0.1
    assert p.metrics["latency_p95"].rollback_tolerance == 0.0
    assert p.metrics["errors"].tolerance == 0.2
    assert p.metrics["latency_p95"].comparator == "control"


def test_the_tests_wait_until_both_arms_results_have_arrived() -> None:
    # The canary (lightly loaded) answers a whole second of requests before the baseline.
    agg = Aggregate.new("r1")
    s = state()
    t0 = NOW - timedelta(minutes=1)
    for i in range(5):
        agg.record(event(Arm.CANARY, error=True, routed=t0 + timedelta(seconds=i)), s, PLAN)
    assert agg.counts["errors"]["100"] == [5, 0, 5, 0], "every event is counted (metrics)"
    one_second_later = t0 + timedelta(seconds=5)
    snap = agg.snapshot(s, PLAN, one_second_later)
    assert counts(snap, "errors", 100) == (0, 0, 0, 0), "nothing the baseline has not passed"
    # The baseline catches up to t0 + 3 s: requests routed before t0 + 2 s are complete.
    for i in range(4):
        agg.record(event(Arm.BASELINE, routed=t0 + timedelta(seconds=i)), s, PLAN)
    snap = agg.snapshot(s, PLAN, one_second_later)
    assert counts(snap, "errors", 100) == (2, 2, 2, 0)
    back = Aggregate.from_json(agg.to_json())
    assert back == agg
    assert counts(back.snapshot(s, PLAN, one_second_later), "errors", 100) == (2, 2, 2, 0)
    # An arm silent for longer than MAX_LAG_MS is idle, not late: everything is released.
    later = agg.snapshot(s, PLAN, t0 + timedelta(milliseconds=MAX_LAG_MS + 6000))
    assert counts(later, "errors", 100) == (5, 4, 5, 0)


def test_released_seconds_are_dropped_so_the_held_back_tail_stays_small() -> None:
    agg = Aggregate.new("r1")
    s = state()
    t0 = NOW - timedelta(minutes=10)
    for i in range(0, 300, 3):
        for arm in (Arm.CANARY, Arm.BASELINE):
            agg.record(event(arm, routed=t0 + timedelta(seconds=i)), s, PLAN)
    assert len(agg.pending) <= 2 + SLACK_MS // 1000
