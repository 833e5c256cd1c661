"""The benchmark's timeline and scenarios.

1,000 requests a minute; the canary gets 1%, then 20%, then 50%, 30 minutes each (next would
come 100%: a regression is "caught before 100%" when rolled back within those 90 minutes).

* errors: the baseline fails 1% of requests (A/A incident: 5% in both arms for minutes
  40-49; A/A drift: both arms go linearly from 0.5% to 2% over the 90 minutes);
* latency: lognormal, median 50 ms, sigma 0.5 (p95 114 ms, p99 160 ms). ``scale``: every canary
  request 1.3x slower. ``tail``: only canary requests slower than the baseline's p90 (95 ms)
  are 1.3x slower - the quantile function above 0.9 is multiplied by 1.3, so the canary's p95
  and p99 are exactly 30% higher and its median is unchanged (mean +6.5%);
* accuracy: half the requests get a label, ``label_delay`` minutes after the request.

>>> [s.name for s in SCENARIOS][:3]
['aa', 'aa-incident', 'aa-drift']
>>> TIMELINE.minutes, TIMELINE.weight_at(31)
(90, 0.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.stats.mixture import FloatArray

IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Timeline:
    weights: tuple[float, ...] = (0.01, 0.20, 0.50)
    step_minutes: int = 30
    requests_per_minute: int = 1000
    #: Baseline requests seen before the canary starts, to fix the p95/p99 thresholds.
    warmup_requests: int = 10_000

    @property
    def minutes(self) -> int:
        return self.step_minutes * len(self.weights)

    def weight_at(self, minute: int) -> float:
        step = min(minute // self.step_minutes, len(self.weights) - 1)
        return self.weights[step]

    def step_index(self, minutes: int) -> IntArray:
        """The step of each minute; minutes past the last step stay in the last step."""
        idx = np.minimum(np.arange(minutes) // self.step_minutes, len(self.weights) - 1)
        return np.asarray(idx, dtype=np.intp)


TIMELINE = Timeline()
LATENCY_MEDIAN_MS = 50.0
LATENCY_SIGMA = 0.5
SLOWDOWN = 1.3
TAIL_FROM = 0.90  #: quantile above which the "tail" regression slows requests down


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    harmful: bool
    error_rate: float = 0.01
    error_ratio: float = 1.0  #: canary error rate / baseline's
    incident: tuple[int, int, float] | None = None  #: (first minute, end minute, both arms' rate)
    drift: tuple[float, float] | None = None  #: both arms' error rate from .. to, linearly
    latency: str = "none"  #: canary latency change: "none", "scale" or "tail"
    accuracy: tuple[float, float] | None = None  #: (baseline, canary) when labels exist
    label_share: float = 0.5
    label_delay: int = 0  #: minutes

    def error_rates(self, minutes: int) -> tuple[FloatArray, FloatArray]:
        """Per-minute error probability of the baseline and of the canary."""
        t = np.arange(minutes, dtype=np.float64)
        base = np.full(minutes, self.error_rate)
        if self.drift is not None:
            lo, hi = self.drift
            base = lo + (hi - lo) * np.minimum(t / (TIMELINE.minutes - 1), 1.0)
        if self.incident is not None:
            first, end, rate = self.incident
            base = np.where((t >= first) & (t < end), rate, base)
        return base, np.minimum(base * self.error_ratio, 1.0)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("aa", "A/A", False),
    Scenario(
        "aa-incident",
        "A/A, 10-min incident (5% errors) in both arms",
        False,
        incident=(40, 50, 0.05),
    ),
    Scenario("aa-drift", "A/A, both arms drift 0.5% -> 2% errors", False, drift=(0.005, 0.02)),
    Scenario(
        "aa-labelled", "A/A with labels (10-min delay)", False, accuracy=(0.9, 0.9), label_delay=10
    ),
    Scenario("errors", "errors 1% -> 2%", True, error_ratio=2.0),
    Scenario("latency-scale", "latency 1.3x slower", True, latency="scale"),
    Scenario("latency-tail", "latency: slowest 10% 1.3x slower (p99 +30%)", True, latency="tail"),
    Scenario("accuracy-d0", "accuracy 90% -> 87%, no label delay", True, accuracy=(0.9, 0.87)),
    Scenario(
        "accuracy-d10",
        "accuracy 90% -> 87%, labels 10 min late",
        True,
        accuracy=(0.9, 0.87),
        label_delay=10,
    ),
    Scenario(
        "accuracy-d60",
        "accuracy 90% -> 87%, labels 60 min late",
        True,
        accuracy=(0.9, 0.87),
        label_delay=60,
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def canary_z(z: FloatArray, kind: str) -> FloatArray:
    """The canary's latency in standard-normal units for a baseline draw ``z``."""
    shift = math.log(SLOWDOWN) / LATENCY_SIGMA
    if kind == "scale":
        return z + shift
    if kind == "tail":
        return np.where(z > _Z_TAIL, z + shift, z)
    return z


def canary_exceeds(z_threshold: float, kind: str) -> float:
    """P(canary latency > threshold), the threshold given in standard-normal units."""
    shift = math.log(SLOWDOWN) / LATENCY_SIGMA
    if kind == "scale":
        return normal_sf(z_threshold - shift)
    if kind == "tail":
        # Slowed requests are those above the p90; the map z -> z + shift jumps there.
        if z_threshold <= _Z_TAIL:
            return normal_sf(z_threshold)
        return normal_sf(max(_Z_TAIL, z_threshold - shift))
    return normal_sf(z_threshold)


_Z_TAIL = 1.2815515655446004  # standard-normal 0.90 quantile
