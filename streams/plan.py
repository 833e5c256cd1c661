"""Rollout plans: what a rollout does at each step and what it watches, read from YAML or JSON
and validated with messages that say where the problem is.

>>> plan = parse_plan({"model": "iris", "baseline": "v1", "canary": "v2", "steps": [5, 100]})
>>> plan.steps_bp, plan.alpha, plan.metrics["errors"].tolerance
((500, 10000), 0.05, 0.2)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any

from model_canary.streams.errors import ConfigError
from model_canary.streams.outcomes.metrics import condition, is_outcome, outcome_spec
from model_canary.streams.preflight.requirement import PreflightRequirement, parse_requirement
from model_canary.streams.record_base import MAX_BP
from model_canary.streams.topics import validate_name

METRICS = ("errors", "latency_p95", "latency_p99", "accuracy")
#: What each metric is compared with by default: load-dependent latency with the control arm
#: (the baseline version at the canary's share, so batch sizes and load are alike), errors
#: and labels with every request the baseline version served (more evidence, still valid).
COMPARATORS = ("control", "baseline")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# -- every default of a plan, and of the decision rule built from it -----------------------
DEFAULT_STEPS = (1.0, 20.0, 50.0, 100.0)
DEFAULT_MIN_STEP_SECONDS = 300.0
DEFAULT_MAX_STEP_SECONDS = 7200.0
DEFAULT_WARMUP_SECONDS = 30.0
DEFAULT_MIN_CANARY_REQUESTS = 50
DEFAULT_ALPHA = 0.05
DEFAULT_CONTROL = True
#: Not plan fields, but part of the rule every plan gets: the labelled sample-ratio check's
#: alpha; how far behind (s) an arm's complete results may be before moves forward wait; the
#: prior weights of the roll-back sub-tests (all weights, then from each later step on).
SRM_ALPHA = 0.01
LAG_SLACK_SECONDS = 10.0
#: Prior weight of the roll-back test pooling every weight; the rest is shared by the tests of
#: each later step's weights on (so harm that only appears at a high weight is caught there).
POOLED_PRIOR = 0.8


class PlanError(ConfigError):
    """A rollout plan is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class MetricPolicy:
    """How much worse than its comparator the canary may be on one metric (a rate of bad
    items: errors, requests slower than the rollout's p95/p99 thresholds, wrong predictions).

    * promotion: the last step before 100% holds until the canary's rate is *shown* below
      ``(1 + tolerance)`` times the comparator's **plus** ``margin`` (an absolute rate, so a
      metric with few or no bad items cannot block a promotion forever);
    * ``rollback_tolerance``: the roll-back test rolls back once the ratio is shown to exceed
      ``1 + rollback_tolerance`` (default 0: any proven harm). A canary between the two is
      neither rolled back nor promoted on weak evidence;
    * ``compare``: ``control`` (the baseline version at the canary's share) or ``baseline``
      (every request the baseline version served);
    * ``alarm_ratios``: the harms (ratios past ``1 + rollback_tolerance``) the roll-back test is
      quickest to find; any larger or somewhat smaller harm is found too, only more slowly;
    * ``min_label_coverage`` (accuracy and outcome metrics): the share of a step's requests
      whose label (feedback that counts for the metric) must have arrived before it advances;
    * ``bad_when`` (outcome metrics only): when a piece of feedback is bad, a condition of
      :mod:`model_canary.streams.outcomes.expr` (``None`` for the built-in metrics).
    """

    tolerance: float
    min_label_coverage: float = 0.0
    #: Fields added later read their defaults from plans stored without them.
    rollback_tolerance: float = 0.0
    margin: float = 0.0
    compare: str = "baseline"
    alarm_ratios: tuple[float, ...] = (1.6, 2.2, 3.2)
    bad_when: str | None = None


#: Wrong predictions are common (5-20% of answers), so the harms worth finding are a few
#: points: ratios 1.2-1.6 (90% -> 87% accurate is 1.3). Errors and latency exceedances are
#: rare events whose harms worth a rollback are larger ratios (the class default above).
ACCURACY_ALARM_RATIOS = (1.2, 1.35, 1.6)


#: The defaults of each metric (a plan naming a metric without settings gets these).
METRIC_DEFAULTS: Mapping[str, MetricPolicy] = MappingProxyType(
    {
        "errors": MetricPolicy(0.2, margin=0.005, compare="baseline"),
        "latency_p95": MetricPolicy(0.2, margin=0.01, compare="control"),
        "latency_p99": MetricPolicy(0.2, margin=0.005, compare="control"),
        "accuracy": MetricPolicy(
            0.02,
            min_label_coverage=0.5,
            margin=0.01,
            compare="baseline",
            alarm_ratios=ACCURACY_ALARM_RATIOS,
        ),
    }
)
#: The defaults of an outcome metric (``bad_when`` is its own): a bad-feedback rate may be up to
#: 1.2x the baseline's plus 1 point to promote, and no share of requests need feedback.
OUTCOME_DEFAULTS = MetricPolicy(0.2, margin=0.01, compare="baseline")
DEFAULT_METRICS: Mapping[str, MetricPolicy] = MappingProxyType(
    {name: METRIC_DEFAULTS[name] for name in ("errors", "latency_p95", "latency_p99")}
)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """A validated rollout plan (see ``docs`` in the README for the file format)."""

    model: str
    baseline: str | None
    canary: str
    mode: str = "canary"
    steps_bp: tuple[int, ...] = tuple(round(p * 100) for p in DEFAULT_STEPS)
    min_step_seconds: float = DEFAULT_MIN_STEP_SECONDS
    min_canary_requests: int = DEFAULT_MIN_CANARY_REQUESTS
    max_step_seconds: float = DEFAULT_MAX_STEP_SECONDS
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS
    alpha: float = DEFAULT_ALPHA
    shadow_sample_bp: int = 10_000
    metrics: Mapping[str, MetricPolicy] = field(default_factory=lambda: DEFAULT_METRICS)
    #: Route a control arm (the baseline version at the canary's share, its own workers).
    control: bool = DEFAULT_CONTROL
    #: How long a prediction waits for its ground-truth label (stored plans without it: 24 h).
    label_window_seconds: float = 86_400.0
    #: ``preflight: {since, min_requests}``: ``rollout start`` needs a passing pre-flight first.
    preflight: PreflightRequirement | None = None
    #: The passing pre-flight the rollout rests on (set by ``rollout start``; stored with the
    #: plan in the start command and the rollout state).
    preflight_id: str | None = None

    def to_json(self) -> str:
        """The plan as compact JSON (carried in the start command and the rollout state)."""
        doc: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["metrics"] = {k: _metric_doc(v) for k, v in self.metrics.items()}
        # Written only when set: plans without a pre-flight keep their stored form.
        doc.pop("preflight")
        if self.preflight is not None:
            doc["preflight"] = self.preflight.to_doc()
        if self.preflight_id is None:
            doc.pop("preflight_id")
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutPlan:
        """The plan :meth:`to_json` wrote; :class:`PlanError` for anything else (the text
        travels in commands, which anyone with access to the control topic can write).
        Plans stored before ``control`` and a metric's ``margin``/``compare`` existed read
        as they were decided: no control arm, no margin, compared with the baseline."""
        try:
            doc = json.loads(text)
            doc["steps_bp"] = tuple(doc["steps_bp"])
            doc.setdefault("control", False)
            metrics = {}
            for name, v in doc["metrics"].items():
                v = dict(v)
                # Stored before alarm_ratios existed: every metric had the class default.
                v["alarm_ratios"] = tuple(v.get("alarm_ratios", MetricPolicy(0.2).alarm_ratios))
                if v.get("bad_when") is not None:
                    condition(v["bad_when"])  # a command's text: checked like a plan file's
                metrics[name] = MetricPolicy(**v)
            doc["metrics"] = MappingProxyType(metrics)
            doc["preflight"] = parse_requirement(doc.get("preflight"))
            if not isinstance(doc.get("preflight_id"), str | None):
                raise PlanError("not a stored plan: preflight_id must be a text")
            return cls(**doc)
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            RecursionError,
            ConfigError,
        ) as exc:
            raise PlanError(f"not a stored plan: {type(exc).__name__}: {exc}") from None


def _metric_doc(policy: MetricPolicy) -> dict[str, Any]:
    doc = asdict(policy)
    if doc["bad_when"] is None:  # built-in metrics keep their stored form
        del doc["bad_when"]
    return doc


def labelled_metrics(plan: RolloutPlan) -> tuple[str, ...]:
    """The plan's metrics judged on labelled requests: accuracy and the outcome metrics
    (their rollouts need each answer's prediction, joined with its feedback).

    >>> labelled_metrics(parse_plan({"model": "m", "canary": "v2", "metrics": {
    ...     "errors": None, "accuracy": None, "down": {"bad_when": "label == 'down'"}}}))
    ('accuracy', 'down')
    """
    return tuple(n for n, m in plan.metrics.items() if n == "accuracy" or m.bad_when is not None)


def outcome_metrics(plan: RolloutPlan) -> dict[str, str]:
    """The plan's outcome metrics: name -> ``bad_when`` (canonical text)."""
    return {n: m.bad_when for n, m in plan.metrics.items() if m.bad_when is not None}


def plan_of(model: str, canary: str | None, plan_json: str | None) -> RolloutPlan:
    """A rollout's plan: the stored one (from its start command), or the defaults. The router
    and the evaluator both read a rollout's plan through this, so they agree on it."""
    if plan_json:
        try:
            return _stored_plan(plan_json)
        except PlanError:
            pass  # an unreadable stored plan: the defaults, as for a rollout without one
    try:
        return parse_plan({"model": model, "canary": canary or "unknown"})
    except ConfigError:
        return RolloutPlan(model=model, baseline=None, canary="unknown")


@lru_cache(maxsize=64)
def _stored_plan(text: str) -> RolloutPlan:
    # Parsed once per stored text (plans are frozen, so sharing one is safe).
    return RolloutPlan.from_json(text)


def load_plan(path: Path) -> RolloutPlan:
    """Read a plan from a ``.yaml``/``.yml`` or ``.json`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"{path}: not valid YAML: {exc}") from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{path}: a plan is a mapping of fields, got {type(doc).__name__}")
    return parse_plan(doc)


def parse_plan(doc: Mapping[str, Any]) -> RolloutPlan:
    """Validate a plan document (already parsed from YAML or JSON)."""
    known = {
        "model",
        "baseline",
        "canary",
        "mode",
        "steps",
        "step",
        "metrics",
        "alpha",
        "shadow_sample",
        "control",
        "label_window",
        "preflight",
    }
    unknown = sorted(map(str, set(doc) - known))  # YAML keys may be numbers
    if unknown:
        raise PlanError(f"unknown field(s) {unknown}; a plan has {sorted(known)}")
    model = _required_name(doc, "model", "model")
    canary = _required_name(doc, "canary", "version")
    baseline = _name(doc, "baseline", "version", required=False)
    if baseline is not None and baseline == canary:
        raise PlanError("canary: must differ from baseline")
    mode = doc.get("mode", "canary")
    if mode not in ("canary", "shadow"):
        raise PlanError(f"mode: must be 'canary' or 'shadow', got {mode!r}")
    steps = _steps(doc.get("steps", list(DEFAULT_STEPS)))
    step = doc.get("step", {}) or {}
    if not isinstance(step, dict):
        raise PlanError("step: must be a mapping (min_duration, min_canary_requests, ...)")
    unknown = sorted(
        map(str, set(step) - {"min_duration", "min_canary_requests", "max_duration", "warmup"})
    )
    if unknown:
        raise PlanError(f"step: unknown field(s) {unknown}")
    min_s = duration(step.get("min_duration", DEFAULT_MIN_STEP_SECONDS), "step.min_duration")
    max_s = duration(step.get("max_duration", DEFAULT_MAX_STEP_SECONDS), "step.max_duration")
    warmup = duration(step.get("warmup", DEFAULT_WARMUP_SECONDS), "step.warmup")
    if max_s < min_s:
        raise PlanError("step.max_duration: must be at least step.min_duration")
    min_requests = step.get("min_canary_requests", DEFAULT_MIN_CANARY_REQUESTS)
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
        raise PlanError(
            f"step.min_canary_requests: must be a whole number >= 0, got {min_requests!r}"
        )
    alpha = doc.get("alpha", DEFAULT_ALPHA)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha < 0.5:
        raise PlanError(f"alpha: must be a number in (0, 0.5), got {alpha!r}")
    control = doc.get("control", DEFAULT_CONTROL)
    if not isinstance(control, bool):
        raise PlanError(f"control: must be true or false, got {control!r}")
    shadow = doc.get("shadow_sample", 100)
    if not isinstance(shadow, int | float) or isinstance(shadow, bool) or not 0 < shadow <= 100:
        raise PlanError(f"shadow_sample: must be a percentage in (0, 100], got {shadow!r}")
    label_window = duration(doc.get("label_window", "24h"), "label_window")
    if label_window < 1:
        raise PlanError("label_window: must be at least 1s")
    return RolloutPlan(
        model=model,
        baseline=baseline,
        canary=canary,
        mode=mode,
        steps_bp=steps,
        min_step_seconds=min_s,
        min_canary_requests=min_requests,
        max_step_seconds=max_s,
        warmup_seconds=warmup,
        alpha=float(alpha),
        shadow_sample_bp=round(shadow * 100),
        metrics=_metrics(doc.get("metrics")),
        control=control and mode == "canary",
        label_window_seconds=label_window,
        preflight=parse_requirement(doc.get("preflight")),
    )


def duration(value: Any, where: str) -> float:
    """``"90s"``, ``"5m"``, ``"1.5h"``, ``250`` (seconds) -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise PlanError(f"{where}: expected a duration like 90s, 5m or 1h, got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _name(doc: Mapping[str, Any], key: str, kind: str, *, required: bool) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise PlanError(f"{key}: required")
        return None
    if not isinstance(value, str):
        raise PlanError(f"{key}: must be a string, got {value!r}")
    try:
        return validate_name(kind, value)
    except ConfigError as exc:
        raise PlanError(f"{key}: {exc}") from None


def _required_name(doc: Mapping[str, Any], key: str, kind: str) -> str:
    value = _name(doc, key, kind, required=True)
    assert value is not None  # _name raised for a missing required field
    return value


def _steps(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise PlanError("steps: must be a non-empty list of percentages, e.g. [1, 20, 50, 100]")
    out = []
    for i, pct in enumerate(value):
        if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 < pct <= 100:
            raise PlanError(f"steps[{i}]: must be a percentage in (0, 100], got {pct!r}")
        out.append(round(pct * 100))
    if any(b <= a for a, b in pairwise(out)):
        raise PlanError(f"steps: must increase strictly, got {value}")
    if out[-1] != MAX_BP:
        raise PlanError(f"steps: the last step must be 100, got {value[-1]}")
    return tuple(out)


def _metrics(value: Any) -> Mapping[str, MetricPolicy]:
    if value is None:
        return DEFAULT_METRICS
    if not isinstance(value, dict) or not value:
        raise PlanError(
            f"metrics: must be a mapping of {list(METRICS)} or outcome metrics "
            "({from: feedback, bad_when: ...}) to their settings"
        )
    out: dict[str, MetricPolicy] = {}
    known = {
        "tolerance",
        "rollback_tolerance",
        "margin",
        "compare",
        "min_label_coverage",
        "alarm_ratios",
    }
    for name, spec in value.items():
        bad_when: str | None = None
        if is_outcome(spec):
            checked = outcome_spec(name, spec)  # OutcomeMetricError (a ConfigError) names it
            bad_when, spec, d = checked.bad_when, dict(checked.settings), OUTCOME_DEFAULTS
        elif name not in METRICS:
            raise PlanError(
                f"metrics.{name}: unknown metric; choose from {list(METRICS)}, or declare an "
                f"outcome metric: {name}: {{from: feedback, bad_when: \"label == 'down'\"}}"
            )
        else:
            d = METRIC_DEFAULTS[name]
        spec = spec or {}
        if not isinstance(spec, dict):
            raise PlanError(f"metrics.{name}: must be a mapping (tolerance, ...)")
        unknown = sorted(map(str, set(spec) - known))
        labelled = name == "accuracy" or bad_when is not None
        if unknown or ("min_label_coverage" in spec and not labelled):
            raise PlanError(f"metrics.{name}: unknown field(s) {unknown or ['min_label_coverage']}")
        tolerance = _tolerance(spec, name, "tolerance", d.tolerance)
        rollback = _tolerance(spec, name, "rollback_tolerance", d.rollback_tolerance)
        margin = spec.get("margin", d.margin)
        if not isinstance(margin, int | float) or isinstance(margin, bool) or not 0 <= margin <= 1:
            raise PlanError(
                f"metrics.{name}.margin: must be a rate in [0, 1] (0.005 = half a point), "
                f"got {margin!r}"
            )
        compare = spec.get("compare", d.compare)
        if compare not in COMPARATORS:
            raise PlanError(
                f"metrics.{name}.compare: must be one of {list(COMPARATORS)}, got {compare!r}"
            )
        coverage = spec.get("min_label_coverage", d.min_label_coverage)
        if (
            not isinstance(coverage, int | float)
            or isinstance(coverage, bool)
            or not 0 <= coverage <= 1
        ):
            raise PlanError(
                f"metrics.{name}.min_label_coverage: must be a share in [0, 1], got {coverage!r}"
            )
        ratios = spec.get("alarm_ratios", d.alarm_ratios)
        if (
            not isinstance(ratios, list | tuple)
            or not 1 <= len(ratios) <= 16
            or not all(
                isinstance(r, int | float) and not isinstance(r, bool) and 1 < r <= 100
                for r in ratios
            )
        ):
            raise PlanError(
                f"metrics.{name}.alarm_ratios: must be 1 to 16 ratios in (1, 100], got {ratios!r}"
            )
        out[name] = MetricPolicy(
            float(tolerance),
            float(coverage),
            rollback,
            float(margin),
            compare,
            tuple(float(r) for r in ratios),
            bad_when=bad_when,
        )
    return MappingProxyType(out)


def _tolerance(spec: Mapping[str, Any], metric: str, key: str, default: float) -> float:
    value = spec.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 10:
        raise PlanError(f"metrics.{metric}.{key}: must be a number in [0, 10], got {value!r}")
    return float(value)
