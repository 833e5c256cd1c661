from __future__ import annotations

import pytest

from model_canary.streams.enums import Outcome
from model_canary.streams.stats.decide import ArmCounts, StepPolicy, StepSnapshot, decide

POLICY = StepPolicy(
    min_duration_s=600,
    min_canary_requests=500,
    min_label_coverage=0.5,
    max_duration_s=3600,
    tolerances={"accuracy": 0.05},
)
QUIET = {"errors": {2000: ArmCounts(6000, 24_000, 60, 240)}}


def snap(**kw: object) -> StepSnapshot:
    base: dict[str, object] = {
        "weight_bp": 2000,
        "elapsed_s": 1800.0,
        "canary_requests": 6000,
        "metrics": QUIET,
    }
    base.update(kw)
    return StepSnapshot(**base)  # type: ignore[arg-type]


def test_advance_when_everything_is_met() -> None:
    v = decide(snap(), POLICY)
    assert (v.outcome, v.code) == (Outcome.ADVANCE, "ok")
    ev = v.evidence[0]
    assert (ev.metric, ev.canary_n, ev.baseline_n, ev.canary_bad, ev.baseline_bad) == (
        "errors",
        6000,
        24_000,
        60,
        240,
    )
    assert not ev.alarmed and ev.threshold == pytest.approx(2.9957, abs=1e-4)


def test_rollback_on_any_alarm_even_before_the_minimum_duration() -> None:
    metrics = {**QUIET, "latency_p99": {2000: ArmCounts(600, 2400, 30, 24)}}
    v = decide(snap(metrics=metrics, elapsed_s=60.0, canary_requests=600), POLICY)
    assert (v.outcome, v.code) == (Outcome.ROLLBACK, "harm")
    assert "latency_p99" in v.reason and "errors" not in v.reason
    alarmed = {e.metric: e.alarmed for e in v.evidence}
    assert alarmed == {"errors": False, "latency_p99": True}


def test_alpha_is_split_over_the_metrics() -> None:
    one = decide(snap(), POLICY).evidence[0].threshold
    three = decide(snap(metrics={**QUIET, "a": QUIET["errors"], "b": QUIET["errors"]}), POLICY)
    assert three.evidence[0].threshold == pytest.approx(one + 1.0986, abs=1e-3)  # + ln 3


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"elapsed_s": 300.0}, "too-short"),
        ({"canary_requests": 100}, "too-few-samples"),
        ({"label_coverage": 0.2}, "labels-missing"),
    ],
)
def test_hold_says_why(changes: dict[str, object], code: str) -> None:
    v = decide(snap(**changes), POLICY)
    assert (v.outcome, v.code) == (Outcome.HOLD, code)


def test_a_step_past_its_maximum_duration_is_flagged() -> None:
    v = decide(snap(elapsed_s=4000.0, canary_requests=100), POLICY)
    assert (v.outcome, v.code) == (Outcome.HOLD, "max-duration-exceeded")
    assert "100 canary requests" in v.reason


def test_sample_ratio_mismatch_holds_rather_than_rolls_back() -> None:
    v = decide(snap(label_coverage=0.9, labelled={2000: (300, 1700)}), POLICY)
    assert (v.outcome, v.code) == (Outcome.HOLD, "sample-ratio-mismatch")
    assert v.srm is not None and v.srm.mismatch
    fine = decide(snap(label_coverage=0.9, labelled={2000: (400, 1600)}), POLICY)
    assert fine.outcome is Outcome.ADVANCE


def test_the_last_step_needs_every_upper_bound_below_the_tolerance() -> None:
    # 300 errors per arm at 50%: no alarm, but the ratio is not yet bounded below 1.2.
    few = {"errors": {5000: ArmCounts(30_000, 30_000, 300, 300)}}
    v = decide(snap(weight_bp=5000, final=True, metrics=few), POLICY)
    assert (v.outcome, v.code) == (Outcome.HOLD, "not-yet-harmless")
    many = {"errors": {5000: ArmCounts(600_000, 600_000, 6000, 6000)}}
    v = decide(snap(weight_bp=5000, final=True, metrics=many), POLICY)
    assert v.outcome is Outcome.ADVANCE
    upper = v.evidence[0].upper
    assert upper is not None and upper < 1.2


def test_unbounded_upper_bounds_travel_as_none() -> None:
    v = decide(snap(metrics={"errors": {2000: ArmCounts()}}), POLICY)
    assert v.evidence[0].upper is None and v.evidence[0].lower == 0.0


def test_full_traffic_finalizes_after_its_minimum_duration() -> None:
    assert decide(snap(weight_bp=10_000), POLICY).outcome is Outcome.FINALIZE
    v = decide(snap(weight_bp=10_000, elapsed_s=10.0), POLICY)
    assert (v.outcome, v.code) == (Outcome.HOLD, "too-short")


def test_late_labels_of_an_earlier_step_can_still_roll_back_at_full_traffic() -> None:
    bad = {"accuracy": {2000: ArmCounts(3000, 12_000, 600, 1200)}}
    assert decide(snap(weight_bp=10_000, metrics=bad), POLICY).outcome is Outcome.ROLLBACK


def test_rollback_tolerance_moves_the_rollback_null_not_the_promotion_margin() -> None:
    # Ratio about 1.5 at 20% with plenty of events: harm is proven, but not beyond 1.6.
    metrics = {"errors": {2000: ArmCounts(6000, 24_000, 90, 240)}}
    strict = decide(snap(metrics=metrics), POLICY)
    assert (strict.outcome, strict.code) == (Outcome.ROLLBACK, "harm")
    assert "exceeds 1;" in strict.reason
    lenient = StepPolicy(
        min_duration_s=600, min_canary_requests=500, rollback_tolerances={"errors": 0.6}
    )
    v = decide(snap(metrics=metrics), lenient)
    assert v.outcome is Outcome.ADVANCE
    # From the final step it still holds: the upper bound is far above 1 + tolerance.
    v = decide(snap(metrics=metrics, final=True), lenient)
    assert (v.outcome, v.code) == (Outcome.HOLD, "not-yet-harmless")
