"""A decision in words: the verdict of one rollout with its reason and per-metric evidence,
and the command it asks of the controller.

The reason always describes the current state of the evidence (a HOLD says what it waits
for now, with the figures), so ``canary status`` and ``canary history`` never show a stale one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.enums import Action, Mode, Outcome, Phase
from model_canary.streams.messages import Decision, MetricEvidence, RolloutState
from model_canary.streams.stats.compare import Comparison
from model_canary.streams.stats.decide import (
    CODES,
    HARM,
    LABELS_MISSING,
    LATENCY_METRICS,
    MAX_DURATION,
    NOT_YET,
    OUTCOMES,
    SRM,
    THRESHOLDS,
    TOO_FEW,
    TOO_SHORT,
    WAITING,
    Decisions,
    StepPolicy,
    StepSnapshot,
    decide_many,
)
from model_canary.streams.stats.sequential import promotion_log_e, rollback_log_e
from model_canary.streams.stats.thresholds import MIN_THRESHOLD_ITEMS, QUANTILES, THRESHOLD_ITEMS

#: HOLD codes that put the rollout in the Holding phase (the others are ordinary waiting).
HOLDING_CODES = frozenset({"sample-ratio-mismatch", "max-duration-exceeded"})
#: A verdict that moves nothing (a HOLD) is published again this often with its newest
#: evidence, so a long HOLD stays visible in ``canary history`` as it evolves.
REPEAT_S = 60.0
#: Ratios at which the displayed confidence bounds are tested (1/20 .. 20, 1% steps).
BOUND_RATIOS = np.exp(np.arange(-300, 301) * 0.01)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision, a short machine-friendly ``code``, the reason in words, the evidence."""

    outcome: Outcome
    code: str
    reason: str
    evidence: tuple[MetricEvidence, ...] = ()


def action_for(outcome: Outcome, code: str, mode: Mode, phase: Phase) -> Action | None:
    """The command a verdict asks for (None: it moves nothing).

    >>> action_for(Outcome.HOLD, "max-duration-exceeded", Mode.CANARY, Phase.PROGRESSING)
    <Action.HOLD: 'hold'>
    >>> action_for(Outcome.ADVANCE, "ok", Mode.SHADOW, Phase.PROGRESSING) is None
    True
    """
    if outcome is Outcome.HOLD:
        return Action.HOLD if code in HOLDING_CODES and phase is not Phase.HOLDING else None
    if mode is Mode.SHADOW and outcome in (Outcome.ADVANCE, Outcome.FINALIZE):
        # A shadow rollout has no steps: the evaluator stops a harmful shadow, but going live
        # is the operator's call, informed by this decision.
        return None
    return {
        Outcome.ADVANCE: Action.ADVANCE,
        Outcome.ROLLBACK: Action.ROLLBACK,
        Outcome.FINALIZE: Action.FINALIZE,
    }[outcome]


def should_publish(last: tuple[str, float] | None, key: str, now_s: float) -> bool:
    """Publish a verdict identified by ``key`` (state revision, outcome, code) at ``now_s``,
    given the last one published ``(key, at)``: when it differs, or every :data:`REPEAT_S`.

    >>> should_publish(("7:HOLD:too-short", 100.0), "7:HOLD:too-short", 130.0)
    False
    >>> should_publish(("7:HOLD:too-short", 100.0), "7:HOLD:too-short", 160.0)
    True
    """
    return last is None or last[0] != key or now_s - last[1] >= REPEAT_S


def current_decision(state: RolloutState, decisions: Sequence[Decision]) -> Decision | None:
    """The newest decision about the rollout's current step taken since its state last
    changed (None: the evaluator has not decided on this step yet). ``canary status`` shows
    it, so the reason is the current one, not the command's that started the step."""
    mine = [
        d
        for d in decisions
        if d.rollout_id == state.rollout_id
        and d.step_index == state.step_index
        and d.decided_at >= state.updated_at
    ]
    return max(mine, key=lambda d: d.decided_at, default=None)


def decide(snapshot: StepSnapshot, rule: StepPolicy) -> Verdict:
    """The verdict of a one-rollout snapshot (the evaluator's call)."""
    return verdict(snapshot, decide_many(snapshot, rule), rule)


def verdict(s: StepSnapshot, d: Decisions, p: StepPolicy, replica: int = 0) -> Verdict:
    """The verdict of one replica (the evaluator's: replica 0) in words."""
    r = replica
    outcome, code = OUTCOMES[int(d.outcome[r])], int(d.code[r])
    evidence = tuple(_evidence(name, s, d, p, r) for name in d.rollback)
    return Verdict(outcome, CODES[code], _reason(code, s, d, p, r, evidence), evidence)


def _reason(
    code: int,
    s: StepSnapshot,
    d: Decisions,
    p: StepPolicy,
    r: int,
    evidence: tuple[MetricEvidence, ...],
) -> str:
    if code == HARM:
        harmed = [e for e in evidence if e.alarmed] or sorted(evidence, key=lambda e: -e.statistic)
        parts = [
            f"{e.metric}: canary {_counted(e.metric)}{_rate(e.canary_bad, e.canary_n)} vs "
            f"{s.comparisons[e.metric].comparator} {_rate(e.baseline_bad, e.baseline_n)}, "
            f"ratio shown above {_fmt(e.lower)}"
            for e in harmed[:2]
        ]
        return "; ".join(parts) + (
            f" (evidence {math.exp(float(d.alarm_log_e[r])):.3g} >= {1 / p.alpha:g})"
        )
    if OUTCOMES[int(d.outcome[r])] is Outcome.FINALIZE:
        return "full traffic held its minimum duration"
    if int(d.outcome[r]) == 0:
        return "no harm detected, step requirements met"
    if code == SRM:
        texts = []
        for name, invalid in d.invalid.items():
            if not invalid[r]:
                continue
            c = s.labels[name]
            lab_c, n_c = int(c.canary_bad[r].sum()), int(c.canary_n[r].sum())
            lab_b, n_b = int(c.other_bad[r].sum()), int(c.other_n[r].sum())
            what = "labels arrive" if name == "accuracy" else f"feedback for {name} arrives"
            texts.append(
                f"{what} for {_rate(lab_c, n_c)} of canary requests but "
                f"{_rate(lab_b, n_b)} of baseline ones: {name} is not compared"
            )
        return "; ".join(texts)
    texts = []
    if s.behind_s[r] > p.lag_slack_s:
        arm = s.lagging[r] if s.lagging else "an arm"
        texts.append(f"waiting for {arm} results: complete up to {s.behind_s[r]:.0f}s ago")
    if s.elapsed_s[r] < p.min_duration_s:
        texts.append(f"step ran {s.elapsed_s[r]:.0f}s of {p.min_duration_s:g}s")
    elif s.evidence_s[r] < p.min_duration_s:
        texts.append(
            f"complete evidence covers {s.evidence_s[r]:.0f}s of the step's {p.min_duration_s:g}s"
        )
    if s.canary_requests[r] < p.min_canary_requests:
        texts.append(f"{s.canary_requests[r]} canary requests of {p.min_canary_requests}")
    for name, share in s.label_coverage.items():
        need = p.min_label_coverage.get(name, 0.0)
        if share[r] < need:
            what = "labels" if name == "accuracy" else f"{name} feedback"
            texts.append(f"{what} for {share[r]:.0%} of requests, need {need:.0%}")
    if bool(s.final[r]):
        for name, log_e in d.promotion.items():
            if log_e[r] < d.threshold:
                rule = p.metrics[name]
                # The promotion test's own counts (batches, for latency timed per batch).
                pc = s.promotion_comparison(name)
                bad, n = int(pc.canary_bad[r].sum()), int(pc.canary_n[r].sum())
                texts.append(
                    f"{name} not yet shown below {1 + rule.tolerance:g}x "
                    f"{pc.comparator} + {rule.margin:g} "
                    f"(canary {_counted(name, 'batch') if pc.unit_of(r) == 'batch' else ''}"
                    f"{_rate(bad, n)}, "
                    f"evidence {math.exp(float(log_e[r])):.3g} of {math.exp(d.threshold):.3g})"
                )
    if code == THRESHOLDS or (
        s.thresholds_fixed is not None
        and not bool(s.thresholds_fixed[r])
        and any(m in LATENCY_METRICS for m in d.rollback)
    ):
        texts.append(
            "latency thresholds not fixed yet (they need the baseline's first "
            f"{MIN_THRESHOLD_ITEMS:,}-{THRESHOLD_ITEMS:,} answers)"
        )
    reason = "; ".join(texts) or CODES[code]
    if code == MAX_DURATION:
        return f"step ran past {p.max_duration_s:g}s: {reason}"
    assert code in (WAITING, TOO_SHORT, TOO_FEW, LABELS_MISSING, NOT_YET, MAX_DURATION, THRESHOLDS)
    return reason


def _evidence(name: str, s: StepSnapshot, d: Decisions, p: StepPolicy, r: int) -> MetricEvidence:
    comp = s.comparisons[name]
    log_e = float(d.rollback[name][r])
    alarmed = bool(d.outcome[r] == 2) and log_e >= d.threshold
    lower, upper = ratio_bounds(comp, p, d.threshold, r, s.promotion_comparison(name))
    return MetricEvidence(
        metric=name,
        baseline_n=int(comp.other_n[r].sum()),
        canary_n=int(comp.canary_n[r].sum()),
        baseline_bad=int(comp.other_bad[r].sum()),
        canary_bad=int(comp.canary_bad[r].sum()),
        statistic=log_e if math.isfinite(log_e) else 0.0,
        lower=lower,
        # Records travel as Avro/JSON, where infinity has no portable spelling: None = unbounded.
        upper=upper if upper is not None and math.isfinite(upper) else None,
        threshold=d.threshold,
        alarmed=alarmed,
    )


def ratio_bounds(
    comp: Comparison,
    p: StepPolicy,
    threshold: float,
    r: int = 0,
    promotion: Comparison | None = None,
) -> tuple[float, float | None]:
    """Anytime-valid bounds on the canary/comparator ratio, for display: the largest ratio the
    roll-back test (all weights) shows the canary above, and the smallest the promotion test
    (the newest weight with data, margin 0) shows it below (None: not yet bounded), each on
    its own evidence: ``comp`` (requests) and ``promotion`` (default ``comp``; for latency
    timed per micro-batch, batches: the upper bound is then on the ratio of batch rates)."""
    one = _replica(comp, np.array([r]))
    k = one.subtests.shape[0]
    if k == 0 or not one.usable.any():
        return 0.0, None
    many = _replica(one, np.zeros(BOUND_RATIOS.size, dtype=np.int64))
    deltas, grid_w = p.metrics[comp.metric].grid()
    first = np.full(k, -np.inf)
    first[0] = 0.0
    above = rollback_log_e(many, np.log(BOUND_RATIOS), deltas, grid_w, first) >= threshold
    lower = float(BOUND_RATIOS[above].max()) if above.any() else 0.0
    if promotion is not None and promotion is not comp:
        one = _replica(promotion, np.array([r]))
        if not one.usable.any():
            return lower, None
        many = _replica(one, np.zeros(BOUND_RATIOS.size, dtype=np.int64))
    stratum = int(np.flatnonzero(one.usable[0])[-1])
    sub = int(np.flatnonzero(one.subtests[:, stratum])[-1])
    below = promotion_log_e(many, stratum, sub, BOUND_RATIOS - 1.0, 0.0) >= threshold
    return lower, float(BOUND_RATIOS[below].min()) if below.any() else None


def _replica(c: Comparison, sl: npt.NDArray[np.int64]) -> Comparison:
    return Comparison(
        c.metric,
        c.comparator,
        c.weights,
        c.canary_n[sl],
        c.canary_bad[sl],
        c.other_n[sl],
        c.other_bad[sl],
        c.subtests,
        c.phi[sl],
    )


def _counted(metric: str, unit: str = "item") -> str:
    """What a metric's rate counts, where its name does not say it: the rates are of *bad*
    events (a wrong label, an answer slower than the baseline's percentile), so "accuracy:
    canary 97.83%" would read as the accuracy; latency compared per batch counts batches.

    >>> _counted("accuracy"), _counted("latency_p99"), _counted("errors")
    ('wrong on ', 'slower than the p99 threshold on ', '')
    >>> _counted("latency_p95", "batch")
    'batches with an answer slower than the p95 threshold: '
    """
    if metric == "accuracy":
        return "wrong on "
    if metric in QUANTILES:
        q = metric.removeprefix("latency_")
        if unit == "batch":
            return f"batches with an answer slower than the {q} threshold: "
        return f"slower than the {q} threshold on "
    return ""


def _rate(bad: int, n: int) -> str:
    return "n/a" if n <= 0 else f"{bad / n:.2%} ({bad}/{n})"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else ("inf" if math.isinf(x) else f"{x:.3g}")
