"""The rollout's story as the demo shows it: the controller's applied commands (phase and
weight changes) and the evaluator's decisions, timed from the start of the demo. Pure.

>>> rows = [DecisionRow(1.0, "HOLD", 0, 1.0, "too-short: ..."),
...         DecisionRow(9.0, "ADVANCE", 0, 1.0, "ok: ...")]
>>> [d.outcome for d in acted(rows)]
['ADVANCE']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from model_canary.streams.messages import MetricEvidence


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One evaluator decision; ``t`` in seconds since the demo started."""

    t: float
    outcome: str
    step: int
    weight_percent: float
    reason: str
    evidence: tuple[MetricEvidence, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.outcome,
            "step": self.step,
            "weight_percent": self.weight_percent,
            "t_s": round(self.t, 1),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """A command the controller applied: the phase and canary weight it left."""

    t: float
    action: str
    issued_by: str
    phase: str
    weight_percent: float
    reason: str


def acted(decisions: Iterable[DecisionRow]) -> list[DecisionRow]:
    """The decisions that move a rollout (not HOLD), each once: a shadow rollout's evaluator
    repeats its ADVANCE verdict while nothing changes, which is one decision to a reader."""
    out: list[DecisionRow] = []
    for d in decisions:
        if d.outcome == "HOLD":
            continue
        if out and (out[-1].outcome, out[-1].step, out[-1].weight_percent) == (
            d.outcome,
            d.step,
            d.weight_percent,
        ):
            continue
        out.append(d)
    return out


def weight_steps(changes: Iterable[PhaseChange]) -> list[tuple[float, float]]:
    """(t, canary weight %) at every applied change, starting from 0 at t = 0."""
    points = [(0.0, 0.0)]
    for c in changes:
        points.append((c.t, c.weight_percent))
    return points


def describe_evidence(e: MetricEvidence) -> str:
    """One line: the metric's bad events per arm and the ratio's confidence bounds."""
    low = "-" if e.lower is None else f"{e.lower:.2g}"
    high = "inf" if e.upper is None else f"{e.upper:.2g}"
    alarm = " ALARM" if e.alarmed else ""
    return (
        f"{e.metric}: canary {e.canary_bad}/{e.canary_n} bad, baseline "
        f"{e.baseline_bad}/{e.baseline_n}; ratio in [{low}, {high}]{alarm}"
    )
