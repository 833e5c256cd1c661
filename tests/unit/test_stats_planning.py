from __future__ import annotations

import argparse
import json

import pytest

from model_canary.agents.cli import plan_cmd
from model_canary.streams.errors import ConfigError
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats.planning import Traffic, TrafficSample, check

PLAN = parse_plan({"model": "m", "canary": "v2"})


def test_steps_last_their_minimum_unless_the_canary_needs_longer_to_serve_enough() -> None:
    busy = check(PLAN, Traffic(1000, {"errors": 0.01}))
    assert [s.bound_by for s in busy.steps] == [
        "min_canary_requests",
        "min_duration",
        "promotion",
        "min_duration",
    ]
    assert busy.steps[0].canary_requests == pytest.approx(PLAN.min_canary_requests)
    quiet = check(PLAN, Traffic(60, {"errors": 0.01}))
    assert quiet.steps[0].minutes > 80, "a 1% step at 60 requests/min needs 50 canary requests"
    assert any("cannot be shown acceptable" in w for w in quiet.warnings)


def test_bigger_regressions_are_found_sooner_and_more_traffic_finds_them_sooner() -> None:
    r = check(PLAN, Traffic(1000, {"errors": 0.01}))
    by = {(d.metric, d.ratio): d for d in r.detections}
    two, half = by[("errors", 2.0)], by[("errors", 1.5)]
    assert two.canary_requests is not None and half.canary_requests is not None
    assert two.canary_requests < half.canary_requests
    faster = check(PLAN, Traffic(5000, {"errors": 0.01}))
    f2 = {(d.metric, d.ratio): d for d in faster.detections}[("errors", 2.0)]
    assert f2.minutes is not None and two.minutes is not None and f2.minutes < two.minutes


def test_clustered_traffic_needs_more_evidence() -> None:
    plain = check(PLAN, Traffic(1000, {"errors": 0.01}))
    clustered = check(PLAN, Traffic(1000, {"errors": 0.01}, design_effect=3.0))
    assert clustered.hours_to_finalize > plain.hours_to_finalize


def test_traffic_from_evidence() -> None:
    sample = TrafficSample()
    assert sample.traffic() is None, "no routed request: no traffic"
    for second in (100, 101, 102, 103):
        sample.add("routed", "baseline", second, requests=9)
        sample.add("routed", "canary", second, requests=1)
        sample.add("served", "baseline", second, requests=9, errors=1)
        sample.add("served", "canary", second, requests=1, errors=1)  # not the base rate
    t = sample.traffic(design_effect=2.0)
    assert t is not None and t.rate_per_min == 600.0 and t.base("errors") == 4 / 36
    assert t.label_coverage == 0.5 and t.design_effect == 2.0, "no labels: the default"
    sample.add("labelled", "baseline", 101, labelled=18, incorrect=3)
    sample.add("labelled", "canary", 101, labelled=1, incorrect=1)
    t = sample.traffic()
    assert t is not None and t.label_coverage == 0.5 and t.base("accuracy") == 3 / 18
    assert sample.traffic(label_coverage=0.9) is not None


def test_the_command_with_flags_needs_no_broker(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(
        model="iris", plan=None, rate=1000.0, error_rate=0.01, accuracy=None, outcome_rate=[],
        label_coverage=0.5, design_effect=1.0, window=600.0, json=True, batch_size=None,
    )  # fmt: skip
    assert plan_cmd.run_check(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rate_per_min"] == 1000.0 and len(doc["steps"]) == 4
    assert doc["hours_to_finalize"] < 1 and doc["batch_size"] == 1.0
    args.batch_size = 0.5
    with pytest.raises(ConfigError, match="--batch-size"):
        plan_cmd.run_check(args)


def test_latency_timed_per_batch_counts_batches_not_answers() -> None:
    """Answers of a micro-batch timed as one carry one observation between them: the latency
    forecasts (roll-back and promotion) need about ``batch_size`` times the answers; errors
    (each answer's own) are unchanged."""
    rate = 60_000.0
    plain = check(PLAN, Traffic(rate, {"errors": 0.01}))
    batched = check(PLAN, Traffic(rate, {"errors": 0.01}, batch_size=8.0))
    for metric in ("latency_p95", "latency_p99"):
        one, eight = plain.promote_seconds[metric], batched.promote_seconds[metric]
        assert one is not None and eight is not None
        assert eight == pytest.approx(8 * one, rel=1e-9), "promotion counts batches"
    assert batched.promote_seconds["errors"] == plain.promote_seconds["errors"]
    det = {(d.metric, d.ratio): d.canary_requests for d in plain.detections}
    bat = {(d.metric, d.ratio): d.canary_requests for d in batched.detections}
    assert bat[("errors", 2.0)] == det[("errors", 2.0)]
    slow, fast = bat[("latency_p95", 2.0)], det[("latency_p95", 2.0)]
    assert slow is not None and fast is not None and slow > 4 * fast
    # Unequal batches: the roll-back test's design effect is the size-weighted mean.
    uneven = Traffic(rate, batch_size=8.0, batch_clump=20.0, design_effect=1.5)
    assert uneven.latency_design_effect() == pytest.approx(20.5)
    assert uneven.design_effect_of("errors") == 1.5


def test_batch_size_from_evidence() -> None:
    sample = TrafficSample()
    for second in (100, 101):
        sample.add("routed", "baseline", second, requests=90)
        sample.add("routed", "canary", second, requests=10)
        # 90 answers in batches of 10, 20, 60 (sum of squares 4,100), timed per batch
        sample.add("served", "baseline", second, requests=90, batches=3, batch_m2=4100)
        sample.add("served", "canary", second, requests=10, batches=10, batch_m2=10)
    t = sample.traffic()
    assert t is not None and t.batch_size == 30.0
    assert t.batch_clump == pytest.approx(4100 / 90)
    plain = TrafficSample()
    plain.add("routed", "baseline", 100, requests=5)
    plain.add("served", "baseline", 100, requests=5)  # timed per answer: no batches given
    t = plain.traffic()
    assert t is not None and t.batch_size == 1.0 and t.latency_design_effect() == 1.0


def test_plan_check_reads_the_records_workers_publish() -> None:
    """The traffic measured from records the product's own evidence builder wrote: the
    baseline's answers over each latency threshold, and its batches as the evaluator counts
    them (a worker that times micro-batches); the canary's never set the base rates."""
    t0 = 1_700_000_000
    thresholds = Thresholds(revision=2, p95=20.0, p99=40.0)
    sample = TrafficSample()
    for arm, version, sizes in (("baseline", "v1", (4, 4, 2)), ("canary", "v2", (1, 1))):
        cell = Cell("m", "ro1", version, arm, True, 100, t0)
        routed = EvidenceBuilder("routed", source="router")
        routed.add_routed(Cell("m", "ro1", "", arm, True, 100, t0), [7] * sum(sizes))
        served = EvidenceBuilder("served", source=f"worker-{version}")
        for i, n in enumerate(sizes):
            latency = 50.0 if i == 0 else 10.0  # the first batch over both thresholds
            served.add_batch(
                [cell] * n,
                buckets=[7] * n,
                errors=[False] * n,
                latencies_ms=[latency] * n,
                batch_latency_ms=latency,
                thresholds=[thresholds] * n,
            )
        for ev in routed.build(()) + served.build(()):
            sample.add_record(ev)
    t = sample.traffic()
    assert t is not None and t.rate_per_min == 12 * 60
    assert t.base("latency_p95") == t.base("latency_p99") == 4 / 10, "answers over: 4 of 10"
    assert t.base("latency_p95", "batch") == 1 / 3, "batches over: 1 of 3"
    assert t.batch_size == 10 / 3 and t.batch_clump == (16 + 16 + 4) / 10
