from __future__ import annotations

import math
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.cohort import BUCKETS, bucket, in_canary


@given(st.binary(max_size=64), st.text(min_size=1, max_size=80))
def test_bucket_in_range_and_deterministic(key: bytes, rollout: str) -> None:
    b = bucket(key, rollout)
    assert 0 <= b < BUCKETS
    assert bucket(key, rollout) == b


@given(st.binary(max_size=32), st.integers(0, 10_000), st.integers(0, 10_000))
def test_raising_the_weight_never_moves_a_key_back(key: bytes, w1: int, w2: int) -> None:
    low, high = sorted((w1, w2))
    if in_canary(key, "r", low):
        assert in_canary(key, "r", high)


def test_stable_across_processes() -> None:
    """Not Python's salted hash(): another interpreter computes the same buckets."""
    keys = [f"user-{i}".encode() for i in range(50)]
    here = [bucket(k, "rollout-x") for k in keys]
    code = (
        "from model_canary.streams.cohort import bucket;"
        "print([bucket(f'user-{i}'.encode(), 'rollout-x') for i in range(50)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=".",
    ).stdout
    assert out.strip() == str(here)


def test_share_matches_weight_within_binomial_tolerance() -> None:
    n = 40_000
    for weight in (100, 2000, 5000):
        share = sum(in_canary(f"k{i}".encode(), "rollout-7", weight) for i in range(n)) / n
        p = weight / BUCKETS
        assert abs(share - p) < 4.5 * math.sqrt(p * (1 - p) / n), (weight, share)


def test_a_new_rollout_reshuffles_the_cohort() -> None:
    keys = [f"k{i}".encode() for i in range(2000)]
    first = {k for k in keys if in_canary(k, "rollout-a", 2000)}
    second = {k for k in keys if in_canary(k, "rollout-b", 2000)}
    # Independent draws overlap by about 20% of 20%; equal sets would mean no reshuffle.
    assert len(first & second) < 0.5 * len(first)
