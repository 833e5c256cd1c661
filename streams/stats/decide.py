"""The per-step decision rule, as a pure function of counts and the policy.

* ROLLBACK as soon as any metric's harm test alarms: its bad-event ratio is shown to exceed
  ``1 + rollback_tolerance`` (alpha split evenly over the metrics);
* HOLD on a sample-ratio mismatch of labelled requests (the evidence is suspect, the canary
  is not proven harmful);
* ADVANCE when the step ran its minimum duration, the canary served its minimum requests
  and, where labels are expected, enough of them arrived; from the last step with a
  baseline (the next is 100%) also every metric's upper confidence bound must be below
  ``1 + tolerance``;
* FINALIZE at 100% after the minimum duration (no baseline is left to compare with);
* HOLD otherwise, saying why, and flagging a step that overran its maximum duration.

Counts are keyed by the weight in force when each request was routed, cumulative since the
rollout began: the tests are anytime-valid over the whole rollout, and late labels of an
earlier step still count at their own weight.

>>> counts = {"error_rate": {100: ArmCounts(300, 29_700, 3, 297)}}
>>> snap = StepSnapshot(weight_bp=100, elapsed_s=1800, canary_requests=300, metrics=counts)
>>> v = decide(snap, StepPolicy(min_canary_requests=200))
>>> v.outcome.value, v.code, v.evidence[0].alarmed
('ADVANCE', 'ok', False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from model_canary.streams.enums import Outcome
from model_canary.streams.messages import MetricEvidence
from model_canary.streams.stats.harm import MAX_BP, HarmResult, HarmTest
from model_canary.streams.stats.srm import SrmResult, sample_ratio_check


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Requests and bad events of one metric at one weight, per arm."""

    canary_n: int = 0
    baseline_n: int = 0
    canary_bad: int = 0
    baseline_bad: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPolicy:
    """The plan's thresholds, per metric (``default_*`` for metrics not named):

    * ``tolerances``: the promotion margin, the relative increase in bad-event rate still
      acceptable: the final step needs the upper confidence bound below ``1 + tolerance``;
    * ``rollback_tolerances``: the rollback test's null, ``ratio <= 1 + rollback_tolerance``;
      0 rolls back on evidence of any harm.
    """

    alpha: float = 0.05
    tolerances: Mapping[str, float] = field(default_factory=dict)
    default_tolerance: float = 0.2
    rollback_tolerances: Mapping[str, float] = field(default_factory=dict)
    default_rollback_tolerance: float = 0.0
    min_duration_s: float = 600.0
    min_canary_requests: int = 500
    min_label_coverage: float = 0.5
    max_duration_s: float = 7200.0
    srm_alpha: float = 0.01

    def tolerance(self, metric: str) -> float:
        return self.tolerances.get(metric, self.default_tolerance)

    def rollback_tolerance(self, metric: str) -> float:
        return self.rollback_tolerances.get(metric, self.default_rollback_tolerance)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSnapshot:
    """What the evaluator knows about the current step."""

    weight_bp: int
    #: The last step that still has a baseline: advancing from it promotes to 100%.
    final: bool = False
    elapsed_s: float
    #: Requests routed to the canary during this step.
    canary_requests: int
    #: ``{metric: {weight_bp: counts}}`` since the rollout began, by weight at routing.
    metrics: Mapping[str, Mapping[int, ArmCounts]]
    #: Share of this step's requests whose label arrived; None when no labels are expected.
    label_coverage: float | None = None
    #: ``{weight_bp: (canary, baseline)}`` labelled requests, for the sample-ratio check.
    labelled: Mapping[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision, a short machine-friendly ``code``, the reason in words, the evidence."""

    outcome: Outcome
    code: str
    reason: str
    evidence: tuple[MetricEvidence, ...] = ()
    srm: SrmResult | None = None


def decide(snapshot: StepSnapshot, policy: StepPolicy) -> Verdict:
    """The verdict on the step (see the module docstring for the rule)."""
    s, p = snapshot, policy
    alpha_m = p.alpha / max(1, len(s.metrics))
    results = {
        name: HarmTest(
            p.tolerance(name), alpha_m, rollback_tolerance=p.rollback_tolerance(name)
        ).evaluate({w: (c.canary_bad, c.baseline_bad) for w, c in by_weight.items()})
        for name, by_weight in s.metrics.items()
    }
    evidence = tuple(_evidence(name, s.metrics[name], r) for name, r in results.items())
    srm = sample_ratio_check(s.labelled, p.srm_alpha) if s.labelled else None

    alarms = [f"{name}: {_describe(r)}" for name, r in results.items() if r.alarmed]
    if alarms:
        return Verdict(Outcome.ROLLBACK, "harm", "; ".join(alarms), evidence, srm)
    if s.weight_bp >= MAX_BP:
        if s.elapsed_s >= p.min_duration_s:
            return Verdict(
                Outcome.FINALIZE, "ok", "full traffic held its minimum duration", evidence, srm
            )
        return Verdict(Outcome.HOLD, "too-short", _too_short(s, p), evidence, srm)
    if srm is not None and srm.mismatch:
        share = srm.canary / max(1, srm.canary + srm.baseline)
        expected = srm.expected_canary / max(1, srm.canary + srm.baseline)
        reason = f"labelled requests {share:.1%} canary, routed weights imply {expected:.1%}"
        return Verdict(Outcome.HOLD, "sample-ratio-mismatch", reason, evidence, srm)

    pending: list[tuple[str, str]] = []
    if s.elapsed_s < p.min_duration_s:
        pending.append(("too-short", _too_short(s, p)))
    if s.canary_requests < p.min_canary_requests:
        pending.append(
            ("too-few-samples", f"{s.canary_requests} canary requests of {p.min_canary_requests}")
        )
    if s.label_coverage is not None and s.label_coverage < p.min_label_coverage:
        pending.append(
            (
                "labels-missing",
                f"labels for {s.label_coverage:.0%} of requests, need {p.min_label_coverage:.0%}",
            )
        )
    if s.final:
        open_ = [
            f"{n} upper bound {_fmt(r.upper)} not below {1 + r.tolerance:g}"
            for n, r in results.items()
            if not r.harmless
        ]
        if open_:
            pending.append(("not-yet-harmless", "; ".join(open_)))
    if not pending:
        return Verdict(
            Outcome.ADVANCE, "ok", "no harm detected, step requirements met", evidence, srm
        )
    reason = "; ".join(text for _, text in pending)
    if s.elapsed_s >= p.max_duration_s:
        return Verdict(
            Outcome.HOLD,
            "max-duration-exceeded",
            f"step ran past {p.max_duration_s:g}s: {reason}",
            evidence,
            srm,
        )
    return Verdict(Outcome.HOLD, pending[0][0], reason, evidence, srm)


def _evidence(name: str, by_weight: Mapping[int, ArmCounts], r: HarmResult) -> MetricEvidence:
    return MetricEvidence(
        metric=name,
        baseline_n=sum(c.baseline_n for c in by_weight.values()),
        canary_n=sum(c.canary_n for c in by_weight.values()),
        baseline_bad=r.baseline_bad,
        canary_bad=r.canary_bad,
        statistic=r.log_lr,
        lower=r.lower,
        # Records travel as Avro/JSON, where infinity has no portable spelling: None = unbounded.
        upper=r.upper if math.isfinite(r.upper) else None,
        threshold=r.threshold,
        alarmed=r.alarmed,
    )


def _describe(r: HarmResult) -> str:
    return (
        f"bad-event ratio {_fmt(r.ratio)} (lower bound {_fmt(r.lower)}) exceeds "
        f"{1 + r.rollback_tolerance:g}; log LR {r.log_lr:.2f} >= {r.threshold:.2f}"
    )


def _too_short(s: StepSnapshot, p: StepPolicy) -> str:
    return f"step ran {s.elapsed_s:g}s of {p.min_duration_s:g}s"


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else ("n/a" if math.isnan(x) else f"{x:.3g}")
