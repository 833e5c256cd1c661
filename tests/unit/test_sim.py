from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import pytest

from model_canary.agents.cli import sim_cmd
from model_canary.streams.sim.argo import run_argo
from model_canary.streams.sim.finer import refine
from model_canary.streams.sim.kayenta import judge, run_kayenta
from model_canary.streams.sim.oracle import run_oracle, true_ratios
from model_canary.streams.sim.ours import ALPHA, run_ours
from model_canary.streams.sim.report import render, targets
from model_canary.streams.sim.runner import run
from model_canary.streams.sim.scenarios import (
    BY_NAME,
    SCENARIOS,
    TIMELINE,
    canary_exceeds,
    canary_z,
)
from model_canary.streams.sim.traffic import generate, ndtri, sample_p99


def test_normal_quantile_is_accurate() -> None:
    ps = np.concatenate([np.linspace(1e-9, 0.05, 200), np.linspace(0.05, 0.95, 200)])
    ps = np.concatenate([ps, 1 - ps])
    ref = np.array([statistics.NormalDist().inv_cdf(float(p)) for p in ps])
    assert np.max(np.abs(ndtri(ps) - ref)) < 1e-8


@pytest.mark.parametrize(("n", "kind"), [(1, "none"), (10, "tail"), (200, "scale"), (990, "tail")])
def test_drawn_p99_matches_the_p99_of_actual_draws(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    drawn = sample_p99(rng, np.full(4000, n), kind)
    z = canary_z(rng.standard_normal((4000, n)), kind)
    actual = np.quantile(50 * np.exp(0.5 * z), 0.99, axis=1)
    for stat in (np.mean, np.std, np.median):
        assert stat(drawn) == pytest.approx(stat(actual), rel=0.06)
    assert np.isnan(sample_p99(rng, np.zeros(3, dtype=np.int64), "none")).all()


def test_the_tail_regression_leaves_the_median_alone_and_slows_the_p99_by_30_percent() -> None:
    z = np.array([0.0, float(ndtri(0.99))])
    slowed = canary_z(z, "tail")
    assert slowed[0] == 0.0
    assert np.exp(0.5 * slowed[1]) / np.exp(0.5 * z[1]) == pytest.approx(1.3)
    # Above the baseline's p95 (114 ms): 10% of canary requests (everything slowed past it).
    assert canary_exceeds(float(ndtri(0.95)), "tail") == pytest.approx(0.10)


def test_traffic_is_consistent() -> None:
    t = generate(BY_NAME["accuracy-d10"], 50, np.random.default_rng(2))
    assert t.n_c.shape == (50, TIMELINE.minutes + 10)
    assert ((t.n_c + t.n_b) == TIMELINE.requests_per_minute).all()
    assert (t.slow99_c <= t.slow95_c).all() and (t.slow95_c <= t.n_c).all()
    assert t.lab_c is not None and t.mis_c is not None and (t.mis_c <= t.lab_c).all()
    arrived = t.arrived(t.lab_c)
    assert (arrived[:, :10] == 0).all() and (arrived[:, 10:] == t.lab_c[:, :-10]).all()


def test_kayenta_judge_flags_a_clear_shift_only_in_its_direction() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.1, (200, 20))
    worse = rng.normal(1.5, 0.1, (200, 20))
    assert judge(worse, base, increase=True).all()
    assert not judge(worse, base, increase=False).any()
    same = rng.normal(1.0, 0.1, (200, 20))
    assert judge(same, base, increase=True).mean() < 0.05


def test_methods_find_an_error_regression() -> None:
    rng = np.random.default_rng(9)
    t = generate(BY_NAME["errors"], 100, rng)
    fine = refine(t, rng)
    assert (run_ours(fine, 90).rollback_at >= 0).mean() > 0.9
    assert (run_oracle(t, fine, 90) >= 0).mean() > 0.9
    assert (run_kayenta(t, 90) >= 0).mean() > 0.9
    assert (run_argo(t, 90) >= 0).mean() > 0.9


@pytest.mark.parametrize("name", ["aa", "aa-incident", "aa-drift", "aa-labelled"])
def test_ours_rolls_back_an_a_a_canary_at_most_alpha_of_the_time(name: str) -> None:
    # A/A calibration at a small replication count: within alpha plus three standard errors.
    rng = np.random.default_rng(4)
    t = generate(BY_NAME[name], 300, rng)
    rate = (run_ours(refine(t, rng), 90 + t.scenario.label_delay).rollback_at >= 0).mean()
    assert rate <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 300)


def test_slices_add_up_to_the_minutes_and_keep_subsets_nested() -> None:
    rng = np.random.default_rng(3)
    t = generate(BY_NAME["accuracy-d10"], 20, rng)
    f = refine(t, rng, per_minute=4)
    assert f.step.size == 4 * t.minutes and f.slices(10) == 40
    per_minute = f.canary_so_far[:, 3::4]
    assert (per_minute == np.cumsum(t.n_c, axis=1)).all()
    for name, minute_c, minute_b in [
        ("errors", t.err_c, t.err_b),
        ("latency_p95", t.slow95_c, t.slow95_b),
        ("latency_p99", t.slow99_c, t.slow99_b),
        ("accuracy", t.mis_c, t.mis_b),
    ]:
        c, b, _ = f.bad[name]
        assert (c.reshape(20, -1, 4).sum(axis=2) == minute_c).all()
        assert (b.reshape(20, -1, 4).sum(axis=2) == minute_b).all()
    assert (f.bad["latency_p99"][0] <= f.bad["latency_p95"][0]).all()
    assert f.bad["accuracy"][2] == 40  # 10 minutes of label delay, in slices


def test_the_oracle_knows_the_truth_and_beats_ours_on_average() -> None:
    rng = np.random.default_rng(8)
    t = generate(BY_NAME["latency-tail"], 200, rng)
    ratios = true_ratios(t)
    assert ratios["errors"] == pytest.approx(1.0)
    assert np.median(ratios["latency_p95"]) == pytest.approx(2.0, rel=0.05)
    fine = refine(t, rng)
    oracle, ours = run_oracle(t, fine, 90), run_ours(fine, 90).rollback_at
    assert (oracle >= 0).all() and (ours >= 0).all()
    assert np.median(oracle) < np.median(ours)
    # Without harm the oracle has no alternative to test: it never rolls back.
    aa = generate(BY_NAME["aa"], 50, rng)
    assert (run_oracle(aa, refine(aa, rng), 90) < 0).all()


def test_run_is_reproducible_and_subsets_draw_the_same_numbers() -> None:
    full = run(["aa", "errors"], replications=30, seed=7)
    again = run(["errors"], replications=30, seed=7)
    assert full.scenarios[1].methods == again.scenarios[0].methods
    assert full.scenarios[1].info_limit == pytest.approx(1060, rel=0.01)


def test_report_ends_with_one_json_line() -> None:
    lines = render(run(["aa", "accuracy-d60"], replications=20, seed=1), json_only=False)
    doc = json.loads(lines[-1])
    assert set(doc["scenarios"]) == {"aa", "accuracy-d60"}
    assert set(doc["scenarios"]["accuracy-d60"]) == {
        "ours",
        "kayenta",
        "argo",
        "oracle",
        "ours-held",
    }
    assert set(doc["scenarios"]["aa"]) == {"ours", "kayenta", "argo"}  # no oracle without harm
    assert set(doc["median_ratios"]) == {"accuracy-d60"}
    ours = doc["scenarios"]["aa"]["ours"]
    assert {"rollback_rate", "median_canary_requests", "p90_canary_requests"} <= set(ours)
    only = render(run(["aa"], replications=5, seed=1), json_only=True)
    assert len(only) == 1


def test_cli_parses_and_runs(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="canary")
    sub = parser.add_subparsers(dest="command", required=True)
    sim_cmd.register(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(
        ["sim", "--replications", "5", "--scenario", "aa", "--scenario", "errors", "--json-only"]
    )
    assert args.handler(args) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(doc["scenarios"]) == ["aa", "errors"]
    assert len(SCENARIOS) == 10


def test_targets_below_the_oracle_are_flagged_as_beyond_the_limit() -> None:
    result = run(["errors", "latency-scale"], replications=40, seed=2)
    by_text = {t.text: t for t in targets(result)}
    scale = by_text["latency-scale: ours <= 0.2 x Kayenta-style median"]
    assert scale.met and not scale.beyond_limit
    errors = result.scenarios[0]
    oracle = errors.methods["oracle"].median_requests
    assert oracle is not None
    assert by_text["errors: median canary requests <= 1100"].beyond_limit == (oracle > 1100)
