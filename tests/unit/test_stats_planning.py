from __future__ import annotations

import argparse
import json

import pytest

from model_canary.agents.cli import plan_cmd
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
        label_coverage=0.5, design_effect=1.0, window=600.0, json=True,
    )  # fmt: skip
    assert plan_cmd.run_check(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rate_per_min"] == 1000.0 and len(doc["steps"]) == 4
    assert doc["hours_to_finalize"] < 1
