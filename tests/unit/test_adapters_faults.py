"""Fault injection: latency specs and the FaultInjector wrapper."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence

import pytest

from model_canary.agents.worker.adapters import (
    BAD_OUTPUT,
    INJECTED,
    EchoAdapter,
    FaultInjector,
    LatencySpec,
    ModelInput,
    ModelOutput,
    parse_latency,
    predict_safely,
)
from model_canary.streams.errors import ConfigError

N = 4000


def samples(spec: str, n: int = N, seed: int = 11) -> list[float]:
    rng = random.Random(seed)
    latency = parse_latency(spec)
    return [latency.sample(rng) for _ in range(n)]


def batch(n: int) -> list[ModelInput]:
    return [ModelInput(f"r{i}", b"{}") for i in range(n)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fixed:20", LatencySpec("fixed", (20.0,))),
        (" Uniform:10,30 ", LatencySpec("uniform", (10.0, 30.0))),
        ("lognormal:50,0.5", LatencySpec("lognormal", (50.0, 0.5))),
        ("normal:50,10", LatencySpec("normal", (50.0, 10.0))),
        ("fixed:0", LatencySpec("fixed", (0.0,))),
    ],
)
def test_parse_latency(spec: str, expected: LatencySpec) -> None:
    assert parse_latency(spec) == expected
    assert parse_latency(str(expected)) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "20",
        "fixed",
        "fixed:",
        "fixed:abc",
        "fixed:1,2",
        "fixed:-1",
        "fixed:nan",
        "uniform:30,10",
        "uniform:10",
        "lognormal:50",
        "normal:50,10,1",
        "normal:50,-1",
        "poisson:5",
    ],
)
def test_bad_latency_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="bad latency"):
        parse_latency(spec)


def test_fixed_and_uniform_samples() -> None:
    assert set(samples("fixed:20", 50)) == {20.0}
    values = samples("uniform:10,30")
    assert min(values) >= 10.0 and max(values) <= 30.0
    assert abs(statistics.fmean(values) - 20.0) < 0.5  # standard error ~0.09
    assert max(values) - min(values) > 19.0


def test_lognormal_median_and_sigma() -> None:
    values = samples("lognormal:50,0.5")
    assert abs(statistics.median(values) - 50.0) < 2.5  # standard error ~0.5
    assert abs(statistics.stdev(math.log(v) for v in values) - 0.5) < 0.03


def test_normal_mean_sd_and_no_negative_latency() -> None:
    values = samples("normal:50,10")
    assert abs(statistics.fmean(values) - 50.0) < 0.8
    assert abs(statistics.stdev(values) - 10.0) < 0.6
    clipped = samples("normal:1,10")
    assert min(clipped) == 0.0 and clipped.count(0.0) > N // 3


def test_error_rate_within_binomial_tolerance_and_repeatable() -> None:
    rate, n = 0.2, 5000
    faulty = FaultInjector(EchoAdapter(), None, error_rate=rate, seed=42)
    out = faulty.predict(batch(n))
    failed = [o.error_type == INJECTED for o in out]
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(sum(failed) - n * rate) < 4.5 * sigma
    assert all(o.ok for o, f in zip(out, failed, strict=True) if not f)
    again = FaultInjector(EchoAdapter(), None, error_rate=rate, seed=42).predict(batch(n))
    assert [o.error_type == INJECTED for o in again] == failed
    other = FaultInjector(EchoAdapter(), None, error_rate=rate, seed=43).predict(batch(n))
    assert [o.error_type == INJECTED for o in other] != failed


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_error_rate_extremes(rate: float) -> None:
    out = FaultInjector(EchoAdapter(), None, error_rate=rate).predict(batch(200))
    assert sum(o.error_type == INJECTED for o in out) == 200 * rate


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan])
def test_bad_error_rate(rate: float) -> None:
    with pytest.raises(ConfigError, match="error rate"):
        FaultInjector(EchoAdapter(), None, error_rate=rate)


def test_batch_sleeps_once_for_the_largest_item_delay() -> None:
    faulty = FaultInjector(EchoAdapter(), parse_latency("uniform:40,60"), error_rate=0.3, seed=3)
    started = time.monotonic()
    out = faulty.predict(batch(20))
    elapsed_ms = (time.monotonic() - started) * 1000
    # Each item reports the batch's time plus its correction: its own delay, not the largest.
    corrections = [o.extra_latency_ms for o in out]
    assert max(corrections) == 0.0 and min(corrections) >= -20.0 and len(set(corrections)) == 20
    assert 40.0 <= elapsed_ms < 20 * 40.0  # one sleep of 40..60 ms, not the sum of twenty
    assert any(o.error_type == INJECTED for o in out)  # failed items keep their delay too


def test_nested_injectors_add_their_latency() -> None:
    inner = FaultInjector(EchoAdapter(), parse_latency("fixed:5"), seed=1)
    outer = FaultInjector(inner, parse_latency("fixed:7"), seed=1)
    started = time.monotonic()
    out = outer.predict(batch(2))
    # Both sleeps are in the batch's measured time; equal delays need no correction.
    assert (time.monotonic() - started) * 1000 >= 12.0
    assert [o.extra_latency_ms for o in out] == [0.0, 0.0]
    assert outer.name == "echo"


def test_wrong_length_from_the_wrapped_adapter_reaches_predict_safely() -> None:
    class Short(EchoAdapter):
        def predict(self, items: Sequence[ModelInput]) -> list[ModelOutput]:
            return super().predict(items)[:1]

    out = predict_safely(FaultInjector(Short(), None, 0.5, seed=1), batch(3), timeout_s=1.0)
    assert [o.error_type for o in out] == [BAD_OUTPUT] * 3


def test_close_closes_the_wrapped_adapter() -> None:
    closed: list[bool] = []

    class Closing(EchoAdapter):
        def close(self) -> None:
            closed.append(True)

    FaultInjector(Closing(), None).close()
    assert closed == [True]


def test_marked_faults_break_only_marked_requests_and_only_when_asked() -> None:
    plain = ModelInput("r1", b'{"inputs": []}')
    huge = ModelInput("r2", b'{"inputs": [], "canary_fault": "huge-output"}')
    bad = ModelInput("r3", b'{"inputs": [], "canary_fault": "bad-output"}')
    large = ModelInput("r4", b'{"inputs": [], "canary_fault": "large-output"}')
    unknown = ModelInput("r5", b'{"inputs": [], "canary_fault": "melt"}')
    outputs = FaultInjector(EchoAdapter(), marked=True).predict([plain, huge, bad, large, unknown])
    assert outputs[0].outputs == plain.inputs and outputs[4].outputs == unknown.inputs
    assert len(outputs[1].outputs) == 2 * 1024 * 1024
    assert not isinstance(outputs[2].outputs, bytes)
    assert len(outputs[3].outputs) == 700 * 1024
    # Without marked=True a marker is just data.
    untouched = FaultInjector(EchoAdapter()).predict([huge, bad])
    assert [o.outputs for o in untouched] == [huge.inputs, bad.inputs]
