"""What ``canary sim`` simulates: traffic, serving and the canary's change, as data.

A scenario file (JSON or YAML, ``canary sim --scenario-file FILE``) is a mapping; every field
is optional (defaults in brackets)::

    name: my-model                # [custom]
    title: what it shows
    harmful: false                # [false] is the canary worse? (false: an A/A run)
    minutes: 120                  # [180] simulated time at most
    plan: {steps: [1, 20, 50, 100], step: {min_duration: 5m}}   # [the default plan]
    traffic:
      rate: 1000                  # [1000] requests per minute, or [[minute, rate], ...]
      users: 20000                # [0] distinct routing keys (0: every request its own key)
      zipf: 1.0                   # [0] skew: user i sends in proportion to 1 / i^zipf
      user_spread: 0.5            # [0] per-user spread (lognormal sigma) of error and
                                  #     latency propensity: one user's requests are alike
    serving:                      # both versions, unless overridden under canary:
      error_rate: 0.01            # [0.01] per request
      batch_failure: 0.0          # [0] chance that a whole micro-batch fails
      latency_ms: 50              # [50] median latency of one item
      latency_sigma: 0.5          # [0.5] lognormal sigma
      max_batch: 1                # [1] micro-batch cap (1: no batching)
      batch_window_ms: 20         # [20] items arriving within this join a batch
      batch_cost: 0.02            # [0.02] each extra item in a batch adds this share
      latency_unit: item          # [item] or batch: every item reports its batch's (max)
      cold_factor: 1              # [1] the first batch of a new worker group is this slower
      accuracy: null              # [null: no labels] share of correct predictions
      label_coverage: 0.5         # [0.5] share of requests whose label arrives
      label_delay_s: 0            # [0] seconds until a label (or feedback) arrives
      thumbs_down: null           # [null: no feedback] share of rated answers rated down,
                                  #     judged by the plan's outcome metric thumbs_down
      feedback_coverage: 0.5      # [0.5] share of requests whose user rates the answer
      lag_s: 0                    # [0] this arm's results arrive this late
    baseline: {lag_s: 60}         # overrides for the baseline and control arms
    canary:                       # overrides for the canary, plus its regression:
      error_rate: 0.02
      latency_scale: 1.3          # [1] every latency times this
      tail_scale: 1.0             # [1] latencies above the baseline's p90 times this
      drift_per_min: 0.01         # [0] latency grows by this share per minute
      from_weight: 50             # [0] the regression applies from this weight (%) on
      before: {latency_scale: 0.9}  # overrides below from_weight
    incident: [40, 50, 0.05]      # [none] minutes [40, 50): both arms' error rate 5%
    drift: [0.005, 0.02]          # [none] both arms' error rate moves linearly

>>> s = scenario_from_doc({"name": "x", "canary": {"error_rate": 0.02}})
>>> s.arm("canary", 2000).error_rate, s.arm("baseline", 2000).error_rate
(0.02, 0.01)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from model_canary.streams.errors import ConfigError


class ScenarioError(ConfigError):
    """A scenario file is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class Serving:
    """How one arm serves (see the module docstring)."""

    error_rate: float = 0.01
    batch_failure: float = 0.0
    latency_ms: float = 50.0
    latency_sigma: float = 0.5
    max_batch: int = 1
    batch_window_ms: float = 20.0
    batch_cost: float = 0.02
    latency_unit: str = "item"
    cold_factor: float = 1.0
    accuracy: float | None = None
    label_coverage: float = 0.5
    #: Users' feedback: the share of rated answers rated thumbs-down (None: no feedback), and
    #: the share of requests rated.
    thumbs_down: float | None = None
    feedback_coverage: float = 0.5
    label_delay_s: int = 0
    lag_s: int = 0
    latency_scale: float = 1.0
    tail_scale: float = 1.0
    drift_per_min: float = 0.0


@dataclass(frozen=True, slots=True)
class Traffic:
    rate: tuple[tuple[float, float], ...] = ((0.0, 1000.0),)
    users: int = 0
    zipf: float = 0.0
    user_spread: float = 0.0

    def rate_at(self, minute: float) -> float:
        """Requests per minute at ``minute`` (piecewise constant)."""
        current = self.rate[0][1]
        for start, rate in self.rate:
            if minute >= start:
                current = rate
        return current


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str = ""
    harmful: bool = False
    minutes: int = 180
    plan: Mapping[str, Any] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    serving: Serving = field(default_factory=Serving)
    baseline: Mapping[str, Any] = field(default_factory=dict)
    canary: Mapping[str, Any] = field(default_factory=dict)
    from_weight_bp: int = 0
    before: Mapping[str, Any] = field(default_factory=dict)
    incident: tuple[float, float, float] | None = None
    drift: tuple[float, float] | None = None

    def arm(self, arm: str, weight_bp: int) -> Serving:
        """How ``arm`` serves while the canary is at ``weight_bp``."""
        if arm != "canary":
            return replace(self.serving, **self.baseline)
        changes = dict(self.canary)
        if weight_bp < self.from_weight_bp:
            changes = {k: v for k, v in changes.items() if k not in _REGRESSION}
            changes.update(self.before)
        return replace(self.serving, **changes)

    @property
    def labelled(self) -> bool:
        return self.serving.accuracy is not None

    @property
    def rated(self) -> bool:
        """Users rate answers (thumbs up or down): the outcome metric :data:`RATED_METRIC`."""
        return self.serving.thumbs_down is not None

    def to_doc(self) -> dict[str, Any]:
        """The scenario as a file would spell it."""
        doc: dict[str, Any] = {"name": self.name, "title": self.title, "harmful": self.harmful}
        doc["minutes"] = self.minutes
        if self.plan:
            doc["plan"] = dict(self.plan)
        t = self.traffic
        rate: Any = t.rate[0][1] if len(t.rate) == 1 else [list(r) for r in t.rate]
        doc["traffic"] = {"rate": rate, "users": t.users, "zipf": t.zipf}
        doc["traffic"]["user_spread"] = t.user_spread
        doc["serving"] = {f.name: getattr(self.serving, f.name) for f in fields(Serving)}
        if self.baseline:
            doc["baseline"] = dict(self.baseline)
        canary = dict(self.canary)
        if self.from_weight_bp:
            canary["from_weight"] = self.from_weight_bp / 100
        if self.before:
            canary["before"] = dict(self.before)
        if canary:
            doc["canary"] = canary
        if self.incident:
            doc["incident"] = list(self.incident)
        if self.drift:
            doc["drift"] = list(self.drift)
        return doc


#: Canary fields that are part of a regression (dropped below ``from_weight``).
_REGRESSION = frozenset(
    {
        "error_rate",
        "batch_failure",
        "latency_scale",
        "tail_scale",
        "drift_per_min",
        "accuracy",
        "thumbs_down",
    }
)
#: The outcome metric a scenario with ``thumbs_down`` feedback is judged by (its plan gets it).
RATED_METRIC = "thumbs_down"
RATED_BAD_WHEN = "label == 'down'"
_SERVING = {f.name: f for f in fields(Serving)}


def load_scenario(path: Path) -> Scenario:
    """Read a scenario from a ``.json``, ``.yaml`` or ``.yml`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and yaml.YAMLError's parse errors
        raise ScenarioError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping of fields")
    return scenario_from_doc(doc)


def scenario_from_doc(doc: Mapping[str, Any]) -> Scenario:
    """Validate a scenario document (see the module docstring)."""
    known = {
        "name", "title", "harmful", "minutes", "plan", "traffic", "serving", "baseline",
        "canary", "incident", "drift",
    }  # fmt: skip
    _unknown(doc, known, "")
    name = str(doc.get("name", "custom"))
    minutes = doc.get("minutes", 180)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 24 * 60:
        raise ScenarioError(f"minutes: a whole number in 1..1440, got {minutes!r}")
    plan = doc.get("plan") or {}
    if not isinstance(plan, dict):
        raise ScenarioError("plan: must be a mapping (the fields of a rollout plan)")
    serving = _serving(doc.get("serving") or {}, "serving", Serving())
    baseline = _overrides(doc.get("baseline") or {}, "baseline")
    canary_doc = dict(doc.get("canary") or {})
    from_weight = canary_doc.pop("from_weight", 0)
    if not isinstance(from_weight, int | float) or not 0 <= from_weight <= 100:
        raise ScenarioError(f"canary.from_weight: a percentage, got {from_weight!r}")
    before = _overrides(canary_doc.pop("before", None) or {}, "canary.before")
    canary = _overrides(canary_doc, "canary")
    for where, over in (("baseline", baseline), ("canary", canary), ("canary.before", before)):
        _serving(over, where, serving)  # validates the merged values
    return Scenario(
        name=name,
        title=str(doc.get("title", "")),
        harmful=_bool(doc.get("harmful", False), "harmful"),
        minutes=minutes,
        plan=plan,
        traffic=_traffic(doc.get("traffic") or {}),
        serving=serving,
        baseline=baseline,
        canary=canary,
        from_weight_bp=round(float(from_weight) * 100),
        before=before,
        incident=_triple(doc.get("incident")),
        drift=_pair(doc.get("drift")),
    )


def _unknown(doc: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(map(str, set(doc) - known))
    if unknown:
        raise ScenarioError(f"{where or 'scenario'}: unknown field(s) {unknown}")


def _overrides(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ScenarioError(f"{where}: must be a mapping")
    _unknown(doc, set(_SERVING), where)
    return dict(doc)


def _serving(doc: Mapping[str, Any], where: str, base: Serving) -> Serving:
    _unknown(doc, set(_SERVING), where)
    values = {}
    for key, value in doc.items():
        values[key] = _check(key, value, f"{where}.{key}")
    return replace(base, **values)


def _check(key: str, value: Any, where: str) -> Any:
    if key == "latency_unit":
        if value not in ("item", "batch"):
            raise ScenarioError(f"{where}: 'item' or 'batch', got {value!r}")
        return value
    if key in ("accuracy", "thumbs_down") and value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ScenarioError(f"{where}: must be a number, got {value!r}")
    shares = {
        "error_rate", "batch_failure", "accuracy", "label_coverage", "thumbs_down",
        "feedback_coverage",
    }  # fmt: skip
    if key in shares and not 0 <= value <= 1:
        raise ScenarioError(f"{where}: a share in [0, 1], got {value!r}")
    if key in ("max_batch", "label_delay_s", "lag_s"):
        if int(value) != value or value < (1 if key == "max_batch" else 0):
            raise ScenarioError(f"{where}: a whole number, got {value!r}")
        return int(value)
    if key in ("latency_ms", "latency_scale", "tail_scale", "cold_factor") and not value > 0:
        raise ScenarioError(f"{where}: must be positive, got {value!r}")
    if value < 0 and key != "drift_per_min":
        raise ScenarioError(f"{where}: must be >= 0, got {value!r}")
    return float(value)


def _traffic(doc: Any) -> Traffic:
    if not isinstance(doc, dict):
        raise ScenarioError("traffic: must be a mapping")
    _unknown(doc, {"rate", "users", "zipf", "user_spread"}, "traffic")
    rate = doc.get("rate", 1000.0)
    points: tuple[tuple[float, float], ...]
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        points = ((0.0, float(rate)),)
    elif (
        isinstance(rate, list)
        and rate
        and all(isinstance(p, list | tuple) and len(p) == 2 for p in rate)
    ):
        points = tuple((float(m), float(r)) for m, r in rate)
    else:
        raise ScenarioError(
            f"traffic.rate: requests per minute or [[minute, rate], ...], got {rate!r}"
        )
    if any(r < 0 for _, r in points) or any(r > 600_000 for _, r in points):
        raise ScenarioError("traffic.rate: between 0 and 600,000 requests per minute")
    users = doc.get("users", 0)
    if not isinstance(users, int) or isinstance(users, bool) or not 0 <= users <= 10_000_000:
        raise ScenarioError(f"traffic.users: a whole number >= 0, got {users!r}")
    zipf = doc.get("zipf", 0.0)
    spread = doc.get("user_spread", 0.0)
    for key, value in (("zipf", zipf), ("user_spread", spread)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 5:
            raise ScenarioError(f"traffic.{key}: a number in [0, 5], got {value!r}")
    return Traffic(tuple(sorted(points)), users, float(zipf), float(spread))


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: true or false, got {value!r}")
    return value


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise ScenarioError("incident: [first minute, end minute, error rate]")
    a, b, c = (float(v) for v in value)
    return (a, b, c)


def _pair(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ScenarioError("drift: [error rate at the start, at the end]")
    return (float(value[0]), float(value[1]))
