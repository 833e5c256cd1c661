from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.stats.harm import HarmTest, mle_log_ratio, upper_bounds
from model_canary.streams.stats.mixture import (
    ALARM_INCREMENTS,
    log_prior,
    mixture_log_lr,
    theta,
)


def test_no_events_means_a_likelihood_ratio_of_one() -> None:
    test = HarmTest()
    for counts in ({}, {100: (0, 0)}, {100: (0, 0), 2000: (0, 0)}):
        r = test.evaluate(counts)
        assert r.log_lr == 0.0
        assert not r.alarmed
        assert r.lower == 0.0 and r.upper == math.inf
        assert math.isnan(r.ratio)


def test_hand_computed_single_alternative() -> None:
    # rho = 0.5, boundary ratio 1 (theta0 = 1/2), alternative ratio 3 (theta1 = 3/4):
    # two canary bad events and one baseline bad event: (3/4 / 1/2)^2 * (1/4 / 1/2) = 9/8.
    test = HarmTest(tolerance=0.0, increments=(math.log(3),))
    assert test.evaluate({5000: (2, 1)}).log_lr == pytest.approx(math.log(9 / 8))


def test_hand_computed_mixture_over_two_alternatives() -> None:
    # Ratio 2: theta = 2/3 -> (4/3)^2 (2/3) = 32/27; ratio 3: 9/8; equal prior weights.
    test = HarmTest(tolerance=0.0, increments=(math.log(2), math.log(3)))
    expected = 0.5 * (32 / 27) + 0.5 * (9 / 8)
    assert test.evaluate({5000: (2, 1)}).log_lr == pytest.approx(math.log(expected))


def test_hand_computed_two_weights_multiply() -> None:
    # Ratio 2 against 1. At 20%: theta = 0.4 / 1.2 = 1/3, a canary event multiplies by 5/3.
    # At 50%: theta = 2/3, a baseline event multiplies by (1/3) / (1/2) = 2/3. Total 10/9.
    test = HarmTest(tolerance=0.0, increments=(math.log(2),))
    assert test.evaluate({2000: (1, 0), 5000: (0, 1)}).log_lr == pytest.approx(math.log(10 / 9))


def test_theta_matches_its_definition() -> None:
    rho, r = 0.2, 1.7
    assert float(theta(math.log(r), rho)) == pytest.approx(rho * r / (rho * r + 1 - rho))


@given(st.integers(0, 200), st.integers(0, 2000), st.sampled_from([100, 2000, 5000, 9000]))
def test_more_canary_bad_events_raise_the_ratio(c: int, b: int, weight: int) -> None:
    test = HarmTest()
    low = test.evaluate({weight: (c, b)})
    high = test.evaluate({weight: (c + 1, b)})
    assert high.log_lr > low.log_lr
    assert high.lower >= low.lower
    assert test.evaluate({weight: (c, b + 1)}).log_lr < low.log_lr


def test_pooling_across_weights_would_be_fooled_but_the_test_is_not() -> None:
    # 30 minutes at 1% with 1% errors, then 30 at 50% during an incident hitting both arms.
    # Every weight is exactly on its null share, yet the pooled share of canary errors
    # (503 of 1,300 = 39%) is far above the pooled canary traffic share (25.5%).
    by_weight = {100: (3, 297), 5000: (500, 500)}
    assert not HarmTest().evaluate(by_weight).alarmed
    pooled = HarmTest().evaluate({2550: (503, 797)})  # what a pooled test would see
    assert pooled.alarmed


def test_an_obvious_regression_alarms_and_is_bounded() -> None:
    r = HarmTest(tolerance=0.2, alpha=0.05).evaluate({100: (12, 300)})
    assert r.alarmed
    assert r.ratio == pytest.approx(12 / 300 * 0.99 / 0.01)
    assert 1.2 < r.lower < r.ratio < r.upper


def test_bounds_cover_the_truth_and_shrink_with_data() -> None:
    rng = np.random.default_rng(5)
    widths = []
    for scale in (1, 10):
        n_c, n_b = 20_000 * scale, 20_000 * scale
        c, b = rng.binomial(n_c, 0.015), rng.binomial(n_b, 0.01)
        r = HarmTest().evaluate({5000: (int(c), int(b))})
        assert r.lower < 1.5 < r.upper
        widths.append(r.upper / r.lower)
    assert widths[1] < widths[0]


def test_update_accumulates_like_evaluate() -> None:
    test = HarmTest()
    test.update(100, 2, 150)
    test.update(2000, 10, 30)
    last = test.update(100, 1, 50)
    assert last == HarmTest().evaluate({100: (3, 200), 2000: (10, 30)})


def test_weights_without_a_baseline_or_a_canary_carry_no_information() -> None:
    base = HarmTest().evaluate({2000: (5, 20)})
    extra = HarmTest().evaluate({2000: (5, 20), 10_000: (40, 0), 0: (0, 7)})
    assert extra.log_lr == base.log_lr
    assert extra.canary_bad == 45 and extra.baseline_bad == 27


def test_vectorised_upper_bounds_match_the_class() -> None:
    counts = {100: (3, 280), 2000: (70, 260), 5000: (300, 310)}
    rho = np.array([0.01, 0.2, 0.5])
    c = np.array([v[0] for v in counts.values()], dtype=np.float64)
    b = np.array([v[1] for v in counts.values()], dtype=np.float64)
    expected = HarmTest(alpha=0.01).evaluate(counts).upper
    assert float(upper_bounds(c, b, rho, 0.01)) == pytest.approx(expected)
    assert float(upper_bounds(np.zeros(3), np.zeros(3), rho, 0.01)) == math.inf


def test_mle_with_one_weight_is_the_closed_form() -> None:
    c, b, rho = 30.0, 200.0, 0.1
    share = c / (c + b)
    expected = share / (1 - share) * (1 - rho) / rho
    got = math.exp(mle_log_ratio(np.array([c]), np.array([b]), np.array([rho])))
    assert got == pytest.approx(expected, rel=1e-9)


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        HarmTest(alpha=0.0)
    with pytest.raises(ValueError):
        HarmTest(increments=(0.0, 1.0))
    with pytest.raises(ValueError):
        HarmTest().evaluate({100: (-1, 3)})
    with pytest.raises(ValueError):
        HarmTest().evaluate({12_000: (1, 3)})


@pytest.mark.parametrize("tolerance", [0.0, 0.2])
def test_a_a_false_alarm_rate_is_at_most_alpha_under_continuous_monitoring(
    tolerance: float,
) -> None:
    # The hardest null: the canary's rate sits exactly on the boundary 1 + tolerance. Weights
    # change 1% -> 20% -> 50% and an incident multiplies both arms' rates by 5 for a while.
    rng = np.random.default_rng(11)
    reps, minutes, alpha = 400, 90, 0.05
    rho = np.array([0.01, 0.2, 0.5])
    step = np.minimum(np.arange(minutes) // 30, 2)
    base = np.where((np.arange(minutes) >= 40) & (np.arange(minutes) < 50), 0.05, 0.01)
    n_c = rng.binomial(1000, rho[step], size=(reps, minutes))
    c = rng.binomial(n_c, base * (1 + tolerance))
    b = rng.binomial(1000 - n_c, base)
    onehot = np.eye(3, dtype=np.int64)[step]
    cum_c = np.cumsum(c[:, :, None] * onehot, axis=1)
    cum_b = np.cumsum(b[:, :, None] * onehot, axis=1)
    llr = mixture_log_lr(
        cum_c,
        cum_b,
        rho,
        math.log1p(tolerance),
        ALARM_INCREMENTS,
        log_prior(None, len(ALARM_INCREMENTS)),
    )
    rate = float((llr.max(axis=1) >= -math.log(alpha)).mean())
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_rollback_tolerance_sets_the_null_and_tolerance_the_promotion_margin() -> None:
    counts = {2000: (40, 100)}  # ratio 1.6 at 20%
    split = HarmTest(tolerance=0.2, rollback_tolerance=0.0).evaluate(counts)
    joint = HarmTest(tolerance=0.2).evaluate(counts)
    assert (split.rollback_tolerance, joint.rollback_tolerance) == (0.0, 0.2)
    # The same evidence against "no worse" is stronger than against "at most 1.2 times worse".
    assert split.log_lr > joint.log_lr
    # Both bounds and the promotion margin do not depend on the rollback null's position...
    assert split.upper == joint.upper and split.tolerance == joint.tolerance
    # ... and a larger rollback tolerance never makes an alarm more likely (monotone).
    lrs = [HarmTest(rollback_tolerance=t).evaluate(counts).log_lr for t in (0.0, 0.05, 0.2, 0.5)]
    assert lrs == sorted(lrs, reverse=True)


def test_a_doubling_is_found_with_fewer_events_against_no_harm_than_against_the_margin() -> None:
    # At 1%, baseline 1% and canary 2% errors: count canary requests until the alarm.
    def events_needed(rollback_tolerance: float) -> int:
        test = HarmTest(tolerance=0.2, alpha=0.05 / 3, rollback_tolerance=rollback_tolerance)
        for n in range(100, 20_000, 100):
            # Expected counts exactly: n canary requests, 99 n baseline ones.
            if test.evaluate({100: (round(0.02 * n), round(0.01 * 99 * n))}).alarmed:
                return n
        raise AssertionError("never alarmed")

    assert events_needed(0.0) < 0.7 * events_needed(0.2)


def test_lower_bound_passes_the_rollback_null_when_the_test_alarms() -> None:
    test = HarmTest(tolerance=0.2, rollback_tolerance=0.0)
    alarms = [r for r in (test.evaluate({100: (c, 300)}) for c in range(40)) if r.alarmed]
    assert alarms, "40 canary bad events against 300 at 1% must alarm"
    assert all(r.lower >= 0.99 for r in alarms)  # one bound-grid step below 1 at most
