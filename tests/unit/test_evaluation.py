"""The evaluator's pure logic: snapshots of a step from the evidence state, the policy, the
command a verdict asks for, latency thresholds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from model_canary.streams.enums import Action, Mode, Outcome
from model_canary.streams.evaluation import (
    action_for,
    plan_of,
    policy,
    step_snapshot,
    thresholds_from_hist,
)
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.columns import histogram
from model_canary.streams.evidence.state import CLOSE_MS, RolloutEvidence
from model_canary.streams.messages import OffsetRange, Phase, RolloutState, epoch_ms, utc_now
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats import ArmCounts, Verdict

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
        plan_json=PLAN.to_json(),
    )
    base.update(fields)
    return RolloutState(**base)


class Feeder:
    """Evidence of one rollout as its router and workers write it."""

    def __init__(self, warmup_s: float = 10.0) -> None:
        self.evidence = RolloutEvidence.new("iris", "r1", warmup_s=warmup_s)
        self.offset = 0

    def _range(self, n: int) -> tuple[OffsetRange, ...]:
        self.offset += n + 1
        return (
            OffsetRange(topic="in", partition=0, first=self.offset - n - 1, last=self.offset - 2),
        )

    def serve(
        self,
        arm: str,
        second: int,
        errors: list[bool],
        *,
        weight: int = 100,
        latency: float = 10.0,
        thresholds: Thresholds | None = None,
    ) -> None:
        n = len(errors)
        routed = EvidenceBuilder("routed", source=f"router-{arm}")
        routed.add_routed(Cell("iris", "r1", "", arm, True, weight, second), list(range(n)))
        served = EvidenceBuilder("served", source=f"worker-{arm}")
        cell = Cell("iris", "r1", "v2" if arm == "canary" else "v1", arm, True, weight, second)
        served.add_batch(
            [cell] * n,
            buckets=list(range(n)),
            errors=errors,
            latencies_ms=[latency] * n,
            batch_latency_ms=latency,
            thresholds=[thresholds] * n,
        )
        for ev in routed.build(self._range(n)) + served.build(self._range(n)):
            assert self.evidence.apply(ev)

    def label(self, arm: str, second: int, correct: list[bool], weight: int = 100) -> None:
        b = EvidenceBuilder("labelled", source="joiner")
        cell = Cell("iris", "r1", "v2" if arm == "canary" else "v1", arm, True, weight, second)
        for i, ok in enumerate(correct):
            b.add_label(cell, i, ok)
        for ev in b.build(self._range(len(correct))):
            assert self.evidence.apply(ev)

    def settle(self, second: int) -> None:
        self.evidence.settle((second + 1) * 1000 + CLOSE_MS)


def test_counts_are_kept_per_weight_and_arm_and_warmup_is_left_out() -> None:
    f = Feeder()
    t0 = 1_700_000_000
    f.serve("canary", t0, [True])  # the weight's first second: warm-up (10 s)
    f.serve("baseline", t0 + 5, [True], weight=2000)  # that weight's warm-up
    f.serve("canary", t0 + 20, [True, False])
    f.serve("baseline", t0 + 20, [False] * 3)
    f.serve("baseline", t0 + 20, [True], weight=2000)
    f.settle(t0 + 20)
    snap = step_snapshot(f.evidence, state(), PLAN, NOW)
    assert snap.metrics["errors"] == {100: ArmCounts(2, 3, 1, 0), 2000: ArmCounts(0, 1, 0, 1)}
    assert snap.canary_requests == 2, "the current weight's requests routed after warm-up"
    warm = f.evidence.tally.warmup_served[(100, "canary")]
    assert (warm.requests, warm.errors) == (1, 1)


def test_latency_counts_only_answers_compared_with_the_rollouts_thresholds() -> None:
    f = Feeder(warmup_s=0)
    t0 = 1_700_000_000
    f.serve("baseline", t0, [False] * 4, latency=50.0)  # before thresholds: none compared
    t = Thresholds(revision=3, p95=20.0, p99=40.0)
    f.serve("canary", t0 + 1, [False, False, True], latency=30.0, thresholds=t)
    f.serve("baseline", t0 + 1, [False] * 2, latency=10.0, thresholds=t)
    f.settle(t0 + 1)
    snap = step_snapshot(f.evidence, state(), PLAN, NOW)
    assert snap.metrics["latency_p95"][100] == ArmCounts(2, 2, 2, 0)
    assert int(f.evidence.threshold_hist.sum()) == 4


def test_labels_coverage_and_the_final_step() -> None:
    f = Feeder(warmup_s=0)
    t0 = 1_700_000_000
    f.serve("canary", t0, [False] * 10)
    f.label("canary", t0, [False])
    f.label("baseline", t0, [True])
    f.settle(t0)
    snap = step_snapshot(f.evidence, state(), PLAN, NOW)
    assert snap.canary_requests == 10 and snap.weight_bp == 100
    assert snap.label_coverage == 0.2
    assert snap.metrics["accuracy"][100] == ArmCounts(1, 1, 1, 0)
    assert snap.labelled == {100: (1, 1)}
    assert 299 <= snap.elapsed_s <= 301
    assert snap.final is False
    assert step_snapshot(f.evidence, state(step_index=1, weight_bp=2000), PLAN, NOW).final


def test_a_lagging_arm_keeps_its_second_out_of_the_snapshot() -> None:
    f = Feeder(warmup_s=0)
    t0 = epoch_ms(NOW) // 1000 - 60
    f.serve("canary", t0, [True] * 5)
    # The baseline was routed requests in the same second but has not answered them.
    routed = EvidenceBuilder("routed", source="router-b")
    routed.add_routed(Cell("iris", "r1", "", "baseline", True, 100, t0), [1, 2, 3])
    for ev in routed.build(f._range(3)):
        f.evidence.apply(ev)
    f.settle(t0 + 30)
    snap = step_snapshot(f.evidence, state(), PLAN, NOW)
    assert snap.metrics["errors"] == {}, "nothing the baseline has not answered"
    assert [lag.arm for lag in f.evidence.lagging(epoch_ms(NOW))] == ["baseline"]


def test_policy_from_plan() -> None:
    p = policy(PLAN)
    assert p.min_duration_s == 60 and p.min_canary_requests == 5
    assert p.min_label_coverage == 0.2 and p.tolerance("accuracy") == 0.02
    assert p.rollback_tolerance("errors") == 0.1 and p.rollback_tolerance("latency_p95") == 0.0
    assert plan_of(state()).warmup_seconds == 10
    assert plan_of(state(plan_json=None)).steps_bp == (100, 2000, 5000, 10000)


def test_a_verdict_asks_for_the_command_it_implies() -> None:
    s = state()
    assert action_for(s, Verdict(Outcome.ADVANCE, "ok", "")) is Action.ADVANCE
    assert action_for(s, Verdict(Outcome.ROLLBACK, "harm", "")) is Action.ROLLBACK
    assert action_for(s, Verdict(Outcome.FINALIZE, "ok", "")) is Action.FINALIZE
    assert action_for(s, Verdict(Outcome.HOLD, "sample-ratio-mismatch", "")) is Action.HOLD
    assert (
        action_for(state(phase=Phase.HOLDING), Verdict(Outcome.HOLD, "max-duration-exceeded", ""))
        is None
    )
    assert action_for(s, Verdict(Outcome.HOLD, "waiting-for-results", "")) is None
    shadow = state(mode=Mode.SHADOW)
    assert action_for(shadow, Verdict(Outcome.ADVANCE, "ok", "")) is None
    assert action_for(shadow, Verdict(Outcome.ROLLBACK, "harm", "")) is Action.ROLLBACK


def test_thresholds_are_bin_edges_above_the_quantiles() -> None:
    latencies = np.concatenate([np.full(1900, 5.0), np.full(80, 50.0), np.full(20, 500.0)])
    t = thresholds_from_hist(histogram(latencies), min_items=2000)
    assert t is not None
    assert 5.0 < t["p95"] < 5.2 * 1.02 and 50.0 < t["p99"] < 52.0
    assert thresholds_from_hist(histogram(latencies[:1999]), min_items=2000) is None
    assert (latencies > t["p95"]).mean() <= 0.05 and (latencies > t["p99"]).mean() <= 0.01
