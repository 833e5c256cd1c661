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
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any

from model_canary.streams.errors import ConfigError
from model_canary.streams.topics import validate_name

METRICS = ("errors", "latency_p95", "latency_p99", "accuracy")
DEFAULT_STEPS = (1.0, 20.0, 50.0, 100.0)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


DEFAULT_METRICS: Mapping[str, MetricPolicy]


class PlanError(ConfigError):
    """A rollout plan is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class MetricPolicy:
    """How much worse than the baseline the canary may be on one metric.

    Both tolerances are relative to the baseline's bad-event rate:

    * ``tolerance`` is the promotion margin (0.2: the canary's rate may be up to 1.2 times
      the baseline's): the last step before 100% holds until the upper confidence bound on
      the ratio is below ``1 + tolerance``;
    * ``rollback_tolerance`` is the harm the rollback test looks past: it rolls back once the
      ratio is shown to exceed ``1 + rollback_tolerance`` (default 0: any proven harm). A
      canary between the two is neither rolled back nor promoted on weak evidence.

    ``min_label_coverage`` (accuracy only) is the share of requests that must have a
    ground-truth label before the final step.
    """

    tolerance: float
    min_label_coverage: float = 0.0
    #: Added after ``tolerance``; plans and stored rollout states without it read as 0.
    rollback_tolerance: float = 0.0


DEFAULT_METRICS = MappingProxyType(
    {
        "errors": MetricPolicy(0.2),
        "latency_p95": MetricPolicy(0.2),
        "latency_p99": MetricPolicy(0.2),
    }
)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """A validated rollout plan (see ``docs`` in the README for the file format)."""

    model: str
    baseline: str | None
    canary: str
    mode: str = "canary"
    steps_bp: tuple[int, ...] = (100, 2000, 5000, 10000)
    min_step_seconds: float = 300.0
    min_canary_requests: int = 200
    max_step_seconds: float = 7200.0
    warmup_seconds: float = 30.0
    alpha: float = 0.05
    shadow_sample_bp: int = 10_000
    metrics: Mapping[str, MetricPolicy] = field(default_factory=lambda: DEFAULT_METRICS)
    #: How long a prediction waits for its ground-truth label (stored plans without it: 24 h).
    label_window_seconds: float = 86_400.0

    def to_json(self) -> str:
        """The plan as compact JSON (carried in the start command and the rollout state)."""
        doc: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["metrics"] = {k: asdict(v) for k, v in self.metrics.items()}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutPlan:
        """The plan :meth:`to_json` wrote; :class:`PlanError` for anything else (the text
        travels in commands, which anyone with access to the control topic can write)."""
        try:
            doc = json.loads(text)
            doc["steps_bp"] = tuple(doc["steps_bp"])
            doc["metrics"] = MappingProxyType(
                {k: MetricPolicy(**v) for k, v in doc["metrics"].items()}
            )
            return cls(**doc)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise PlanError(f"not a stored plan: {type(exc).__name__}: {exc}") from None


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
        "label_window",
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
    min_s = duration(step.get("min_duration", "5m"), "step.min_duration")
    max_s = duration(step.get("max_duration", "2h"), "step.max_duration")
    warmup = duration(step.get("warmup", "30s"), "step.warmup")
    if max_s < min_s:
        raise PlanError("step.max_duration: must be at least step.min_duration")
    min_requests = step.get("min_canary_requests", 200)
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
        raise PlanError(
            f"step.min_canary_requests: must be a whole number >= 0, got {min_requests!r}"
        )
    alpha = doc.get("alpha", 0.05)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha < 0.5:
        raise PlanError(f"alpha: must be a number in (0, 0.5), got {alpha!r}")
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
        label_window_seconds=label_window,
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
    if out[-1] != 10_000:
        raise PlanError(f"steps: the last step must be 100, got {value[-1]}")
    return tuple(out)


def _metrics(value: Any) -> Mapping[str, MetricPolicy]:
    if value is None:
        return DEFAULT_METRICS
    if not isinstance(value, dict) or not value:
        raise PlanError(f"metrics: must be a mapping of {list(METRICS)} to their settings")
    out: dict[str, MetricPolicy] = {}
    for name, spec in value.items():
        if name not in METRICS:
            raise PlanError(f"metrics.{name}: unknown metric; choose from {list(METRICS)}")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise PlanError(f"metrics.{name}: must be a mapping (tolerance, ...)")
        unknown = sorted(
            map(str, set(spec) - {"tolerance", "rollback_tolerance", "min_label_coverage"})
        )
        if unknown or ("min_label_coverage" in spec and name != "accuracy"):
            raise PlanError(f"metrics.{name}: unknown field(s) {unknown or ['min_label_coverage']}")
        tolerance = _tolerance(spec, name, "tolerance", 0.02 if name == "accuracy" else 0.2)
        rollback = _tolerance(spec, name, "rollback_tolerance", 0.0)
        coverage = spec.get("min_label_coverage", 0.5 if name == "accuracy" else 0.0)
        if (
            not isinstance(coverage, int | float)
            or isinstance(coverage, bool)
            or not 0 <= coverage <= 1
        ):
            raise PlanError(
                f"metrics.{name}.min_label_coverage: must be a share in [0, 1], got {coverage!r}"
            )
        out[name] = MetricPolicy(float(tolerance), float(coverage), rollback)
    return MappingProxyType(out)


def _tolerance(spec: Mapping[str, Any], metric: str, key: str, default: float) -> float:
    value = spec.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 10:
        raise PlanError(f"metrics.{metric}.{key}: must be a number in [0, 10], got {value!r}")
    return float(value)
