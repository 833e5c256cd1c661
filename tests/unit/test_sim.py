from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_canary.agents.cli import sim_cmd
from model_canary.streams.sim.catalogue import BY_NAME, SCENARIOS
from model_canary.streams.sim.engine import scenario_plan, simulate
from model_canary.streams.sim.oracle import exceedance
from model_canary.streams.sim.report import summary, wilson
from model_canary.streams.sim.runner import run
from model_canary.streams.sim.scenario import (
    ScenarioError,
    Serving,
    load_scenario,
    scenario_from_doc,
)
from model_canary.streams.sim.traffic import Population, serve
from model_canary.streams.stats.layout import BUCKETS
from model_canary.streams.stats.tally import TRASH


def test_every_builtin_scenario_round_trips_through_its_file_format() -> None:
    for s in SCENARIOS:
        assert scenario_from_doc(s.to_doc()) == s


def test_a_scenario_file_is_validated_with_the_field_named(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntraffic: {rate: [[0, 600], [30, 1200]], users: 50}\n")
    s = load_scenario(path)
    assert (s.traffic.rate_at(10), s.traffic.rate_at(45), s.traffic.users) == (600, 1200, 50)
    for doc, where in (
        ({"serving": {"error_rate": 2}}, "serving.error_rate"),
        ({"canary": {"latency_unit": "box"}}, "canary.latency_unit"),
        ({"traffic": {"rate": "fast"}}, "traffic.rate"),
        ({"colour": "red"}, "unknown field"),
    ):
        with pytest.raises(ScenarioError, match=where):
            scenario_from_doc(doc)


def test_the_regression_applies_from_its_weight_and_the_before_overrides_below() -> None:
    s = BY_NAME["harm-at-50"]
    assert (s.arm("canary", 2000).latency_scale, s.arm("canary", 5000).latency_scale) == (0.9, 1.1)
    assert s.arm("baseline", 5000).latency_scale == 1.0


def test_one_second_of_serving_is_summarised_like_a_worker_would() -> None:
    s = scenario_from_doc(
        {"serving": {"max_batch": 8, "batch_failure": 0.2}, "traffic": {"rate": 6000}}
    )
    rng = np.random.default_rng(1)
    pop = Population.new(s, 4, rng)
    cold = np.ones((4, 3), dtype=bool)
    thr = np.array([[80.0, 160.0]] * 4)
    cells = serve(s, pop, np.arange(4), np.array([2000] * 4), True, 0, thr, cold, rng)
    n = cells.counts[..., 0]
    assert (n.sum(axis=2) == cells.routed).all(), "every routed request is in a bucket row"
    real = cells.buckets != TRASH
    assert (cells.buckets[real] < BUCKETS).all() and (n[~real] == 0).all()
    canary = cells.buckets[:, 0][real[:, 0]]
    assert (canary < 2000).all()
    errors, timed, p95, p99 = (cells.counts[..., i] for i in range(1, 5))
    assert (timed == n - errors).all() and (p99 <= p95).all() and (p95 <= timed).all()
    assert not cold.any(), "every arm served its first batch"
    m2, e2, em = cells.batch[..., 0], cells.batch[..., 1], cells.batch[..., 2]
    assert (m2 >= cells.routed).all() and (e2 <= em + 1e-9).all()


def test_the_oracle_knows_the_exceedance_of_a_slowed_canary() -> None:
    base = Serving()
    threshold = base.latency_ms * math.exp(base.latency_sigma * 2.326348)  # the p99
    assert exceedance(base, threshold) == pytest.approx(0.01, rel=1e-4)
    assert exceedance(replace(base, latency_scale=1.3), threshold) == pytest.approx(
        0.0358, abs=2e-4
    )
    assert exceedance(replace(base, tail_scale=1.3), threshold) == pytest.approx(0.0358, abs=2e-4)


def test_a_short_run_decides_with_the_evaluators_code() -> None:
    aa = simulate(replace(BY_NAME["aa"], minutes=12), 6, 5)
    assert (aa.rollback_s < 0).all()
    assert set(aa.last_code) <= {"too-short", "too-few-samples", "not-yet-harmless", "ok"}
    harm = simulate(replace(BY_NAME["errors"], canary={"error_rate": 0.3}, minutes=10), 6, 5)
    assert (harm.rollback_s > 0).all() and harm.oracle_defined


def test_runs_reproduce_from_their_seed_whatever_the_processes() -> None:
    s = replace(BY_NAME["errors"], canary={"error_rate": 0.1}, minutes=8)
    one = run([s], replications=5, seed=11, processes=1).results[0]
    two = run([s], replications=5, seed=11, processes=2).results[0]
    assert np.array_equal(one.rollback_s, two.rollback_s)
    assert np.array_equal(one.rollback_canary, two.rollback_canary)


def test_the_report_states_targets_with_intervals() -> None:
    s = replace(BY_NAME["aa"], minutes=5)
    doc = summary(run([s], replications=4, seed=1))
    aa = doc["scenarios"]["aa"]
    assert aa["false_rollback"]["rate"] == 0.0 and aa["false_rollback"]["ci95"][1] > 0
    assert any(t["target"].startswith("aa: false rollback") for t in doc["targets"])
    lo, hi = wilson(50, 1000)
    assert lo < 0.05 < hi


def test_the_cli_prints_the_json_last(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"name": "tiny", "minutes": 3, "traffic": {"rate": 120}}))
    args = argparse.Namespace(
        replications=3, seed=1, scenario=None, scenario_file=[path], processes=1, json_only=False
    )
    assert sim_cmd.run_sim(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(lines[-1])
    assert doc["replications"] == 3 and set(doc["scenarios"]) == {"tiny"}
    assert scenario_plan(load_scenario(path)).steps_bp == (100, 2000, 5000, 10000)
