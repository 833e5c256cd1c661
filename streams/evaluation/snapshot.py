"""The decision rule's view of the current step, from a rollout's evidence (interim: the
statistics issue #12 replaces it with its own tally's snapshot).

Per plan metric and weight at routing, counts per arm from the released rows (complete
seconds, warm-up left out): ``errors`` over every answer; ``latency_p95``/``latency_p99`` over
the answers without error that carried latency evidence (their producer knew the rollout's
thresholds); ``accuracy`` over the labelled predictions.

>>> from model_canary.streams.evidence.state import RolloutEvidence
>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> from model_canary.streams.evaluation.plans import plan_of
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> snap = step_snapshot(RolloutEvidence.new("iris", "r1"), state, plan_of(state), now)
>>> snap.weight_bp, snap.canary_requests, sorted(snap.metrics)
(100, 0, ['errors', 'latency_p95', 'latency_p99'])
"""

from __future__ import annotations

from datetime import datetime

from model_canary.streams.evaluation.plans import current_weight
from model_canary.streams.evidence.rows import EvidenceRows
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import Mode, RolloutState
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.stats import ArmCounts, StepSnapshot


def step_snapshot(
    evidence: RolloutEvidence, state: RolloutState, plan: RolloutPlan, now: datetime
) -> StepSnapshot:
    """What :func:`~model_canary.streams.stats.decide` needs about the current step."""
    rows = evidence.tally
    weight = current_weight(state)
    metrics = {name: _counts(rows, name) for name in plan.metrics}
    routed = rows.routed.get((weight, "canary"))
    answered = rows.served.get((weight, "canary"))
    canary_requests = routed.requests if routed else (answered.requests if answered else 0)
    coverage = None
    if "accuracy" in plan.metrics:
        served = sum(rows.served[k].requests for k in rows.served if k[0] == weight)
        labelled = sum(rows.labels[k].labelled for k in rows.labels if k[0] == weight)
        coverage = labelled / served if served else 0.0
    steps = state.steps_bp
    shadow = state.mode is Mode.SHADOW
    return StepSnapshot(
        weight_bp=weight,
        final=not shadow and state.step_index == len(steps) - 2 and steps[-1] >= 10_000,
        elapsed_s=max(0.0, (now - state.step_started_at).total_seconds()),
        canary_requests=canary_requests,
        metrics=metrics,
        label_coverage=coverage,
        labelled={
            w: (_labelled(rows, w, "canary"), _labelled(rows, w, "baseline"))
            for w in sorted({w for w, _ in rows.labels})
        },
    )


def _counts(rows: EvidenceRows, metric: str) -> dict[int, ArmCounts]:
    out: dict[int, ArmCounts] = {}
    weights = {w for w, _ in (*rows.served, *rows.labels)}
    for w in sorted(weights):
        c = _n_bad(rows, metric, w, "canary")
        b = _n_bad(rows, metric, w, "baseline")
        out[w] = ArmCounts(c[0], b[0], c[1], b[1])
    return out


def _n_bad(rows: EvidenceRows, metric: str, weight: int, arm: str) -> tuple[int, int]:
    if metric == "accuracy":
        label = rows.labels.get((weight, arm))
        return (label.labelled, label.incorrect) if label else (0, 0)
    served = rows.served.get((weight, arm))
    if served is None:
        return 0, 0
    if metric == "errors":
        return served.requests, served.errors
    if metric == "latency_p95":
        return served.timed, served.over_p95
    if metric == "latency_p99":
        return served.timed, served.over_p99
    return 0, 0


def _labelled(rows: EvidenceRows, weight: int, arm: str) -> int:
    label = rows.labels.get((weight, arm))
    return label.labelled if label else 0
