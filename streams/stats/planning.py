"""``canary plan check``: what a rollout plan will do at a model's traffic, before it runs.

From the request rate and each metric's base rate it predicts, with the decision rule's own
formulas (the tests' expected evidence, no noise: typical values, about the median):

* each step's duration and canary requests (the minimum duration, or longer when the canary
  needs more time to serve the step's minimum requests, after the warm-up);
* per metric, the canary requests and minutes until a 1.5x and a 2x regression is rolled
  back, counting the evidence of every step the rollout passes through (a harmful canary is
  not promoted, so the last step before 100% keeps gathering evidence until its maximum
  duration);
* the time to promote an identical canary (the last step lasts until every metric is shown
  acceptable), and the total time to finalize;
* for workers that time micro-batches (every answer of a batch reports the batch's time), the
  latency metrics as the tests count them: the roll-back test counts answers with the batch
  clustering in its variance (a design effect of about the size-weighted mean batch), the
  promotion test at the last step before 100% counts batches;
* warnings when a plan cannot reach its gates at this traffic.

>>> from model_canary.streams.plan import parse_plan
>>> plan = parse_plan({"model": "m", "canary": "v2"})
>>> r = check(plan, Traffic(rate_per_min=1000, base_rates={"errors": 0.01}))
>>> r.steps[0].weight_pct, round(r.steps[0].minutes, 2), r.hours_to_finalize < 1
(1.0, 5.5, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_canary.streams.evidence.columns import unpack_units
from model_canary.streams.messages import Evidence
from model_canary.streams.plan import RolloutPlan, labelled_metrics
from model_canary.streams.stats.decide import StepPolicy
from model_canary.streams.stats.layout import MAX_BP, control_share
from model_canary.streams.stats.sequential import promotion_grid
from model_canary.streams.stats.snapshot import policy
from model_canary.streams.stats.thresholds import QUANTILES, THRESHOLD_ITEMS

#: The regressions whose detection time is predicted (ratios of bad-event rates).
REGRESSIONS = (1.5, 2.0)
#: Base rates of the latency metrics, by definition of their thresholds.
LATENCY_BASE = {name: 1.0 - q for name, q in QUANTILES.items()}


@dataclass(frozen=True, slots=True)
class Traffic:
    """A model's traffic: requests per minute, each metric's bad-event rate (errors: the error
    rate; accuracy: the share of wrong predictions; an outcome metric: the share of bad
    feedback among the feedback counted), label coverage (the share of requests with a label,
    or with feedback for an outcome metric) and the design effect (1 for independent
    requests; more when users' requests are alike)."""

    rate_per_min: float
    base_rates: dict[str, float] = field(default_factory=dict)
    label_coverage: float = 0.5
    design_effect: float = 1.0
    #: Answers per micro-batch timed as one (1: every answer timed alone): the mean batch
    #: size, what the promotion test divides the answers by when it counts batches.
    batch_size: float = 1.0
    #: The size-weighted mean batch size (sum of squared sizes over answers; ``batch_size``
    #: when batches are all alike): the roll-back test's design effect of batch-timed latency.
    batch_clump: float | None = None
    #: Per latency metric, the share of timed batches with an answer over its threshold, as
    #: measured (the thresholds are the first step's, so at another load it can be far from
    #: the answers' share); the answers' share when not measured.
    batch_base_rates: dict[str, float] = field(default_factory=dict)

    def latency_design_effect(self) -> float:
        """The design effect of a latency metric's per-answer counts: the users' (given)
        plus the batches' excess (answers of a batch share one time)."""
        clump = self.batch_size if self.batch_clump is None else self.batch_clump
        return self.design_effect + max(0.0, clump - 1.0)

    def design_effect_of(self, metric: str) -> float:
        """The design effect of ``metric``'s per-request counts."""
        return self.latency_design_effect() if metric in LATENCY_BASE else self.design_effect

    def base(self, metric: str, unit: str = "item") -> float:
        """``metric``'s bad-event rate per answer, or (``unit="batch"``) per timed batch."""
        if metric in LATENCY_BASE:
            if unit == "batch" and metric in self.batch_base_rates:
                return self.batch_base_rates[metric]
            return self.base_rates.get(metric, LATENCY_BASE[metric])
        return self.base_rates.get(metric, {"errors": 0.01, "accuracy": 0.1}.get(metric, 0.01))


@dataclass(frozen=True, slots=True)
class StepForecast:
    weight_pct: float
    minutes: float
    canary_requests: float
    #: what makes the step last longer than its minimum duration, if anything
    bound_by: str


@dataclass(frozen=True, slots=True)
class Detection:
    metric: str
    ratio: float
    canary_requests: float | None  #: None: not rolled back within the plan
    minutes: float | None


@dataclass(frozen=True, slots=True)
class PlanCheck:
    steps: tuple[StepForecast, ...]
    detections: tuple[Detection, ...]
    #: per metric: seconds at the last step before 100% until an identical canary is shown
    #: acceptable (None: not within the step's maximum duration)
    promote_seconds: dict[str, float | None]
    hours_to_finalize: float
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": [
                {
                    "weight_percent": s.weight_pct,
                    "minutes": round(s.minutes, 1),
                    "canary_requests": round(s.canary_requests),
                    "bound_by": s.bound_by,
                }
                for s in self.steps
            ],
            "detection": [
                {
                    "metric": d.metric,
                    "ratio": d.ratio,
                    "canary_requests": None
                    if d.canary_requests is None
                    else round(d.canary_requests),
                    "minutes": _round(d.minutes, 1),
                }
                for d in self.detections
            ],
            "minutes_to_promote": {
                m: None if v is None else round(v / 60, 1) for m, v in self.promote_seconds.items()
            },
            "hours_to_finalize": round(self.hours_to_finalize, 2),
            "warnings": list(self.warnings),
        }


@dataclass
class TrafficSample:
    """A model's recent traffic as its evidence records tell it (``canary plan check`` reads
    the evidence topic): requests routed per second by the router, the baseline's (and
    control's) answers and errors, and its labels. Evidence exists while a rollout runs, so
    this is the traffic of the model's recent rollouts.

    >>> t = TrafficSample()
    >>> for second in range(100, 160):  # 60 s at 20 requests/s, 2% errors on the baseline
    ...     t.add("routed", "baseline", second, requests=19)
    ...     t.add("routed", "canary", second, requests=1)
    ...     t.add("served", "baseline", second, requests=50, errors=1)
    >>> t.add("labelled", "baseline", 120, labelled=1000, incorrect=50)
    >>> got = t.traffic()
    >>> got.rate_per_min, got.base("errors"), got.base("accuracy"), round(got.label_coverage, 3)
    (1200.0, 0.02, 0.05, 0.333)
    """

    version: int = 1
    first_second: int = -1
    last_second: int = -1
    routed: int = 0
    served: int = 0
    errors: int = 0
    labelled: int = 0
    incorrect: int = 0
    #: The baseline's answers timed per micro-batch (records whose producer times batches),
    #: their batches and the sum of each batch's squared size.
    batched: int = 0
    batches: int = 0
    batch_m2: int = 0
    #: The baseline's batch-unit latency counts: timed batches, those over p95, over p99.
    batches_timed: int = 0
    batches_over: list[int] = field(default_factory=lambda: [0, 0])
    #: The baseline's answers compared with the latency thresholds, those over p95, over p99.
    timed: int = 0
    over: list[int] = field(default_factory=lambda: [0, 0])

    def add(
        self,
        kind: str,
        arm: str,
        second: int,
        *,
        requests: int = 0,
        errors: int = 0,
        labelled: int = 0,
        incorrect: int = 0,
        batches: int = 0,
        batch_m2: int = 0,
        batches_timed: int = 0,
        batches_over: tuple[int, int] = (0, 0),
        timed: int = 0,
        over: tuple[int, int] = (0, 0),
    ) -> None:
        """One evidence record (its kind, arm, routed second and counts; the batch figures
        only for answers timed per micro-batch: batches, the sum of their squared sizes, the
        timed ones and those over the p95 and p99 thresholds; ``timed`` and ``over``: the
        answers compared with the latency thresholds and those over each)."""
        if kind == "routed":
            self.routed += requests
            self.first_second = second if self.first_second < 0 else min(self.first_second, second)
            self.last_second = max(self.last_second, second)
        elif arm in ("baseline", "control"):  # the baseline version: the model as it is
            if kind == "served":
                self.served += requests
                self.errors += errors
                self.timed += timed
                self.over = [a + b for a, b in zip(self.over, over, strict=True)]
                if batches:
                    self.batched += requests
                    self.batches += batches
                    self.batch_m2 += batch_m2
                    self.batches_timed += batches_timed
                    self.batches_over = [
                        a + b for a, b in zip(self.batches_over, batches_over, strict=True)
                    ]
            elif kind == "labelled":
                self.labelled += labelled
                self.incorrect += incorrect

    def add_record(self, ev: Evidence) -> None:
        """One evidence record as the evidence topic carries it."""
        self.add(
            ev.kind.value,
            ev.arm.value,
            ev.second,
            requests=ev.requests,
            errors=ev.errors,
            labelled=ev.labelled,
            incorrect=ev.incorrect,
            **_latency_counts(ev),
        )

    def traffic(
        self, *, label_coverage: float | None = None, design_effect: float = 1.0
    ) -> Traffic | None:
        """The rate over the routed seconds seen (first to last), the baseline's error rate
        and share of wrong predictions, and its label coverage (unless given); None without
        any routed request."""
        if self.routed <= 0:
            return None
        seconds = self.last_second - self.first_second + 1
        rates = {"errors": self.errors / self.served} if self.served else {}
        if self.labelled:
            rates["accuracy"] = self.incorrect / self.labelled
        if self.timed:
            # The thresholds are fixed at the first step: at another load, the share of
            # answers over them is not 1 - q.
            for name, over in zip(LATENCY_BASE, self.over, strict=True):
                rates[name] = over / self.timed
        if label_coverage is None:
            measured = min(1.0, self.labelled / self.served) if self.served else 0.0
            label_coverage = measured if measured > 0 else 0.5
        size, clump = 1.0, None
        batch_rates: dict[str, float] = {}
        if self.batches and self.batched:
            size = max(1.0, self.batched / self.batches)
            clump = max(size, self.batch_m2 / self.batched)
        if self.batches_timed:
            for name, over in zip(LATENCY_BASE, self.batches_over, strict=True):
                batch_rates[name] = over / self.batches_timed
        return Traffic(
            rate_per_min=self.routed / seconds * 60.0,
            base_rates=rates,
            label_coverage=label_coverage,
            design_effect=design_effect,
            batch_size=size,
            batch_clump=clump,
            batch_base_rates=batch_rates,
        )


def _latency_counts(ev: Evidence) -> dict[str, Any]:
    """A served record's latency figures for :meth:`TrafficSample.add` (none before the
    thresholds are known): answers compared with the thresholds and over each, and, from a
    producer that times micro-batches, its batches as the evaluator counts them."""
    if ev.kind.value != "served" or ev.thresholds_revision < 0:
        return {}
    try:
        rows = unpack_units("served", ev.units)
    except ValueError:
        return {}
    got: dict[str, Any] = {
        "timed": int(rows["n"].sum() - rows["errors"].sum()),
        "over": (int(rows["over_p95"].sum()), int(rows["over_p99"].sum())),
    }
    if ev.latency_unit == "batch":
        got.update(
            batches=ev.batches,
            batch_m2=ev.batch_m2,
            batches_timed=ev.batches_timed if ev.schema_version >= 2 else 0,
            batches_over=(ev.batches_over_p95, ev.batches_over_p99),
        )
    return got


def check(plan: RolloutPlan, traffic: Traffic) -> PlanCheck:
    """The forecast of ``plan`` at ``traffic`` (see the module docstring)."""
    rule = policy(plan)
    rate = traffic.rate_per_min / 60.0  # per second
    names = list(rule.metrics)
    threshold = math.log(max(1, len(names)) / rule.alpha)
    warnings: list[str] = []
    steps: list[StepForecast] = []
    final_w = rule.final_weight
    promote: dict[str, float | None] = {}
    for w in plan.steps_bp:
        share = w / MAX_BP
        canary_per_s = rate * share
        need = plan.min_canary_requests / canary_per_s if canary_per_s > 0 else math.inf
        seconds = max(plan.min_step_seconds, plan.warmup_seconds + need)
        bound = "min_duration" if seconds == plan.min_step_seconds else "min_canary_requests"
        if w == final_w:
            for name in names:
                promote[name] = _promote_seconds(name, rule, plan, traffic, w, threshold)
            slowest = max((v for v in promote.values() if v is not None), default=math.inf)
            if any(v is None for v in promote.values()):
                slowest = math.inf
            if plan.warmup_seconds + slowest > seconds:
                seconds = plan.warmup_seconds + slowest
                bound = "promotion"
        if seconds > plan.max_step_seconds:
            warnings.append(
                f"the {share:.0%} step needs {seconds / 60:,.0f} min ({bound}) but may last "
                f"{plan.max_step_seconds / 60:g} min: it will hold (Holding) at this traffic"
            )
        shown = (
            min(seconds, plan.max_step_seconds) if math.isfinite(seconds) else plan.max_step_seconds
        )
        steps.append(
            StepForecast(
                w / 100, shown / 60, canary_per_s * max(0.0, shown - plan.warmup_seconds), bound
            )
        )
    for name, secs in promote.items():
        if secs is None:
            warnings.append(
                f"{name}: an identical canary cannot be shown acceptable (rate below "
                f"{1 + rule.metrics[name].tolerance:g}x the comparator's + "
                f"{rule.metrics[name].margin:g}) within the last step's maximum duration"
            )
    baseline_per_s = rate * (1 - plan.steps_bp[0] / MAX_BP)
    if any(m in LATENCY_BASE for m in names) and baseline_per_s > 0:
        minutes = THRESHOLD_ITEMS / baseline_per_s / 60
        if minutes > plan.min_step_seconds / 60:
            warnings.append(
                f"latency thresholds need {THRESHOLD_ITEMS:,} baseline requests ({minutes:,.0f} "
                f"min); the first step's minimum duration is shorter (1,000 then suffice)"
            )
    detections = [
        _detection(name, ratio, rule, plan, traffic, steps, threshold)
        for name in names
        for ratio in REGRESSIONS
    ]
    for d in detections:
        if d.canary_requests is None:
            warnings.append(f"{d.metric}: a {d.ratio:g}x regression is not rolled back before 100%")
    total = sum(s.minutes for s in steps)
    return PlanCheck(tuple(steps), tuple(detections), promote, total / 60, tuple(warnings))


def _shares(rule: StepPolicy, plan: RolloutPlan, name: str, w: int) -> tuple[float, float]:
    """(canary share, comparator share) of the traffic at weight ``w`` for a metric."""
    share = w / MAX_BP
    if rule.metrics[name].comparator == "control" and plan.control:
        return share, control_share(w, True) / MAX_BP
    return share, 1.0 - share


def _per_canary_llr(
    name: str, ratio: float, rule: StepPolicy, plan: RolloutPlan, traffic: Traffic, w: int
) -> np.ndarray:
    """Expected log LR per canary request of each alternative of the roll-back mixture."""
    c_share, b_share = _shares(rule, plan, name, w)
    deltas, _ = rule.metrics[name].grid()
    if c_share <= 0 or b_share <= 0:
        return np.zeros(deltas.size)
    rho = c_share / (c_share + b_share)
    p = traffic.base(name) * (traffic.label_coverage if name in labelled_metrics(plan) else 1.0)
    null = math.log1p(rule.metrics[name].rollback_tolerance)
    n0 = math.log(rho * math.exp(null) + 1 - rho)
    n1 = np.log(rho * np.exp(null + deltas) + 1 - rho)
    per_canary = deltas - (n1 - n0)
    per_other = -(n1 - n0)
    return np.asarray(
        (p * ratio * per_canary + p * (b_share / c_share) * per_other)
        / traffic.design_effect_of(name)
    )


def _detection(
    name: str,
    ratio: float,
    rule: StepPolicy,
    plan: RolloutPlan,
    traffic: Traffic,
    steps: list[StepForecast],
    threshold: float,
) -> Detection:
    """Canary requests and minutes until the roll-back e-process is expected to reach its
    threshold (the pooled sub-test, and the one of each step's own weights)."""
    deltas, weights = rule.metrics[name].grid()
    size = deltas.size
    log_w = float(weights[0])
    prior = np.exp(rule.sub_log_prior())
    starts = rule.starts
    pooled = np.zeros(size)
    by_start = {s: np.zeros(size) for s in starts}
    served = 0.0
    minutes = 0.0
    for i, (w, step) in enumerate(zip(plan.steps_bp, steps, strict=True)):
        if w >= MAX_BP:
            break
        per = _per_canary_llr(name, ratio, rule, plan, traffic, w)
        n = step.canary_requests
        if i == len(starts) - 1:  # a harmful canary stays at the last step until its maximum
            n = (
                traffic.rate_per_min
                / 60
                * w
                / MAX_BP
                * (plan.max_step_seconds - plan.warmup_seconds)
            )
        rate = n / max(step.minutes - plan.warmup_seconds / 60, 1e-9) if n else 0.0
        best = None
        for k, s in enumerate(starts):
            if s > w:
                continue
            base = by_start[s]
            # Smallest extra canary requests x with max_j (base_j + x per_j) + log w >= t.
            need = threshold - math.log(prior[k]) - log_w
            xs = [
                (need - base[j]) / per[j]
                for j in range(size)
                if per[j] > 0 and (need - base[j]) / per[j] <= n
            ]
            if any(base[j] >= need for j in range(size)):
                xs.append(0.0)
            if xs:
                x = max(0.0, min(xs))
                best = x if best is None else min(best, x)
        if best is not None:
            return Detection(
                name,
                ratio,
                served + best,
                minutes + plan.warmup_seconds / 60 + (best / rate if rate else 0.0),
            )
        for s in starts:
            if s <= w:
                by_start[s] = by_start[s] + n * per
        pooled += n * per
        served += n
        minutes += step.minutes
    return Detection(name, ratio, None, None)


def _promote_seconds(
    name: str,
    rule: StepPolicy,
    plan: RolloutPlan,
    traffic: Traffic,
    w: int,
    threshold: float,
) -> float | None:
    """Seconds at weight ``w`` until an identical canary's promotion e-value is expected to
    reach its threshold (None: not within the step's maximum duration)."""
    m = rule.metrics[name]
    c_share, b_share = _shares(rule, plan, name, w)
    cover = traffic.label_coverage if name in labelled_metrics(plan) else 1.0
    batched = name in LATENCY_BASE and traffic.batch_size > 1
    p = traffic.base(name, "batch" if batched else "item")
    scale = 1.0 + m.tolerance
    boundary = scale * p + m.margin
    if boundary <= 0 or c_share <= 0 or b_share <= 0:
        return None
    grid = promotion_grid(m.tolerance)
    drift = (boundary - p) / boundary
    # Information per second: I = boundary^2 / (phi (boundary / n_c + scale^2 p / n_b)).
    # Latency timed per micro-batch is counted in batches here (the promotion test's unit;
    # a batch is taken as slow as often as an answer is).
    per_s = traffic.rate_per_min / 60 * cover
    if batched:
        per_s /= traffic.batch_size
    n_c, n_b = per_s * c_share, per_s * b_share
    info_per_s = boundary**2 / (traffic.design_effect * (boundary / n_c + scale**2 * p / n_b))
    # log E(I) = max_k (delta_k drift - delta_k^2 / 2) I - log K >= threshold.
    gain = float(np.max(grid * drift - grid**2 / 2))
    if gain <= 0:
        return None
    seconds = (threshold + math.log(grid.size)) / gain / info_per_s
    return seconds if seconds <= plan.max_step_seconds - plan.warmup_seconds else None


def _round(x: float | None, digits: int) -> float | None:
    if x is None:
        return None
    return round(x) if digits == 0 else round(x, digits)
