"""What the demo observed, as plain numbers: per-version statistics with confidence bounds,
statistics over time, the paired shadow comparison and the lost/duplicate accounting. Pure
functions over :class:`Sample` lists (no Kafka), shared by the live view, the report and the
final JSON.

>>> s = [Sample(0.5, "r1", "v1", "baseline", True, False, 2.0, "1", True)]
>>> view = version_views(s)["v1"]
>>> view.requests, view.accuracy, view.p50_ms
(1, 1.0, 2.0)
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Sample:
    """One result read back from the results topic. ``t``: seconds since the demo started
    (from the result's timestamp); ``correct``: None when the request has no label."""

    t: float
    request_id: str
    version: str
    arm: str
    served: bool
    error: bool
    latency_ms: float
    prediction: str | None
    correct: bool | None


@dataclass(frozen=True, slots=True)
class VersionView:
    """One version's numbers; accuracy bounds are 95% Wilson intervals over labelled answers."""

    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    labelled: int
    accuracy: float | None
    accuracy_low: float | None
    accuracy_high: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank: numpy's ``inverted_cdf``) of ``values``; None when
    empty.

    >>> quantile([3.0, 1.0, 2.0], 0.5), quantile([], 0.9)
    (2.0, None)
    """
    if not values:
        return None
    return float(np.quantile(values, q, method="inverted_cdf"))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion; None without trials.

    >>> low, high = wilson(90, 100)
    >>> round(low, 3), round(high, 3)
    (0.826, 0.945)
    """
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def view_of(samples: Iterable[Sample]) -> VersionView:
    """Statistics of one group of samples."""
    rows = list(samples)
    latencies = [s.latency_ms for s in rows if not s.error]
    judged = [s.correct for s in rows if s.correct is not None and not s.error]
    right = sum(judged)
    bounds = wilson(right, len(judged))
    return VersionView(
        requests=len(rows),
        errors=sum(s.error for s in rows),
        p50_ms=quantile(latencies, 0.5),
        p99_ms=quantile(latencies, 0.99),
        labelled=len(judged),
        accuracy=right / len(judged) if judged else None,
        accuracy_low=bounds[0] if bounds else None,
        accuracy_high=bounds[1] if bounds else None,
    )


def version_views(samples: Iterable[Sample]) -> dict[str, VersionView]:
    """Statistics per model version, in version order."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.version, []).append(s)
    return {v: view_of(groups[v]) for v in sorted(groups)}


def over_time(
    samples: Iterable[Sample], bucket_s: float, end_s: float
) -> dict[str, list[tuple[float, VersionView]]]:
    """Statistics per version per time bucket (bucket midpoints), empty buckets left out."""
    buckets: dict[str, dict[int, list[Sample]]] = {}
    for s in samples:
        if 0 <= s.t <= end_s:
            buckets.setdefault(s.version, {}).setdefault(int(s.t // bucket_s), []).append(s)
    return {
        version: [((i + 0.5) * bucket_s, view_of(rows)) for i, rows in sorted(by_index.items())]
        for version, by_index in sorted(buckets.items())
    }


@dataclass(frozen=True, slots=True)
class Accounting:
    """Every request sent, answered exactly once? (served results per request id)."""

    sent: int
    answered: int
    lost: int
    duplicates: int


def account(sent: Iterable[str], served: Mapping[str, int]) -> Accounting:
    """Compare the ids sent with the served results counted per id.

    >>> account(["a", "b", "c"], Counter({"a": 1, "b": 2}))
    Accounting(sent=3, answered=2, lost=1, duplicates=1)
    """
    ids = list(sent)
    lost = sum(1 for rid in ids if served.get(rid, 0) == 0)
    dupes = sum(1 for rid in ids if served.get(rid, 0) > 1)
    return Accounting(sent=len(ids), answered=len(ids) - lost, lost=lost, duplicates=dupes)


def requests_per_arm(samples: Iterable[Sample]) -> dict[str, int]:
    """Served answers per arm (``stable``, ``baseline``, ``canary``) plus ``shadow`` (answers
    the canary computed in shadow mode, never served)."""
    counts: Counter[str] = Counter()
    for s in samples:
        counts[s.arm if s.served else "shadow"] += 1
    return {arm: counts[arm] for arm in ("stable", "baseline", "canary", "shadow") if counts[arm]}


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """Paired comparison of the served (baseline) and shadow (canary) answers to the same
    requests: how often they agree, and the canary's latency minus the baseline's."""

    pairs: int
    agreement: float | None
    latency_diff_p50_ms: float | None
    latency_diff_mean_ms: float | None


def shadow_comparison(samples: Iterable[Sample]) -> ShadowComparison:
    """Pair each shadow answer with the served answer to the same request; error answers
    are left out of both comparisons."""
    served: dict[str, Sample] = {}
    shadow: dict[str, Sample] = {}
    for s in samples:
        (served if s.served else shadow)[s.request_id] = s
    pairs = [
        (served[rid], sh)
        for rid, sh in shadow.items()
        if rid in served and not sh.error and not served[rid].error
    ]
    if not pairs:
        return ShadowComparison(0, None, None, None)
    diffs = [sh.latency_ms - base.latency_ms for base, sh in pairs]
    agree = sum(base.prediction == sh.prediction for base, sh in pairs)
    return ShadowComparison(
        pairs=len(pairs),
        agreement=agree / len(pairs),
        latency_diff_p50_ms=statistics.median(diffs),
        latency_diff_mean_ms=statistics.fmean(diffs),
    )
