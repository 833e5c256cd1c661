from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from model_canary.streams.enums import Action, Mode, Outcome, Phase
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats import (
    StepSnapshot,
    action_for,
    decide,
    decide_many,
    from_counts,
    policy,
)

PLAN = parse_plan(
    {
        "model": "m",
        "canary": "v2",
        "step": {"min_duration": "10m", "min_canary_requests": 500, "max_duration": "1h"},
        "metrics": {"errors": {}, "accuracy": {}},
    }
)
RULE = policy(PLAN)
QUIET = {2000: (6000, 24_000, 60, 240)}


def snap(
    errors: dict[int, tuple[int, int, int, int]] | None = None,
    accuracy: dict[int, tuple[int, int, int, int]] | None = None,
    labels: dict[int, tuple[int, int, int, int]] | None = None,
    **kw: Any,
) -> StepSnapshot:
    starts = RULE.starts
    base: dict[str, Any] = {
        "weight_bp": np.array([2000]),
        "final": np.array([False]),
        "elapsed_s": np.array([1800.0]),
        "evidence_s": np.array([1795.0]),
        "canary_requests": np.array([6000]),
        "comparisons": {
            "errors": from_counts("errors", "baseline", errors or QUIET, starts),
            "accuracy": from_counts(
                "accuracy", "baseline", accuracy or {2000: (3000, 12_000, 300, 1200)}, starts
            ),
        },
        "labels": {
            "accuracy": from_counts(
                "labels", "baseline", labels or {2000: (6000, 24_000, 3000, 12_000)}, starts
            )
        },
        "label_coverage": {"accuracy": np.array([0.5])},
        "behind_s": np.array([5.0]),
        "lagging": ("baseline",),
    }
    for k, v in kw.items():
        if k == "label_coverage":
            base[k] = {"accuracy": np.array([v])}
        else:
            base[k] = np.array([v]) if not isinstance(v, tuple | dict) else v
    return StepSnapshot(**base)


def test_advance_when_everything_is_met() -> None:
    v = decide(snap(), RULE)
    assert (v.outcome, v.code) == (Outcome.ADVANCE, "ok")
    ev = {e.metric: e for e in v.evidence}["errors"]
    assert (ev.canary_n, ev.baseline_n, ev.canary_bad, ev.baseline_bad) == (6000, 24_000, 60, 240)
    assert not ev.alarmed and ev.threshold == pytest.approx(np.log(2 / 0.05))


def test_rollback_on_harm_even_before_the_minimum_duration() -> None:
    v = decide(snap(errors={2000: (6000, 24_000, 120, 240)}, elapsed_s=60.0), RULE)
    assert (v.outcome, v.code) == (Outcome.ROLLBACK, "harm")
    assert v.reason.startswith("errors: canary 2.00% (120/6000) vs baseline 1.00%")
    assert {e.metric: e.alarmed for e in v.evidence} == {"errors": True, "accuracy": False}


def test_a_harm_reason_says_what_an_accuracy_rate_counts() -> None:
    # 40% wrong on the canary vs 10% on the baseline: "accuracy: canary 40.00%" would read
    # as the canary's accuracy (the preflight demo printed "canary 97.83% vs baseline 21.74%"
    # for a candidate far worse than its baseline).
    v = decide(snap(accuracy={2000: (3000, 12_000, 1200, 1200)}), RULE)
    assert (v.outcome, v.code) == (Outcome.ROLLBACK, "harm")
    assert v.reason.startswith(
        "accuracy: canary wrong on 40.00% (1200/3000) vs baseline 10.00% (1200/12000)"
    )


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"elapsed_s": 300.0, "evidence_s": 295.0}, "too-short", "step ran 300s of 600s"),
        ({"canary_requests": 100}, "too-few-samples", "100 canary requests of 500"),
        ({"label_coverage": 0.2}, "labels-missing", "labels for 20% of requests"),
        (
            {"elapsed_s": 700.0, "evidence_s": 580.0, "behind_s": 120.0},
            "waiting-for-results",
            "waiting for baseline results: complete up to 120s ago",
        ),
    ],
)
def test_hold_says_why(changes: dict[str, Any], code: str, words: str) -> None:
    v = decide(snap(**changes), RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, code)
    assert words in v.reason


def test_a_step_past_its_maximum_duration_is_flagged() -> None:
    v = decide(snap(elapsed_s=4000.0, evidence_s=3990.0, canary_requests=100), RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, "max-duration-exceeded")
    assert "100 canary requests" in v.reason
    assert action_for(v.outcome, v.code, Mode.CANARY, Phase.PROGRESSING) is Action.HOLD
    assert action_for(v.outcome, v.code, Mode.CANARY, Phase.HOLDING) is None


def test_a_sample_ratio_mismatch_stops_the_accuracy_test_before_it_can_roll_back() -> None:
    # Labels for 70% of canary requests, 50% of baseline ones; as many wrong per label.
    labels = {2000: (6000, 24_000, 4200, 12_000)}
    accuracy = {2000: (4200, 12_000, 700, 1200)}  # the canary looks much worse
    v = decide(snap(labels=labels, accuracy=accuracy), RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, "sample-ratio-mismatch")
    assert "70.00% (4200/6000)" in v.reason
    # Without the mismatch the same accuracy evidence rolls back.
    assert decide(snap(accuracy=accuracy), RULE).outcome is Outcome.ROLLBACK


def test_unequal_label_coverage_with_equal_accuracy_is_not_harm() -> None:
    accuracy = {2000: (4200, 12_000, 420, 1200)}  # 10% wrong in both arms
    d = decide_many(snap(accuracy=accuracy, labels={2000: (6000, 24_000, 4200, 12_000)}), RULE)
    assert d.rollback["accuracy"][0] == -np.inf and d.outcome[0] != 2


def test_the_last_step_needs_every_metric_shown_acceptable() -> None:
    final: dict[str, Any] = {"final": (True,), "weight_bp": 5000}
    few = {5000: (3000, 3000, 30, 30)}
    v = decide(snap(errors=few, accuracy={5000: (1500, 1500, 150, 150)}, **final), RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, "not-yet-harmless")
    assert "errors not yet shown below 1.2x baseline + 0.005" in v.reason
    many = {5000: (100_000, 100_000, 1000, 1000)}
    acc = {5000: (50_000, 50_000, 5000, 5000)}
    v = decide(snap(errors=many, accuracy=acc, **final), RULE)
    assert v.outcome is Outcome.ADVANCE
    upper = {e.metric: e.upper for e in v.evidence}["errors"]
    assert upper is not None and upper < 1.2


def test_a_model_without_errors_is_promoted() -> None:
    final: dict[str, Any] = {"final": (True,), "weight_bp": 5000}
    acc = {5000: (30_000, 30_000, 3000, 3000)}
    v = decide(snap(errors={5000: (5000, 5000, 0, 0)}, accuracy=acc, **final), RULE)
    assert v.outcome is Outcome.ADVANCE, v.reason


def test_full_traffic_finalizes_after_its_minimum_duration() -> None:
    assert decide(snap(weight_bp=10_000), RULE).outcome is Outcome.FINALIZE
    v = decide(snap(weight_bp=10_000, elapsed_s=10.0, evidence_s=5.0), RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, "too-short")


def test_late_labels_of_an_earlier_step_can_still_roll_back_at_full_traffic() -> None:
    bad = {2000: (3000, 12_000, 600, 1200)}
    assert decide(snap(weight_bp=10_000, accuracy=bad), RULE).outcome is Outcome.ROLLBACK


def test_rollback_tolerance_moves_the_rollback_null_not_the_promotion_boundary() -> None:
    metrics = {2000: (6000, 24_000, 90, 240)}  # ratio 1.5 with plenty of evidence
    assert decide(snap(errors=metrics), RULE).outcome is Outcome.ROLLBACK
    doc = {
        "model": "m",
        "canary": "v2",
        "step": {"min_duration": "10m", "min_canary_requests": 500},
        "metrics": {"errors": {"rollback_tolerance": 0.6}, "accuracy": {}},
    }
    lenient = policy(parse_plan(doc))
    assert decide(snap(errors=metrics), lenient).outcome is Outcome.ADVANCE


def test_many_replicas_are_decided_as_each_alone() -> None:
    a, b = snap(), snap(errors={2000: (6000, 24_000, 120, 240)}, elapsed_s=60.0)
    fields: dict[str, Any] = {
        f: (
            {m: _stack(getattr(a, f)[m], getattr(b, f)[m]) for m in getattr(a, f)}
            if f in ("comparisons", "promotions", "labels")
            else {m: np.concatenate([getattr(a, f)[m], getattr(b, f)[m]]) for m in getattr(a, f)}
            if f == "label_coverage"
            else getattr(a, f) + getattr(b, f)
            if f == "lagging"
            else None
            if getattr(a, f) is None
            else np.concatenate([getattr(a, f), getattr(b, f)])
        )
        for f in StepSnapshot.__dataclass_fields__
    }
    both = StepSnapshot(**fields)
    d = decide_many(both, RULE)
    assert d.outcomes() == [decide(a, RULE).outcome, decide(b, RULE).outcome]


LATENCY_RULE = policy(
    parse_plan(
        {
            "model": "m",
            "canary": "v2",
            "step": {"min_duration": "10m", "min_canary_requests": 500, "max_duration": "1h"},
            "metrics": {"errors": {}, "latency_p95": {}},
        }
    )
)


def _latency_snap(
    fixed: bool, errors: dict[int, tuple[int, int, int, int]] = QUIET
) -> StepSnapshot:
    starts = LATENCY_RULE.starts
    comparisons = {
        "errors": from_counts("errors", "baseline", errors, starts),
        # Before the thresholds are fixed no item is timed: no latency evidence at all.
        "latency_p95": from_counts(
            "latency_p95", "control", {2000: (0, 0, 0, 0)} if not fixed else QUIET, starts
        ),
    }
    return replace(
        snap(),
        comparisons=comparisons,
        labels={},
        label_coverage={},
        thresholds_fixed=np.array([fixed]),
    )


def test_a_step_holds_until_the_latency_thresholds_are_fixed() -> None:
    v = decide(_latency_snap(fixed=False), LATENCY_RULE)
    assert (v.outcome, v.code) == (Outcome.HOLD, "waiting-for-thresholds")
    assert "latency thresholds not fixed yet" in v.reason
    assert action_for(v.outcome, v.code, Mode.CANARY, Phase.PROGRESSING) is None
    v = decide(_latency_snap(fixed=True), LATENCY_RULE)
    assert (v.outcome, v.code) == (Outcome.ADVANCE, "ok"), v.reason


def test_harm_rolls_back_while_the_latency_thresholds_are_not_fixed() -> None:
    v = decide(_latency_snap(False, errors={2000: (6000, 24_000, 120, 240)}), LATENCY_RULE)
    assert (v.outcome, v.code) == (Outcome.ROLLBACK, "harm")


def test_a_plan_without_latency_needs_no_thresholds() -> None:
    v = decide(snap(thresholds_fixed=False), RULE)
    assert (v.outcome, v.code) == (Outcome.ADVANCE, "ok")


def _stack(x: Any, y: Any) -> Any:
    stacked = {
        f: np.concatenate([getattr(x, f), getattr(y, f)])
        for f in ("canary_n", "canary_bad", "other_n", "other_bad", "phi")
    }
    return replace(x, **stacked)
