"""The demo's pure accounting and statistics: lost/duplicate counts, per-version numbers,
the paired shadow comparison, the decisions that moved the rollout, the demo plan."""

from __future__ import annotations

from collections import Counter

import pytest

from model_canary.agents.demo.events import DecisionRow, PhaseChange, acted, weight_steps
from model_canary.agents.demo.plan import Scenario, demo_plan
from model_canary.agents.demo.summary import (
    Sample,
    account,
    over_time,
    quantile,
    requests_per_arm,
    shadow_comparison,
    version_views,
    wilson,
)
from model_canary.streams.errors import ConfigError
from model_canary.streams.plan import parse_plan


def sample(
    rid: str,
    version: str = "v1",
    *,
    t: float = 1.0,
    arm: str = "baseline",
    served: bool = True,
    error: bool = False,
    latency: float = 2.0,
    prediction: str | None = "1",
    correct: bool | None = True,
) -> Sample:
    return Sample(t, rid, version, arm, served, error, latency, prediction, correct)


def test_accounting_counts_unanswered_and_repeated_requests() -> None:
    tally = account(["a", "b", "c", "d"], Counter({"a": 1, "b": 3, "d": 1, "x": 1}))
    assert (tally.sent, tally.answered, tally.lost, tally.duplicates) == (4, 3, 1, 1)


def test_version_view_leaves_errors_out_of_latency_and_accuracy() -> None:
    rows = [
        sample("a", latency=1.0, correct=True),
        sample("b", latency=3.0, correct=False),
        sample("c", latency=500.0, error=True, prediction=None, correct=None),
        sample("d", latency=2.0, correct=None),  # no label
    ]
    v = version_views(rows)["v1"]
    assert (v.requests, v.errors, v.labelled) == (4, 1, 2)
    assert v.p50_ms == 2.0 and v.p99_ms == 3.0
    assert v.accuracy == 0.5
    assert v.accuracy_low is not None and v.accuracy_high is not None
    assert 0 < v.accuracy_low < 0.5 < v.accuracy_high < 1


def test_wilson_interval_narrows_with_more_trials_and_stays_in_bounds() -> None:
    assert wilson(0, 0) is None
    small, large = wilson(9, 10), wilson(900, 1000)
    assert small is not None and large is not None
    assert small[1] - small[0] > large[1] - large[0]
    low, high = wilson(10, 10) or (0.0, 0.0)
    assert round(low, 3) == 0.722 and high == 1.0


def test_quantile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.99), quantile(values, 1.0)) == (
        50.0,
        99.0,
        100.0,
    )


def test_over_time_buckets_by_version_and_skips_empty_buckets() -> None:
    rows = [sample("a", t=0.2), sample("b", t=0.7, error=True), sample("c", "v2", t=5.5)]
    series = over_time(rows, bucket_s=1.0, end_s=10)
    assert [(t, v.requests, v.errors) for t, v in series["v1"]] == [(0.5, 2, 1)]
    assert [t for t, _ in series["v2"]] == [5.5]


def test_shadow_comparison_pairs_served_and_shadow_answers_of_one_request() -> None:
    rows = [
        sample("a", latency=2.0, prediction="1"),
        sample("a", "v2", arm="canary", served=False, latency=5.0, prediction="1"),
        sample("b", latency=2.0, prediction="2"),
        sample("b", "v2", arm="canary", served=False, latency=3.0, prediction="0"),
        sample("c", "v2", arm="canary", served=False, prediction="0"),  # no served pair
        sample("d", error=True),
        sample("d", "v2", arm="canary", served=False),
    ]
    cmp = shadow_comparison(rows)
    assert cmp.pairs == 2
    assert cmp.agreement == 0.5
    assert cmp.latency_diff_p50_ms == 2.0 and cmp.latency_diff_mean_ms == 2.0
    assert requests_per_arm(rows) == {"baseline": 3, "shadow": 4}
    assert shadow_comparison([sample("a")]).agreement is None


def test_acted_keeps_moves_once_and_drops_holds() -> None:
    rows = [
        DecisionRow(1, "HOLD", 0, 1.0, "too-short"),
        DecisionRow(2, "ADVANCE", 0, 1.0, "ok"),
        DecisionRow(3, "ADVANCE", 0, 1.0, "ok"),  # repeated while the command is applied
        DecisionRow(9, "ROLLBACK", 1, 20.0, "harm"),
    ]
    assert [(d.t, d.outcome) for d in acted(rows)] == [(2, "ADVANCE"), (9, "ROLLBACK")]
    assert acted(rows)[0].to_json() == {
        "action": "ADVANCE",
        "step": 0,
        "weight_percent": 1.0,
        "t_s": 2.0,
        "reason": "ok",
    }
    changes = [PhaseChange(4.0, "start", "operator", "Progressing", 1.0, "")]
    assert weight_steps(changes) == [(0.0, 0.0), (4.0, 1.0)]


def test_demo_plan_is_valid_and_scales_with_speed() -> None:
    slow = parse_plan(demo_plan(shadow=False, speed=1.0, rate=50))
    fast = parse_plan(demo_plan(shadow=True, speed=4.0, rate=50))
    assert slow.steps_bp == (100, 2000, 5000, 10000) and slow.mode == "canary"
    assert fast.mode == "shadow"
    assert fast.min_step_seconds == slow.min_step_seconds / 4
    # The 1% step can meet its minimum canary requests within its minimum duration.
    assert slow.min_canary_requests <= 0.01 * 50 * slow.min_step_seconds
    assert set(slow.metrics) == {"errors", "latency_p95", "accuracy"}
    assert "accuracy" not in fast.metrics, "see demo_plan: labels of shadow pairs"
    assert slow.metrics["latency_p95"].rollback_tolerance == 1.0


def test_scenarios_check_their_regression() -> None:
    assert Scenario("good").expected_phase == "Succeeded"
    assert Scenario("bad", "accuracy").canary_model() == "broken"
    assert "--inject-error-rate" in Scenario("bad", "errors").canary_faults()
    with pytest.raises(ConfigError):
        Scenario("bad")
    with pytest.raises(ConfigError):
        Scenario("good", "errors")
