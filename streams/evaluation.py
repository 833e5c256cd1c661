"""What the evaluator accumulates per rollout, as plain JSON-able data (it lives in a
changelog-backed table), and how it becomes a :class:`StepSnapshot` for the decision rule.

Counts are kept per metric, per weight at routing, per arm, cumulative since the rollout
began: the sequential tests stay valid across weight changes and are never pooled across
weights. Bad events: an error; a request slower than the baseline's p95 or p99, with those
thresholds fixed from the first baseline requests of the rollout before any latency is
compared; a misclassified labelled request.

The tests only see requests routed before both arms' results have arrived (a low watermark):
counting results as they arrive would let the faster arm's bad events be seen first - a
lightly loaded canary answers sooner - and under equal rates the test's statistic would drift
up with the lag alone (it rolled back an identical canary one second into a 10% step, at an
apparent ratio of 3.9, when the null was "no harm"). The arm of a bad event is a coin flip
given the weight only over a window in which both arms' events are complete; holding back
the last seconds restores that, and what the watermark releases does not depend on which
arm the bad events came from. ``counts`` keeps every event (the exported metrics); the
held-back tail is in ``pending`` until released.

>>> agg = Aggregate.new("r1")
>>> agg.add("errors", 100, canary=True, bad=True)
>>> agg.counts["errors"]["100"]
[1, 0, 1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from model_canary.streams.messages import Arm, MetricEvent, Mode, RolloutState, epoch_ms
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.stats import StepSnapshot, from_counts, policy
from model_canary.streams.stats.layout import SHADOW_PAIR_BP

__all__ = ["Aggregate", "current_weight", "policy"]

THRESHOLD_SAMPLES = 200
#: Results of requests routed up to this long before the slower arm's newest one are
#: complete (an arm's partitions are worked in parallel, so slightly out of order).
SLACK_MS = 1_000
#: An arm silent for this long (routed-time behind the other, or the clock) is not lagging
#: but idle - one weight at 0 or 100%, or nothing routed to it: its absence is data.
MAX_LAG_MS = 10_000
LATENCY_METRICS = {"latency_p95": 0.95, "latency_p99": 0.99}


@dataclass
class Aggregate:
    """One rollout's evidence. ``counts[metric][weight_bp]`` is
    ``[canary_n, baseline_n, canary_bad, baseline_bad]`` (weights as text: JSON keys)."""

    rollout_id: str
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    labelled: dict[str, list[int]] = field(default_factory=dict)
    warmup_latencies: list[float] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    step_key: int = 0
    step: list[int] = field(default_factory=lambda: [0, 0, 0])  # canary, baseline, labelled
    offsets: dict[str, list[int]] = field(default_factory=dict)
    #: ``pending[second routed][metric][weight_bp]``: the part of ``counts`` the tests may not
    #: use yet (see the module docstring); ``high_water``: newest routed ms, canary and baseline.
    pending: dict[str, dict[str, dict[str, list[int]]]] = field(default_factory=dict)
    high_water: list[int] = field(default_factory=lambda: [0, 0])

    @classmethod
    def new(cls, rollout_id: str) -> Aggregate:
        return cls(rollout_id)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Aggregate:
        return cls(**doc)

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "counts": self.counts,
            "labelled": self.labelled,
            "warmup_latencies": self.warmup_latencies,
            "thresholds": self.thresholds,
            "step_key": self.step_key,
            "step": self.step,
            "offsets": self.offsets,
            "pending": self.pending,
            "high_water": self.high_water,
        }

    def add(
        self, metric: str, weight_bp: int, *, canary: bool, bad: bool, routed_ms: int | None = None
    ) -> None:
        """Count one request; with ``routed_ms`` it is held back until the watermark passes."""
        rows = [self.counts.setdefault(metric, {}).setdefault(str(weight_bp), [0, 0, 0, 0])]
        if routed_ms is not None:
            held = self.pending.setdefault(str(routed_ms // 1000), {}).setdefault(metric, {})
            rows.append(held.setdefault(str(weight_bp), [0, 0, 0, 0]))
        for row in rows:
            row[0 if canary else 1] += 1
            if bad:
                row[2 if canary else 3] += 1

    def _arrived(self, canary: bool, routed_ms: int) -> None:
        # Move the arm's high-water mark and release the seconds both arms have passed.
        arm = 0 if canary else 1
        self.high_water[arm] = max(self.high_water[arm], routed_ms)
        cutoff = self._cutoff(None)
        for second in [b for b in self.pending if (int(b) + 1) * 1000 <= cutoff]:
            del self.pending[second]

    def _cutoff(self, now_ms: int | None) -> int:
        # Requests routed before this (ms) are complete in both arms.
        low, high = min(self.high_water), max(self.high_water)
        cutoff = max(low - SLACK_MS, high - MAX_LAG_MS)
        return cutoff if now_ms is None else max(cutoff, now_ms - MAX_LAG_MS)

    def seen(self, topic: str, partition: int, offset: int) -> None:
        """Remember the offset range used, for the decision's audit trail."""
        span = self.offsets.setdefault(f"{topic}:{partition}", [offset, offset])
        span[0] = min(span[0], offset)
        span[1] = max(span[1], offset)

    def start_step(self, state: RolloutState) -> None:
        key = epoch_ms(state.step_started_at)
        if key != self.step_key:
            self.step_key = key
            self.step = [0, 0, 0]

    def record(self, event: MetricEvent, state: RolloutState, plan: RolloutPlan) -> bool:
        """Count a metric event of this rollout; returns True when it should be kept for a
        later label (it has a prediction and is countable)."""
        self.start_step(state)
        canary = event.arm is Arm.CANARY
        routed = epoch_ms(event.routed_at)
        self._arrived(canary, routed)
        if event.weight_bp == current_weight(state) and routed >= self.step_key:
            if routed < self.step_key + plan.warmup_seconds * 1000:
                return False  # warm-up after a weight change: not counted
            self.step[0 if canary else 1] += 1
        if "errors" in plan.metrics:
            self.add("errors", event.weight_bp, canary=canary, bad=event.error, routed_ms=routed)
        if not event.error:
            self._latency(event, canary, plan, routed)
        return event.prediction is not None and not event.error

    def _latency(self, event: MetricEvent, canary: bool, plan: RolloutPlan, routed_ms: int) -> None:
        wanted = [m for m in LATENCY_METRICS if m in plan.metrics]
        if not wanted:
            return
        if not self.thresholds:
            if not canary:
                self.warmup_latencies.append(event.latency_ms)
                if len(self.warmup_latencies) >= THRESHOLD_SAMPLES:
                    ordered = sorted(self.warmup_latencies)
                    for metric, q in LATENCY_METRICS.items():
                        self.thresholds[metric] = ordered[
                            min(len(ordered) - 1, int(q * len(ordered)))
                        ]
                    self.warmup_latencies = []
            return
        for metric in wanted:
            bad = event.latency_ms > self.thresholds[metric]
            self.add(metric, event.weight_bp, canary=canary, bad=bad, routed_ms=routed_ms)

    def label(self, *, weight_bp: int, canary: bool, correct: bool, this_step: bool) -> None:
        """Count a ground-truth label joined with its prediction."""
        self.add("accuracy", weight_bp, canary=canary, bad=not correct)
        row = self.labelled.setdefault(str(weight_bp), [0, 0])
        row[0 if canary else 1] += 1
        if this_step:
            self.step[2] += 1

    def snapshot(self, state: RolloutState, plan: RolloutPlan, now: datetime) -> StepSnapshot:
        """What the decision rule needs about the current step (counts kept per request, not
        per bucket: every item is taken as its own unit, design effect 1)."""
        self.start_step(state)
        now_ms = epoch_ms(now)
        cutoff = self._cutoff(now_ms)
        held: dict[str, dict[str, list[int]]] = {}
        for second, by_metric in self.pending.items():
            if (int(second) + 1) * 1000 > cutoff:
                for name, by_weight in by_metric.items():
                    for w, row in by_weight.items():
                        acc = held.setdefault(name, {}).setdefault(w, [0, 0, 0, 0])
                        acc[:] = [a + r for a, r in zip(acc, row, strict=True)]
        rule = policy(plan)
        comparisons = {}
        served: dict[int, tuple[int, int]] = {}
        for name in plan.metrics:
            rows = {}
            for w, r in self.counts.get(name, {}).items():
                h = held.get(name, {}).get(w, [0, 0, 0, 0])
                c_n, b_n, c_bad, b_bad = (a - b for a, b in zip(r, h, strict=True))
                rows[int(w)] = (c_n, b_n, c_bad, b_bad)
                if name == "errors":
                    served[int(w)] = (c_n, b_n)
            comparisons[name] = from_counts(name, plan.metrics[name].compare, rows, rule.starts)
        labels = None
        coverage = None
        if "accuracy" in plan.metrics:
            requests = self.step[0] + self.step[1]
            coverage = np.array([self.step[2] / requests if requests else 0.0])
            if served:
                lab = {
                    int(w): (*served.get(int(w), (0, 0)), r[0], r[1])
                    for w, r in self.labelled.items()
                }
                labels = from_counts("labels", "baseline", lab, rule.starts)
        steps = state.steps_bp
        shadow = state.mode is Mode.SHADOW
        start_s = epoch_ms(state.step_started_at) / 1000.0
        return StepSnapshot(
            weight_bp=np.array([current_weight(state)]),
            final=np.array(
                [not shadow and state.step_index == len(steps) - 2 and steps[-1] >= 10_000]
            ),
            elapsed_s=np.array([max(0.0, (now - state.step_started_at).total_seconds())]),
            evidence_s=np.array([max(0.0, cutoff / 1000.0 - start_s)]),
            canary_requests=np.array([self.step[0]]),
            comparisons=comparisons,
            labels=labels,
            label_coverage=coverage,
            behind_s=np.array([max(0.0, (now_ms - cutoff) / 1000.0)]),
        )


def current_weight(state: RolloutState) -> int:
    """The weight this step's requests carry (mirrored pairs carry 1/2 in shadow mode)."""
    return SHADOW_PAIR_BP if state.mode is Mode.SHADOW else state.weight_bp
