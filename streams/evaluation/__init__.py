"""The evaluator's pure logic beside the evidence state: which plan a rollout follows, the
decision rule's snapshot of the current step, which command a verdict asks for, and the
latency thresholds. No Kafka.

* :mod:`.plans` - ``plan_of(state)``, ``policy(plan)``, ``current_weight(state)``;
* :mod:`.snapshot` - ``step_snapshot(evidence, state, plan, now)`` for
  :func:`~model_canary.streams.stats.decide`;
* :mod:`.commands` - ``action_for(state, verdict)``: what a verdict moves;
* :mod:`.thresholds` - ``thresholds_from_hist``: a rollout's latency thresholds.
"""

from model_canary.streams.evaluation.commands import HOLDING_CODES, action_for
from model_canary.streams.evaluation.plans import current_weight, plan_of, policy
from model_canary.streams.evaluation.snapshot import step_snapshot
from model_canary.streams.evaluation.thresholds import THRESHOLD_ITEMS, thresholds_from_hist

__all__ = [
    "HOLDING_CODES",
    "THRESHOLD_ITEMS",
    "action_for",
    "current_weight",
    "plan_of",
    "policy",
    "step_snapshot",
    "thresholds_from_hist",
]
