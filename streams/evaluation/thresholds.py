"""A rollout's latency thresholds, fixed once from the baseline's (and control's) answers
before anything is compared: the rule of :mod:`model_canary.streams.stats.thresholds`
(``canary sim`` applies the same), on the tally's pooled histogram.

>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> from model_canary.streams.evaluation.plans import plan_of
>>> from model_canary.streams.stats import tally_for
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> tally = tally_for(plan_of(state))
>>> tally.add_latency_hist("baseline", bins=[[400, 480]], counts=[[4890, 100]])
>>> due_thresholds(tally, state, plan_of(state), now) is None  # 5,000 items needed
True
>>> tally.add_latency_hist("baseline", bins=[[430]], counts=[[10]])
>>> {k: round(v, 1) for k, v in due_thresholds(tally, state, plan_of(state), now).items()}
{'p95': 28.1, 'p99': 137.0}
"""

from __future__ import annotations

from datetime import datetime

from model_canary.streams.messages import RolloutState
from model_canary.streams.plan import RolloutPlan
from model_canary.streams.stats.tally import Tally
from model_canary.streams.stats.thresholds import (
    QUANTILES,
    first_step_done,
    ready,
    thresholds_from_hist,
)

#: The rollout state's names of the thresholds (``latency_p95`` -> ``p95``).
NAMES = {metric: metric.removeprefix("latency_") for metric in QUANTILES}


def due_thresholds(
    tally: Tally, state: RolloutState, plan: RolloutPlan, now: datetime
) -> dict[str, float] | None:
    """The thresholds to fix now (``{"p95": ms, "p99": ms}``), or None: the plan compares no
    latency, the state has its thresholds already, or the histogram is not ready yet."""
    if not set(QUANTILES) & set(plan.metrics) or state.latency_thresholds_ms is not None:
        return None
    elapsed = (now - state.step_started_at).total_seconds()
    done = first_step_done([state.step_index], [elapsed], plan.min_step_seconds)
    if not ready(tally.hist.sum(axis=1), done)[0]:
        return None
    values = thresholds_from_hist(tally.hist)[0]
    return {NAMES[m]: float(v) for m, v in zip(QUANTILES, values, strict=True)}
