"""The latency profiles and the commit policy (pure logic; the figures come from
``canary bench latency``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams import latency
from model_canary.streams.errors import ConfigError
from model_canary.streams.latency import (
    PROFILES,
    CommitPolicy,
    Delivery,
    LatencyMode,
    profile_of,
)
from model_canary.streams.settings import Settings


@given(
    min_ms=st.integers(0, 500),
    extra=st.integers(0, 500),
    age=st.floats(0, 2000, allow_nan=False),
)
def test_a_transaction_commits_when_drained_and_old_enough_or_at_the_time_bound(
    min_ms: int, extra: int, age: float
) -> None:
    policy = CommitPolicy(min_ms, max(1, min_ms + extra))
    assert policy.due(age, drained=False) == (age >= policy.max_ms)
    assert policy.due(age, drained=True) == (age >= policy.min_ms)
    # The loop waits for more input exactly until a drained transaction would be due.
    assert policy.wait_s(age) == pytest.approx(max(0.0, policy.min_ms - age) / 1000)


def test_a_fixed_interval_never_commits_early() -> None:
    policy = CommitPolicy.every(250)
    assert not policy.due(249.9, drained=True)
    assert policy.due(250, drained=False)


@pytest.mark.parametrize(("low", "high"), [(-1, 10), (20, 10), (0, 0)])
def test_a_policy_is_checked(low: int, high: int) -> None:
    with pytest.raises(ConfigError, match="commit policy"):
        CommitPolicy(low, high)


def test_profiles_trade_latency_for_fewer_transactions() -> None:
    low, balanced, throughput = (PROFILES[m] for m in LatencyMode)
    for field in ("linger_ms", "fetch_wait_ms"):
        assert getattr(low, field) <= getattr(balanced, field) <= getattr(throughput, field)
    assert low.commit.max_ms <= balanced.commit.max_ms <= throughput.commit.max_ms
    assert low.commit.min_ms <= balanced.commit.min_ms <= throughput.commit.min_ms
    # Only throughput holds a drained transaction open until its time bound.
    assert throughput.commit.min_ms == throughput.commit.max_ms


def test_the_documented_table_is_the_profiles() -> None:
    doc = latency.__doc__ or ""
    for mode, profile in PROFILES.items():
        row = re.search(rf"^{mode.value}\s+(.+)$", doc, re.MULTILINE)
        assert row is not None, mode
        numbers = [int(n) for n in re.findall(r"\d+", row.group(1))]
        early = [] if profile.commit.min_ms == profile.commit.max_ms else [profile.commit.min_ms]
        c = profile.commit
        assert numbers == [*early, c.max_ms, profile.linger_ms, profile.fetch_wait_ms], mode


def test_settings_carry_the_profile_and_the_delivery() -> None:
    s = Settings.from_env({"CANARY_LATENCY": "low", "CANARY_DELIVERY": "at-least-once"})
    assert (s.latency, s.delivery, s.exactly_once) == (
        LatencyMode.LOW,
        Delivery.AT_LEAST_ONCE,
        False,
    )
    assert s.commit_policy == profile_of("low").commit
    assert Settings.from_env(s.to_env()) == s
    fixed = Settings.from_env({"CANARY_COMMIT_INTERVAL_MS": "250"})
    assert fixed.commit_policy == CommitPolicy(250, 250)
    assert Settings().latency is latency.DEFAULT_LATENCY
    assert Settings().delivery is Delivery.EXACTLY_ONCE


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANARY_LATENCY": "fast"}, "latency 'fast' is not one of low, balanced, throughput"),
        ({"CANARY_DELIVERY": "maybe"}, "delivery 'maybe' is not one of exactly-once"),
        ({"CANARY_COMMIT_INTERVAL_MS": "0"}, "commit_interval_ms must be at least 1"),
    ],
)
def test_bad_latency_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_clients_follow_the_profile() -> None:
    from model_canary.agents.kafka.config import consumer_config, producer_config

    for mode, profile in PROFILES.items():
        s = Settings(latency=mode)
        assert producer_config(s, "p")["linger.ms"] == profile.linger_ms
        assert consumer_config(s, "c", "g")["fetch.wait.max.ms"] == profile.fetch_wait_ms
    # The user's own librdkafka settings still win.
    s = Settings(latency=LatencyMode.LOW, extra_config={"linger.ms": "20"})
    assert producer_config(s, "p")["linger.ms"] == "20"


def test_transactional_retries_back_off_briefly() -> None:
    """A transactional producer's retries (the coordinator refusing AddOffsetsToTxn or EndTxn
    while the previous transaction's markers are written) wait at most
    TXN_RETRY_BACKOFF_MAX_MS, not librdkafka's doubling up to 1 s; other producers keep
    librdkafka's defaults, and the user's own setting wins."""
    from model_canary.agents.kafka.config import (
        TXN_RETRY_BACKOFF_MAX_MS,
        TXN_RETRY_BACKOFF_MS,
        producer_config,
    )

    s = Settings()
    txn = producer_config(s, "p", transactional_id="t")
    assert txn["retry.backoff.ms"] == TXN_RETRY_BACKOFF_MS
    assert txn["retry.backoff.max.ms"] == TXN_RETRY_BACKOFF_MAX_MS
    assert TXN_RETRY_BACKOFF_MS <= TXN_RETRY_BACKOFF_MAX_MS < 1000
    plain = producer_config(s, "p")
    assert "retry.backoff.max.ms" not in plain and "retry.backoff.ms" not in plain
    mine = Settings(extra_config={"retry.backoff.max.ms": "1000"})
    assert producer_config(mine, "p", transactional_id="t")["retry.backoff.max.ms"] == "1000"
