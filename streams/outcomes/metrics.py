"""Outcome metrics in a rollout plan: a name, where the evidence comes from (``feedback``) and
when a piece of feedback is bad (a condition of :mod:`.expr`).

A plan declares them beside the built-in metrics::

    metrics:
      errors: {tolerance: 0.2}
      thumbs_down: {from: feedback, bad_when: "label == 'down'", tolerance: 0.1}
      abs_error:   {from: feedback, bad_when: "abs(value - prediction) > 5"}
      judge:       {from: feedback, bad_when: "score < 0.7", min_label_coverage: 0.05}

An outcome metric is judged like accuracy: the rate of bad outcomes among the requests with
feedback that counts for it, canary against baseline, with the same sequential test, the same
coverage requirement (``min_label_coverage``: the share of a step's requests whose feedback
counts for the metric; default 0) and the same sample-ratio guard on how feedback arrives per
arm. Its other settings (``tolerance``, ``rollback_tolerance``, ...) mean what they mean for
accuracy.

This module checks what is particular to outcome metrics (the name, ``from``, ``bad_when``)
and judges feedback; the plan parser reads the settings every metric shares.

>>> spec = outcome_spec("thumbs_down", {"from": "feedback", "bad_when": "label == 'down'"})
>>> spec.name, spec.bad_when, spec.settings
('thumbs_down', "label == 'down'", {})
>>> judge({"thumbs_down": spec.condition}, Outcome(label="down"))
{'thumbs_down': True}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from model_canary.streams.errors import ConfigError
from model_canary.streams.outcomes.expr import (
    Condition,
    ExpressionError,
    Outcome,
    compile_condition,
)

__all__ = [
    "BUILT_IN",
    "SOURCES",
    "Outcome",
    "OutcomeMetricError",
    "OutcomeSpec",
    "condition",
    "is_outcome",
    "judge",
    "outcome_spec",
]

#: Built-in metrics (not outcome metrics); an outcome metric may not take their names.
BUILT_IN: Final = ("errors", "latency_p95", "latency_p99", "accuracy")
#: Where an outcome metric's evidence comes from.
SOURCES: Final = ("feedback",)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
#: Default share of a step's requests whose feedback must count for an outcome metric before
#: the step advances: none (feedback such as complaints is rare by nature).
DEFAULT_MIN_COVERAGE: Final = 0.0


class OutcomeMetricError(ConfigError):
    """An outcome metric's declaration is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class OutcomeSpec:
    """A checked outcome metric: its name, canonical ``bad_when`` text, compiled condition,
    and the remaining (shared) settings for the plan parser to read."""

    name: str
    source: str
    bad_when: str
    condition: Condition
    settings: Mapping[str, Any]


def is_outcome(spec: Any) -> bool:
    """Whether a metric's settings declare an outcome metric (they name ``from`` or
    ``bad_when``).

    >>> is_outcome({"bad_when": "score < 0.7"}), is_outcome({"tolerance": 0.1}), is_outcome(None)
    (True, False, False)
    """
    return isinstance(spec, Mapping) and ("bad_when" in spec or "from" in spec)


def outcome_spec(name: Any, spec: Mapping[str, Any]) -> OutcomeSpec:
    """Check an outcome metric's declaration; :class:`OutcomeMetricError` naming the field
    (``metrics.NAME.bad_when: position 6: ...``) when it is invalid."""
    where = f"metrics.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise OutcomeMetricError(
            f"{where}: an outcome metric's name is 1-48 lower-case letters, digits or '_', "
            "starting with a letter"
        )
    if name in BUILT_IN:
        raise OutcomeMetricError(
            f"{where}: {name!r} is a built-in metric; give the outcome metric another name"
        )
    source = spec.get("from", "feedback")
    if source not in SOURCES:
        raise OutcomeMetricError(f"{where}.from: must be one of {list(SOURCES)}, got {source!r}")
    text = spec.get("bad_when")
    if text is None:
        raise OutcomeMetricError(
            f"{where}.bad_when: required: when is a piece of feedback bad? e.g. "
            '"label == \'down\'", "abs(value - prediction) > 5", "score < 0.7"'
        )
    if not isinstance(text, str):
        raise OutcomeMetricError(f"{where}.bad_when: must be text, got {text!r}")
    try:
        compiled = compile_condition(text)
    except ExpressionError as exc:
        raise OutcomeMetricError(f"{where}.bad_when: {exc}") from None
    settings = {k: v for k, v in spec.items() if k not in ("from", "bad_when")}
    return OutcomeSpec(name, source, compiled.text, compiled, settings)


@lru_cache(maxsize=256)
def condition(bad_when: str) -> Condition:
    """The compiled condition of a stored (already checked) ``bad_when`` text, compiled once
    per text; :class:`~.expr.ExpressionError` if the text does not compile.

    >>> condition("score < 0.7")(Outcome(value=0.5))
    True
    """
    return compile_condition(bad_when)


def judge(conditions: Mapping[str, Condition], outcome: Outcome) -> dict[str, bool]:
    """For each outcome metric, whether ``outcome`` is bad (``True``) or good (``False``);
    metrics the feedback says nothing about (a field they read is missing) are left out.

    >>> rules = {"thumbs_down": condition("label == 'down'"), "judge": condition("score < 0.7")}
    >>> judge(rules, Outcome(label="up"))
    {'thumbs_down': False}
    """
    out: dict[str, bool] = {}
    for name, cond in conditions.items():
        bad = cond(outcome)
        if bad is not None:
            out[name] = bad
    return out
