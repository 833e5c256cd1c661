"""Which plan a rollout follows and what it means for the decision rule.

>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> plan_of(state).steps_bp, policy(plan_of(state)).alpha, current_weight(state)
((100, 2000, 5000, 10000), 0.05, 100)
"""

from __future__ import annotations

import logging
from functools import lru_cache

from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Mode, RolloutState
from model_canary.streams.plan import RolloutPlan, parse_plan
from model_canary.streams.routing import SHADOW_PAIR_BP
from model_canary.streams.stats import StepPolicy

log = logging.getLogger(__name__)


def plan_of(state: RolloutState) -> RolloutPlan:
    """The rollout's plan (from the start command), or the defaults."""
    if state.plan_json:
        try:
            return _stored_plan(state.plan_json)
        except ConfigError as exc:
            log.warning("unreadable plan for %s, using defaults: %s", state.model, exc)
    try:
        return parse_plan({"model": state.model, "canary": state.canary_version or "unknown"})
    except ConfigError:
        return RolloutPlan(model=state.model, baseline=None, canary="unknown")


@lru_cache(maxsize=64)
def _stored_plan(text: str) -> RolloutPlan:
    # Parsed once per stored plan (plans are frozen, so sharing one is safe; a parse error is
    # raised again every time).
    return RolloutPlan.from_json(text)


def current_weight(state: RolloutState) -> int:
    """The weight this step's requests carry (mirrored pairs carry 1/2 in shadow mode)."""
    return SHADOW_PAIR_BP if state.mode is Mode.SHADOW else state.weight_bp


def policy(plan: RolloutPlan) -> StepPolicy:
    """The decision rule's thresholds from a rollout plan."""
    accuracy = plan.metrics.get("accuracy")
    return StepPolicy(
        alpha=plan.alpha,
        tolerances={name: m.tolerance for name, m in plan.metrics.items()},
        rollback_tolerances={name: m.rollback_tolerance for name, m in plan.metrics.items()},
        min_duration_s=plan.min_step_seconds,
        min_canary_requests=plan.min_canary_requests,
        min_label_coverage=accuracy.min_label_coverage if accuracy else 0.0,
        max_duration_s=plan.max_step_seconds,
    )
