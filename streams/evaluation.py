"""What the evaluator accumulates per rollout, as plain JSON-able data (it lives in a
changelog-backed table), and how it becomes a :class:`StepSnapshot` for the decision rule.

Counts are kept per metric, per weight at routing, per arm, cumulative since the rollout
began: the sequential tests stay valid across weight changes and are never pooled across
weights. Bad events: an error; a request slower than the baseline's p95 or p99, with those
thresholds fixed from the first baseline requests of the rollout before any latency is
compared; a misclassified labelled request.

>>> agg = Aggregate.new("r1")
>>> agg.add("errors", 100, canary=True, bad=True)
>>> agg.counts["errors"]["100"]
[1, 0, 1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.messages import Arm, MetricEvent, Mode, RolloutState, epoch_ms
from streams.plan import RolloutPlan
from streams.routing import SHADOW_PAIR_BP
from streams.stats import ArmCounts, StepPolicy, StepSnapshot

THRESHOLD_SAMPLES = 200
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
        }

    def add(self, metric: str, weight_bp: int, *, canary: bool, bad: bool) -> None:
        row = self.counts.setdefault(metric, {}).setdefault(str(weight_bp), [0, 0, 0, 0])
        row[0 if canary else 1] += 1
        if bad:
            row[2 if canary else 3] += 1

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
        if event.weight_bp == current_weight(state) and routed >= self.step_key:
            if routed < self.step_key + plan.warmup_seconds * 1000:
                return False  # warm-up after a weight change: not counted
            self.step[0 if canary else 1] += 1
        if "errors" in plan.metrics:
            self.add("errors", event.weight_bp, canary=canary, bad=event.error)
        if not event.error:
            self._latency(event, canary, plan)
        return event.prediction is not None and not event.error

    def _latency(self, event: MetricEvent, canary: bool, plan: RolloutPlan) -> None:
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
            self.add(metric, event.weight_bp, canary=canary, bad=bad)

    def label(self, *, weight_bp: int, canary: bool, correct: bool, this_step: bool) -> None:
        """Count a ground-truth label joined with its prediction."""
        self.add("accuracy", weight_bp, canary=canary, bad=not correct)
        row = self.labelled.setdefault(str(weight_bp), [0, 0])
        row[0 if canary else 1] += 1
        if this_step:
            self.step[2] += 1

    def snapshot(self, state: RolloutState, plan: RolloutPlan, now: datetime) -> StepSnapshot:
        """What the decision rule needs about the current step."""
        self.start_step(state)
        metrics = {
            name: {
                int(w): ArmCounts(
                    canary_n=r[0], baseline_n=r[1], canary_bad=r[2], baseline_bad=r[3]
                )
                for w, r in self.counts.get(name, {}).items()
            }
            for name in plan.metrics
        }
        requests = self.step[0] + self.step[1]
        coverage = None
        if "accuracy" in plan.metrics:
            coverage = self.step[2] / requests if requests else 0.0
        steps = state.steps_bp
        shadow = state.mode is Mode.SHADOW
        return StepSnapshot(
            weight_bp=current_weight(state),
            final=not shadow and state.step_index == len(steps) - 2 and steps[-1] >= 10_000,
            elapsed_s=max(0.0, (now - state.step_started_at).total_seconds()),
            canary_requests=self.step[0],
            metrics=metrics,
            label_coverage=coverage,
            labelled={int(w): (r[0], r[1]) for w, r in self.labelled.items()},
        )


def current_weight(state: RolloutState) -> int:
    """The weight this step's requests carry (mirrored pairs carry 1/2 in shadow mode)."""
    return SHADOW_PAIR_BP if state.mode is Mode.SHADOW else state.weight_bp


def policy(plan: RolloutPlan) -> StepPolicy:
    """The decision rule's thresholds from a rollout plan."""
    accuracy = plan.metrics.get("accuracy")
    return StepPolicy(
        alpha=plan.alpha,
        tolerances={name: m.tolerance for name, m in plan.metrics.items()},
        min_duration_s=plan.min_step_seconds,
        min_canary_requests=plan.min_canary_requests,
        min_label_coverage=accuracy.min_label_coverage if accuracy else 0.0,
        max_duration_s=plan.max_step_seconds,
    )
