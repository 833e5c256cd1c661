"""Which plan a rollout follows, and where the rollout is, as the decision rule reads it.

>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> plan_of(state).steps_bp, current_weight(state), progress_of(state).weight_bp.tolist()
((100, 2000, 5000, 10000), 100, [100])
"""

from __future__ import annotations

import numpy as np

from model_canary.streams import plan as plans
from model_canary.streams.messages import Mode, RolloutState
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.stats.layout import SHADOW_PAIR_BP
from model_canary.streams.stats.snapshot import Progress


def plan_of(state: RolloutState) -> RolloutPlan:
    """The rollout's plan (from its start command), or the defaults (the router reads it
    through the same :func:`model_canary.streams.plan.plan_of`)."""
    return plans.plan_of(state.model, state.canary_version, state.plan_json)


def current_weight(state: RolloutState) -> int:
    """The weight this step's requests carry (mirrored pairs carry 1/2 in shadow mode)."""
    return SHADOW_PAIR_BP if state.mode is Mode.SHADOW else state.weight_bp


def progress_of(state: RolloutState) -> Progress:
    """Where the rollout is, for :func:`~model_canary.streams.stats.snapshot.take_snapshot`
    (one replica)."""
    return Progress(
        weight_bp=np.array([current_weight(state)], dtype=np.int64),
        step_index=np.array([state.step_index], dtype=np.int64),
        step_started_s=np.array([state.step_started_at.timestamp()]),
        steps_bp=tuple(state.steps_bp),
        shadow=state.mode is Mode.SHADOW,
    )
