"""From a :class:`~.tally.Tally` and where each rollout is, the decision rule's input.

:func:`policy` turns a rollout plan into the rule's parameters (every default lives in the
plan module); :func:`take_snapshot` reads the tally's released evidence for the current step.
Both serve the evaluator (one rollout) and ``canary sim`` (many) alike.

>>> from model_canary.streams.plan import parse_plan
>>> p = policy(parse_plan({"model": "m", "canary": "v2"}))
>>> p.starts, p.final_weight, p.metrics["latency_p99"].comparator
((100, 2000, 5000), 5000, 'control')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.plan import (
    LAG_SLACK_SECONDS,
    POOLED_PRIOR,
    SRM_ALPHA,
    RolloutPlan,
    labelled_metrics,
    outcome_metrics,
)
from model_canary.streams.stats.compare import UNITS, compare, compare_units
from model_canary.streams.stats.decide import MetricRule, StepPolicy, StepSnapshot
from model_canary.streams.stats.layout import ARMS, CANARY, MAX_BP, N, coverage_def, metric_def
from model_canary.streams.stats.tally import Tally

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def policy(plan: RolloutPlan) -> StepPolicy:
    """The decision rule's parameters for ``plan``."""
    return StepPolicy(
        alpha=plan.alpha,
        metrics={
            name: MetricRule(
                comparator=m.compare,
                tolerance=m.tolerance,
                margin=m.margin,
                rollback_tolerance=m.rollback_tolerance,
                alarm_deltas=tuple(math.log(r) for r in m.alarm_ratios),
            )
            for name, m in plan.metrics.items()
        },
        steps_bp=plan.steps_bp if plan.mode == "canary" else (5000, MAX_BP),
        min_duration_s=plan.min_step_seconds,
        min_canary_requests=plan.min_canary_requests,
        min_label_coverage={
            name: plan.metrics[name].min_label_coverage for name in labelled_metrics(plan)
        },
        max_duration_s=plan.max_step_seconds,
        srm_alpha=SRM_ALPHA,
        lag_slack_s=LAG_SLACK_SECONDS,
        pooled_prior=POOLED_PRIOR,
    )


def tally_for(plan: RolloutPlan, replicas: int = 1) -> Tally:
    """An empty tally laid out for ``plan`` (the evaluator: one rollout; ``canary sim``:
    ``replicas`` rollouts at once)."""
    shadow = plan.mode == "shadow"
    return Tally(
        replicas,
        control=plan.control,
        warmup_s=plan.warmup_seconds,
        weights=() if shadow else [w for w in plan.steps_bp if 0 < w < MAX_BP],
        shadow_bp=plan.shadow_sample_bp if shadow else None,
        outcomes=tuple(outcome_metrics(plan)),
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """Where each rollout is, per replica ``(R,)`` (from its rollout state)."""

    weight_bp: IntArray  #: the weight this step's requests carry
    step_index: IntArray
    step_started_s: FloatArray  #: epoch seconds
    steps_bp: tuple[int, ...]
    shadow: bool = False

    @property
    def final(self) -> npt.NDArray[np.bool_]:
        """The step is the last before 100% (advancing from it promotes)."""
        last = len(self.steps_bp) - 2
        full_next = bool(self.steps_bp) and self.steps_bp[-1] >= MAX_BP
        return np.asarray((self.step_index == last) & full_next & (not self.shadow))


def take_snapshot(
    tally: Tally,
    progress: Progress,
    rule: StepPolicy,
    now_s: float,
    replicas: npt.ArrayLike | None = None,
    complete_upto: npt.NDArray[np.int64] | None = None,
    thresholds_fixed: npt.ArrayLike | None = None,
) -> StepSnapshot:
    """The rule's input for ``replicas`` of ``tally`` (default: all) at ``now_s``;
    ``complete_upto`` ``(R, arms)``: per arm, the newest second its results are complete up to
    (to name the lagging arm in a HOLD); ``thresholds_fixed`` ``(R,)``: whether each rollout's
    latency thresholds are fixed (a step holds until they are; None: not required)."""
    idx = (
        np.arange(tally.replicas)
        if replicas is None
        else np.asarray(replicas, dtype=np.int64).reshape(-1)
    )
    starts = rule.starts
    # The promotion test counts latency per micro-batch where the workers time batches (the
    # roll-back test keeps counting requests): only needed where a step can promote. Both
    # comparisons of such a metric are worked out together (compare_units).
    final = bool(np.any(progress.final))
    comparisons = {}
    promotions = {}
    for name, r in rule.metrics.items():
        both = final and metric_def(name).batch_unit is not None
        got = compare_units(tally, name, r.comparator, starts, idx, UNITS if both else ("item",))
        comparisons[name] = got["item"]
        if both:
            promotions[name] = got["batch"]
    # Per labelled metric: its sample-ratio check, and the share of this step's items whose
    # label (feedback that counts for it) has arrived.
    labelled = tuple(rule.min_label_coverage)
    labels = {
        name: compare(tally, coverage_def(name), "baseline", starts, idx) for name in labelled
    }
    exposure = [tally.index(metric_def(name).exposure) for name in labelled]
    weight = progress.weight_bp
    canary = np.zeros(idx.size, dtype=np.int64)
    served = np.zeros(idx.size)
    counted = np.zeros((idx.size, len(labelled)))
    for w in np.unique(weight):
        at = weight == w
        for j, (sw, _) in enumerate(tally.slots):
            if sw != w:
                continue
            tot = tally.totals[idx[at], j]  # (R', arms, F)
            canary[at] += tot[:, CANARY, N]
            served[at] += tot[:, :, N].sum(axis=1)
            counted[at] += tot[:, :, exposure].sum(axis=1)
    share = np.where(served[:, None] > 0, counted / np.maximum(served, 1.0)[:, None], 0.0)
    behind = now_s - (tally.watermark[idx] + 1).astype(np.float64)
    lagging: tuple[str, ...] = ()
    if complete_upto is not None:
        lagging = tuple(ARMS[int(a)] for a in np.argmin(complete_upto, axis=1))
    return StepSnapshot(
        weight_bp=np.asarray(weight, dtype=np.int64),
        final=progress.final,
        elapsed_s=np.maximum(0.0, now_s - progress.step_started_s),
        evidence_s=np.maximum(0.0, tally.watermark[idx] + 1.0 - progress.step_started_s),
        canary_requests=canary,
        comparisons=comparisons,
        promotions=promotions,
        labels=labels,
        label_coverage={name: share[:, i] for i, name in enumerate(labelled)},
        behind_s=np.maximum(0.0, behind),
        lagging=lagging,
        thresholds_fixed=(
            None
            if thresholds_fixed is None
            else np.broadcast_to(np.asarray(thresholds_fixed, dtype=bool), idx.shape).copy()
        ),
    )
