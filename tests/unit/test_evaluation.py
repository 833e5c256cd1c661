"""The evaluator's pure logic: snapshots of a step from the evidence state (through the
statistics' tally), the rollout's plan, latency thresholds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from model_canary.streams.evaluation import due_thresholds, plan_of, step_snapshot
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.columns import bin_upper_ms
from model_canary.streams.evidence.state import CLOSE_MS, RolloutEvidence
from model_canary.streams.messages import OffsetRange, Phase, RolloutState, epoch_ms, utc_now
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats import decide, policy, tally_for
from model_canary.streams.stats.compare import Comparison
from model_canary.streams.stats.layout import arm_ranges

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
RULE = policy(PLAN)


def first_bucket(arm: str, weight: int) -> int:
    """The first cohort bucket of ``arm`` at ``weight`` (the plan routes a control arm)."""
    return arm_ranges(weight, control=True)[arm][0]


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
        plan = parse_plan({**_doc(), "step": {"warmup": f"{warmup_s}s"}})
        self.evidence = RolloutEvidence.new("iris", "r1", tally_for(plan))
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
        buckets = [first_bucket(arm, weight) + i for i in range(n)]
        routed = EvidenceBuilder("routed", source=f"router-{arm}")
        routed.add_routed(Cell("iris", "r1", "", arm, True, weight, second), buckets)
        served = EvidenceBuilder("served", source=f"worker-{arm}")
        cell = Cell("iris", "r1", "v2" if arm == "canary" else "v1", arm, True, weight, second)
        served.add_batch(
            [cell] * n,
            buckets=buckets,
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
            b.add_label(cell, first_bucket(arm, weight) + i, ok)
        for ev in b.build(self._range(len(correct))):
            assert self.evidence.apply(ev)

    def settle(self, second: int) -> None:
        self.evidence.settle((second + 1) * 1000 + CLOSE_MS)


def _doc() -> dict[str, Any]:
    return {"model": "iris", "canary": "v2", "steps": [1, 20, 100]}


def counts(c: Comparison) -> dict[int, tuple[int, int, int, int]]:
    """Per weight: canary n, comparator n, canary bad, comparator bad."""
    return {
        w: (
            int(c.canary_n[0, k]),
            int(c.other_n[0, k]),
            int(c.canary_bad[0, k]),
            int(c.other_bad[0, k]),
        )
        for k, w in enumerate(c.weights)
        if c.canary_n[0, k] or c.other_n[0, k]
    }


def test_counts_are_kept_per_weight_and_arm_and_warmup_is_left_out() -> None:
    f = Feeder()
    t0 = 1_700_000_000
    f.serve("canary", t0, [True])  # the weight's first second: warm-up (10 s)
    f.serve("baseline", t0 + 5, [True], weight=2000)  # that weight's warm-up
    f.serve("canary", t0 + 20, [True, False])
    f.serve("baseline", t0 + 20, [False] * 3)
    f.serve("baseline", t0 + 20, [True], weight=2000)
    f.settle(t0 + 20)
    snap = step_snapshot(f.evidence, state(), RULE, NOW)
    assert counts(snap.comparisons["errors"]) == {100: (2, 3, 1, 0), 2000: (0, 1, 0, 1)}
    assert snap.canary_requests.tolist() == [2], "the current weight's requests after warm-up"
    assert f.evidence.totals()["canary"]["errors"] == 2, "warm-up is counted in the totals"


def test_latency_counts_only_answers_compared_with_the_rollouts_thresholds() -> None:
    f = Feeder(warmup_s=0)
    t0 = 1_700_000_000
    f.serve("baseline", t0, [False] * 4, latency=50.0)  # before thresholds: none compared
    t = Thresholds(revision=3, p95=20.0, p99=40.0)
    f.serve("canary", t0 + 1, [False, False, True], latency=30.0, thresholds=t)
    f.serve("control", t0 + 1, [False] * 2, latency=10.0, thresholds=t)
    f.settle(t0 + 1)
    snap = step_snapshot(f.evidence, state(), RULE, NOW)
    assert snap.comparisons["latency_p95"].comparator == "control"
    assert counts(snap.comparisons["latency_p95"]) == {100: (2, 2, 2, 0)}
    assert int(f.evidence.tally.hist.sum()) == 4, "the baseline's answers before thresholds"


def test_labels_coverage_and_the_final_step() -> None:
    f = Feeder(warmup_s=0)
    t0 = 1_700_000_000
    f.serve("canary", t0, [False] * 10)
    f.label("canary", t0, [False])
    f.label("baseline", t0, [True])
    f.settle(t0)
    snap = step_snapshot(f.evidence, state(), RULE, NOW)
    assert snap.canary_requests.tolist() == [10] and snap.weight_bp.tolist() == [100]
    assert snap.label_coverage["accuracy"].tolist() == [0.2]
    assert counts(snap.comparisons["accuracy"]) == {100: (1, 1, 1, 0)}
    assert 299 <= snap.elapsed_s[0] <= 301
    assert not snap.final[0]
    assert step_snapshot(f.evidence, state(step_index=1, weight_bp=2000), RULE, NOW).final[0]


def test_a_lagging_arm_keeps_its_second_out_and_is_named() -> None:
    f = Feeder(warmup_s=0)
    t0 = epoch_ms(NOW) // 1000 - 60
    f.serve("canary", t0, [True] * 5)
    # The baseline was routed requests in the same second but has not answered them.
    routed = EvidenceBuilder("routed", source="router-b")
    routed.add_routed(Cell("iris", "r1", "", "baseline", True, 100, t0), [6001, 6002])
    for ev in routed.build(f._range(2)):
        f.evidence.apply(ev)
    f.evidence.settle(epoch_ms(NOW))
    started = NOW - timedelta(seconds=90)  # the step ran 90 s, the baseline answered 29 s
    snap = step_snapshot(f.evidence, state(step_started_at=started), RULE, NOW)
    assert counts(snap.comparisons["errors"]) == {}, "nothing the baseline has not answered"
    assert snap.lagging == ("baseline",) and snap.behind_s[0] >= 60
    verdict = decide(snap, RULE)
    assert verdict.code == "waiting-for-results"
    assert "waiting for baseline results" in verdict.reason


def test_the_plan_of_a_rollout() -> None:
    assert plan_of(state()).warmup_seconds == 10
    assert plan_of(state(plan_json=None)).steps_bp == (100, 2000, 5000, 10000)
    assert RULE.min_duration_s == 60 and RULE.min_canary_requests == 5
    assert RULE.min_label_coverage == {"accuracy": 0.2}
    assert RULE.metrics["errors"].rollback_tolerance == 0.1


def test_thresholds_wait_for_enough_baseline_answers() -> None:
    tally = tally_for(PLAN)
    early = state(step_started_at=NOW - timedelta(seconds=10))
    tally.add_latency_hist("baseline", bins=[[400]], counts=[[1500]])
    assert due_thresholds(tally, early, PLAN, NOW) is None, "1,000 only after the first step"
    thresholds = due_thresholds(tally, state(), PLAN, NOW)  # the step ran its minimum
    assert thresholds is not None and set(thresholds) == {"p95", "p99"}
    assert thresholds["p95"] == thresholds["p99"] == bin_upper_ms(400)
    assert due_thresholds(tally, state(latency_thresholds_ms=thresholds), PLAN, NOW) is None
    tally.add_latency_hist("control", bins=[[480]], counts=[[3500]])
    late = due_thresholds(tally, early, PLAN, NOW)
    assert late is not None and late["p95"] > 130.0
    assert not np.isnan(list(late.values())).any()
