"""The per-step decision rule, vectorised over replicas (the evaluator decides one rollout,
``canary sim`` thousands at once with the same code).

For each replica, in this order:

* **ROLLBACK** ``harm`` when the metrics' roll-back e-processes, averaged over the ``M``
  metrics, reach ``1 / alpha`` (an average of test martingales is one: a canary no worse
  than its comparator on every metric is rolled back with probability at most ``alpha``). A
  metric whose evidence is invalidated (a labelled metric - accuracy or an outcome metric -
  under a labelled sample-ratio mismatch) takes no part;
* **FINALIZE** at 100% once the step ran its minimum duration;
* **HOLD** ``sample-ratio-mismatch`` when labels (for an outcome metric: the feedback that
  counts for it) arrive in other proportions than requests were served (that metric's
  comparison is suspect: look, do not roll back on it);
* **ADVANCE** once the step ran its minimum duration *of complete evidence* (seconds whose
  results have arrived in every arm: an arm that lags delays the step by its lag, and a HOLD
  says ``waiting-for-results`` while that is what it waits for), the canary served its minimum items
  (after the warm-up), labels cover enough items for every labelled metric, and - from the
  last step before 100% - every metric is *shown acceptable*: its promotion e-value reaches
  ``M / alpha``, i.e. the canary's rate is below ``(1 + tolerance)`` times its comparator's
  plus ``margin``. So a canary worse than that on some metric is promoted with probability
  at most ``alpha`` (for latency timed per micro-batch the promotion test's rate is the share
  of *batches* with an answer over the threshold, ``StepSnapshot.promotions``; the roll-back
  test always counts requests); and, where the plan compares latency, the rollout's latency
  thresholds are fixed (until then no latency is compared at all, so a step that advanced would have
  tested nothing on latency: HOLD ``waiting-for-thresholds``);
* **HOLD** otherwise, saying why (``max-duration-exceeded`` once the step overran).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.enums import Outcome
from model_canary.streams.stats.compare import Comparison
from model_canary.streams.stats.layout import MAX_BP
from model_canary.streams.stats.sequential import (
    SRM_GRID,
    logsumexp,
    promotion_log_e,
    rollback_log_e,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

OUTCOMES: tuple[Outcome, ...] = (Outcome.ADVANCE, Outcome.HOLD, Outcome.ROLLBACK, Outcome.FINALIZE)
ADVANCE, HOLD, ROLLBACK, FINALIZE = range(4)
#: Reason codes, in the order a HOLD reports them when several apply.
CODES: tuple[str, ...] = (
    "ok",
    "harm",
    "sample-ratio-mismatch",
    "waiting-for-results",
    "too-short",
    "too-few-samples",
    "labels-missing",
    "not-yet-harmless",
    "max-duration-exceeded",
    "waiting-for-thresholds",
)
OK, HARM, SRM, WAITING, TOO_SHORT, TOO_FEW, LABELS_MISSING, NOT_YET, MAX_DURATION = range(9)
THRESHOLDS = 9
#: The metrics measured against the rollout's latency thresholds.
LATENCY_METRICS = ("latency_p95", "latency_p99")


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRule:
    """How one metric is judged (from the plan: see :mod:`model_canary.streams.plan`)."""

    comparator: str  #: "control" or "baseline"
    tolerance: float  #: promotion: rate below (1 + tolerance) x comparator's + margin
    margin: float
    rollback_tolerance: float  #: roll back once the ratio is shown above 1 + this
    #: log ratios past the roll-back null that the roll-back mixture weighs (equally)
    alarm_deltas: tuple[float, ...]

    def grid(self) -> tuple[FloatArray, FloatArray]:
        """The roll-back mixture's alternatives and their log weights."""
        deltas = np.asarray(self.alarm_deltas, dtype=np.float64)
        return deltas, np.full(deltas.size, -math.log(deltas.size))


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPolicy:
    """The decision rule's parameters. Built from a plan by
    :func:`model_canary.streams.evaluation.policy` (the plan holds every default)."""

    alpha: float
    metrics: Mapping[str, MetricRule]
    steps_bp: tuple[int, ...]
    min_duration_s: float
    min_canary_requests: int
    #: Per labelled metric (accuracy, outcome metrics): the share of a step's items whose
    #: label must have arrived before it advances (its keys are the labelled metrics).
    min_label_coverage: Mapping[str, float]
    max_duration_s: float
    srm_alpha: float
    #: A HOLD names the lagging arm when its results are complete only up to more than this
    #: many seconds ago.
    lag_slack_s: float
    #: Prior weight of the first roll-back sub-test (every weight); the others (sub-test k:
    #: the weights from step k on) share the rest equally.
    pooled_prior: float

    @property
    def starts(self) -> tuple[int, ...]:
        """First weight of each roll-back sub-test."""
        return tuple(w for w in self.steps_bp if 0 < w < MAX_BP)

    @property
    def final_weight(self) -> int | None:
        """The last weight with a comparator (advancing from it promotes to 100%)."""
        starts = self.starts
        return starts[-1] if starts and self.steps_bp[-1] >= MAX_BP else None

    def sub_log_prior(self) -> FloatArray:
        """Log prior weights of the roll-back sub-tests.

        >>> from model_canary.streams.plan import parse_plan
        >>> from model_canary.streams.stats.snapshot import policy
        >>> np.exp(policy(parse_plan({"model": "m", "canary": "v"})).sub_log_prior()).round(2)
        array([0.8, 0.1, 0.1])
        """
        k = len(self.starts)
        if k <= 1:
            return np.zeros(k)
        prior = np.full(k, (1.0 - self.pooled_prior) / (k - 1))
        prior[0] = self.pooled_prior
        return np.asarray(np.log(prior))


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSnapshot:
    """What the evaluator knows about the current step, per replica ``(R,)``."""

    weight_bp: IntArray
    final: BoolArray  #: the step is the last before 100% (advancing promotes)
    elapsed_s: FloatArray
    #: Seconds of this step whose results are complete in every arm.
    evidence_s: FloatArray
    #: Canary items served at this step's weight after the warm-up, complete in every arm.
    canary_requests: IntArray
    #: Per metric: its evidence in requests (the roll-back test's, and every test's default).
    comparisons: Mapping[str, Comparison]
    #: Per metric: the promotion test's evidence where it differs from ``comparisons``
    #: (latency timed per micro-batch: counted in batches, see :func:`~.compare.compare`).
    promotions: Mapping[str, Comparison] = dataclasses.field(default_factory=dict)
    #: Per labelled metric: its sample-ratio check (labels counted per served item).
    labels: Mapping[str, Comparison] = dataclasses.field(default_factory=dict)
    #: Per labelled metric: the share of this step's items whose label arrived.
    label_coverage: Mapping[str, FloatArray] = dataclasses.field(default_factory=dict)
    #: Seconds between now and the newest second complete in every arm.
    behind_s: FloatArray
    #: The arm whose results lag most (text, for the reason), per replica.
    lagging: tuple[str, ...] = ()
    #: Whether the rollout's latency thresholds are fixed, per replica (None: not known to
    #: the caller, and not required: a replay judged without thresholds).
    thresholds_fixed: BoolArray | None = None

    def promotion_comparison(self, metric: str) -> Comparison:
        """The evidence the promotion test of ``metric`` reads (its roll-back evidence unless
        :attr:`promotions` has its own)."""
        own = self.promotions.get(metric)
        return own if own is not None else self.comparisons[metric]


@dataclass(frozen=True, slots=True)
class Decisions:
    """The rule's output per replica, with the statistics behind it."""

    outcome: IntArray  #: index into :data:`OUTCOMES`
    code: IntArray  #: index into :data:`CODES`
    threshold: float  #: ln(M / alpha): a metric's test is conclusive past it
    rollback: dict[str, FloatArray]  #: per metric: log roll-back e-value (R,)
    promotion: dict[str, FloatArray]  #: per metric: log promotion e-value (R,) (final steps)
    srm_log_e: dict[str, FloatArray]  #: per labelled metric: its sample-ratio check (R,)
    srm_threshold: float
    invalid: dict[str, BoolArray]  #: per labelled metric: invalidated by a mismatch (R,)
    alarm_log_e: FloatArray  #: log of the metrics' average roll-back e-value (R,)

    def outcomes(self) -> list[Outcome]:
        return [OUTCOMES[i] for i in self.outcome]


def decide_many(s: StepSnapshot, p: StepPolicy) -> Decisions:
    """The verdicts of every replica of ``s`` (see the module docstring)."""
    reps = s.weight_bp.shape[0]
    names = [m for m in p.metrics if m in s.comparisons]
    m = max(1, len(names))
    threshold = math.log(m / p.alpha)
    sub_prior = p.sub_log_prior()

    srm_log_e: dict[str, FloatArray] = {}
    invalid: dict[str, BoolArray] = {}
    srm_w = np.full(SRM_GRID.size, -math.log(SRM_GRID.size))
    for name, check in s.labels.items():
        srm_log_e[name] = rollback_log_e(check, 0.0, SRM_GRID, srm_w, sub_prior)
        invalid[name] = srm_log_e[name] >= -math.log(p.srm_alpha)
    mismatch = np.zeros(reps, dtype=bool)
    for bad in invalid.values():
        mismatch |= bad

    rollback: dict[str, FloatArray] = {}
    for name in names:
        rule, comp = p.metrics[name], s.comparisons[name]
        deltas, grid_w = rule.grid()
        log_e = rollback_log_e(comp, math.log1p(rule.rollback_tolerance), deltas, grid_w, sub_prior)
        if name in invalid:
            log_e = np.where(invalid[name], -np.inf, log_e)
        rollback[name] = log_e
    if rollback:
        stacked = np.stack(list(rollback.values()), axis=-1)
        alarm_log_e = logsumexp(stacked, axis=-1) - math.log(m)
    else:
        alarm_log_e = np.full(reps, -np.inf)
    alarmed = alarm_log_e >= -math.log(p.alpha)

    promotion: dict[str, FloatArray] = {}
    acceptable = np.ones(reps, dtype=bool)
    final_w = p.final_weight
    if final_w is not None and np.any(s.final):
        for name in names:
            rule, comp = p.metrics[name], s.promotion_comparison(name)
            if final_w in comp.weights:
                stratum = comp.weights.index(final_w)
                sub = p.starts.index(final_w)
                log_e = promotion_log_e(comp, stratum, sub, rule.tolerance, rule.margin)
            else:
                log_e = np.full(reps, -np.inf)
            promotion[name] = log_e
            acceptable &= log_e >= threshold

    outcome = np.full(reps, HOLD, dtype=np.int64)
    code = np.full(reps, OK, dtype=np.int64)
    full = s.weight_bp >= MAX_BP
    long_enough = s.elapsed_s >= p.min_duration_s
    pending = np.zeros((reps, len(CODES)), dtype=bool)
    pending[:, WAITING] = long_enough & (s.evidence_s < p.min_duration_s)
    pending[:, TOO_SHORT] = ~long_enough
    pending[:, TOO_FEW] = s.canary_requests < p.min_canary_requests
    for name, share in s.label_coverage.items():
        pending[:, LABELS_MISSING] |= share < p.min_label_coverage.get(name, 0.0)
    pending[:, NOT_YET] = s.final & ~acceptable
    if s.thresholds_fixed is not None and any(m in LATENCY_METRICS for m in names):
        pending[:, THRESHOLDS] = ~s.thresholds_fixed
    first_pending = np.argmax(pending, axis=1)
    anything = pending.any(axis=1)

    # Lowest priority first: later assignments win.
    outcome[:] = np.where(anything, HOLD, ADVANCE)
    code[:] = np.where(anything, first_pending, OK)
    overran = anything & (s.elapsed_s >= p.max_duration_s)
    code[overran] = MAX_DURATION
    srm_hold = mismatch & ~full
    outcome[srm_hold], code[srm_hold] = HOLD, SRM
    finalize = full & long_enough
    outcome[full], code[full] = HOLD, TOO_SHORT
    outcome[finalize], code[finalize] = FINALIZE, OK
    outcome[alarmed], code[alarmed] = ROLLBACK, HARM
    return Decisions(
        outcome=outcome,
        code=code,
        threshold=threshold,
        rollback=rollback,
        promotion=promotion,
        srm_log_e=srm_log_e,
        srm_threshold=-math.log(p.srm_alpha),
        invalid=invalid,
        alarm_log_e=alarm_log_e,
    )
