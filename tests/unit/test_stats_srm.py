from __future__ import annotations

import math

import numpy as np
import pytest

from model_canary.streams.stats.srm import sample_ratio_check


def test_labels_in_the_routed_proportions_are_no_mismatch() -> None:
    r = sample_ratio_check({100: (30, 2970), 2000: (400, 1600), 5000: (1000, 1000)})
    assert not r.mismatch
    assert r.expected_canary == pytest.approx(1430)
    assert (r.canary, r.baseline) == (1430, 5570)


def test_missing_canary_labels_are_a_mismatch() -> None:
    r = sample_ratio_check({2000: (300, 1700)})  # 15% instead of 20%
    assert r.mismatch
    assert r.log_bf >= r.threshold


def test_weights_are_not_pooled() -> None:
    # Each weight matches exactly; pooled (1% of 10,000 and 50% of 1,000) it would not.
    assert not sample_ratio_check({100: (100, 9900), 5000: (500, 500)}).mismatch


def test_impossible_labels_are_an_immediate_mismatch() -> None:
    assert sample_ratio_check({0: (1, 10)}).log_bf == math.inf
    assert sample_ratio_check({10_000: (10, 1)}).mismatch


def test_no_labels_no_evidence() -> None:
    r = sample_ratio_check({})
    assert r.log_bf == 0.0 and not r.mismatch


def test_false_alarm_rate_under_continuous_monitoring() -> None:
    rng = np.random.default_rng(3)
    reps, alpha, alarms = 300, 0.05, 0
    for _ in range(reps):
        counts: dict[int, tuple[int, int]] = {}
        for weight, minutes in ((100, 30), (2000, 30), (5000, 30)):
            c = b = 0
            for _minute in range(minutes):
                labelled = 500
                got = int(rng.binomial(labelled, weight / 10_000))
                c, b = c + got, b + labelled - got
                counts[weight] = (c, b)
                if sample_ratio_check(counts, alpha=alpha).mismatch:
                    alarms += 1
                    break
            else:
                continue
            break
    assert alarms / reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        sample_ratio_check({100: (1, 2)}, alpha=1.0)
    with pytest.raises(ValueError):
        sample_ratio_check({100: (-1, 2)})
