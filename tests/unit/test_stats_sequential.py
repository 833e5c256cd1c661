from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from model_canary.streams.stats.compare import Comparison, from_counts, subtest_masks
from model_canary.streams.stats.sequential import (
    ALARM_GRID,
    SRM_GRID,
    promotion_log_e,
    rollback_log_e,
    subtest_log_e,
)

EQUAL = np.log(np.full(ALARM_GRID.size, 1.0 / ALARM_GRID.size))
ONE = np.zeros(1)


def many(n_c: np.ndarray, c: np.ndarray, n_b: np.ndarray, b: np.ndarray, weights: tuple[int, ...],
         starts: tuple[int, ...] = (), phi: float = 1.0) -> Comparison:  # fmt: skip
    """A comparison of R replicas over W weights from (R, W) arrays."""
    starts = starts or weights[:1]
    sub = subtest_masks(weights, starts)
    reps = n_c.shape[0]
    return Comparison(
        "errors", "baseline", weights, n_c, c, n_b, b, sub, np.full((reps, sub.shape[0]), phi)
    )


def test_the_mixture_is_the_coin_flip_likelihood_ratio_on_the_arm_of_bad_items() -> None:
    comp = from_counts("errors", "baseline", {100: (300, 29_700, 12, 300)}, (100,))
    rho = 300 / 30_000
    expected = []
    for d in ALARM_GRID:
        theta = rho * math.exp(d) / (rho * math.exp(d) + 1 - rho)
        expected.append(12 * math.log(theta / rho) + 300 * math.log((1 - theta) / (1 - rho)))
    mix = math.log(sum(math.exp(x) for x in expected) / len(expected))
    assert rollback_log_e(comp, 0.0, ALARM_GRID, EQUAL, ONE)[0] == pytest.approx(mix)


def test_the_design_effect_divides_the_evidence() -> None:
    base = from_counts("errors", "baseline", {2000: (2000, 8000, 60, 160)}, (2000,))
    doubled = replace(base, phi=np.full((1, 1), 2.0))
    one = subtest_log_e(base, 0.0, np.array([0.5]), np.zeros(1))
    two = subtest_log_e(doubled, 0.0, np.array([0.5]), np.zeros(1))
    assert two[0, 0] == pytest.approx(one[0, 0] / 2)


def test_false_rollbacks_stay_below_alpha_with_independent_items() -> None:
    # 2,000 identical canaries at 20%, bad items arriving as coin flips, checked every step.
    rng = np.random.default_rng(7)
    reps, steps, per_step = 2000, 60, 20
    c = np.zeros((reps, 1), dtype=np.int64)
    b = np.zeros_like(c)
    n_c = np.zeros_like(c)
    n_b = np.zeros_like(c)
    alarmed = np.zeros(reps, dtype=bool)
    for _ in range(steps):
        n_c += 400
        n_b += 1600
        new = rng.binomial(per_step, 0.2, (reps, 1))
        c += new
        b += per_step - new
        comp = many(n_c, c, n_b, b, (2000,))
        alarmed |= rollback_log_e(comp, 0.0, ALARM_GRID, EQUAL, ONE) >= math.log(1 / 0.05)
    assert alarmed.mean() <= 0.05


def test_a_doubling_is_found() -> None:
    comp = from_counts("errors", "baseline", {2000: (2000, 8000, 40, 80)}, (2000,))
    assert rollback_log_e(comp, 0.0, ALARM_GRID, EQUAL, ONE)[0] > math.log(60)
    # ... but not once the null allows a doubling.
    assert rollback_log_e(comp, math.log(2.0), ALARM_GRID, EQUAL, ONE)[0] < 0


def test_harm_at_a_later_weight_is_not_masked_by_good_earlier_weights() -> None:
    counts = {100: (0, 0, 0, 0), 2000: (4000, 16_000, 40, 240), 5000: (5000, 5000, 100, 50)}
    comp = from_counts("errors", "baseline", counts, (100, 2000, 5000))
    per_sub = subtest_log_e(comp, 0.0, ALARM_GRID, EQUAL)[0]
    assert per_sub[0] < 0 < per_sub[2], "pooled: masked; from the 50% step on: harm"
    prior = np.log([0.7, 0.1, 0.2])
    assert rollback_log_e(comp, 0.0, ALARM_GRID, EQUAL, prior)[0] > math.log(1 / 0.05)


def test_a_metric_without_bad_items_is_promoted_on_its_margin() -> None:
    threshold = math.log(3 / 0.05)
    for n in (500, 3000):
        comp = from_counts("errors", "baseline", {5000: (n, n, 0, 0)}, (5000,))
        passed = bool(promotion_log_e(comp, 0, 0, 0.2, 0.005)[0] >= threshold)
        assert passed is (n == 3000), n


def test_promotion_reaches_small_tolerances_given_evidence() -> None:
    # Equal rates, a 2% tolerance and no margin: only a great deal of evidence shows it.
    little = from_counts("accuracy", "baseline", {5000: (20_000, 20_000, 2000, 2000)}, (5000,))
    lots = from_counts("accuracy", "baseline", {5000: (4_000_000,) * 2 + (400_000,) * 2}, (5000,))
    assert promotion_log_e(little, 0, 0, 0.02, 0.0)[0] < math.log(20)
    assert promotion_log_e(lots, 0, 0, 0.02, 0.0)[0] > math.log(20)


def test_a_canary_on_the_promotion_boundary_is_rarely_promoted() -> None:
    rng = np.random.default_rng(3)
    reps, lam_b, tol, margin = 4000, 0.01, 0.2, 0.005
    lam_c = (1 + tol) * lam_b + margin
    promoted = np.zeros(reps, dtype=bool)
    n = np.zeros((reps, 1), dtype=np.int64)
    c = np.zeros_like(n)
    b = np.zeros_like(n)
    for _ in range(40):
        n += 500
        c += rng.binomial(500, lam_c, (reps, 1))
        b += rng.binomial(500, lam_b, (reps, 1))
        comp = many(n, c, n.copy(), b, (5000,))
        promoted |= promotion_log_e(comp, 0, 0, tol, margin) >= math.log(1 / 0.05)
    assert promoted.mean() <= 0.05


def test_the_sample_ratio_check_is_two_sided() -> None:
    grid_w = np.log(np.full(SRM_GRID.size, 1.0 / SRM_GRID.size))
    fewer = from_counts("labels", "baseline", {2000: (2000, 8000, 500, 4000)}, (2000,))
    more = from_counts("labels", "baseline", {2000: (2000, 8000, 1400, 4000)}, (2000,))
    same = from_counts("labels", "baseline", {2000: (2000, 8000, 1000, 4000)}, (2000,))
    for comp, flagged in ((fewer, True), (more, True), (same, False)):
        log_e = rollback_log_e(comp, 0.0, SRM_GRID, grid_w, ONE)[0]
        assert bool(log_e >= math.log(100)) is flagged
