"""The evaluator's pure logic beside the evidence state: which plan a rollout follows, the
decision rule's snapshot of the current step and the rollout's latency thresholds. No Kafka.
The statistics themselves (tally, tests, decision rule, verdict -> command) live in
:mod:`model_canary.streams.stats`; ``canary sim`` runs the same functions.

* :mod:`.plans` - ``plan_of(state)``, ``current_weight(state)``, ``progress_of(state)``;
* :mod:`.snapshot` - ``step_snapshot(evidence, state, rule, now)`` for
  :func:`~model_canary.streams.stats.decide`;
* :mod:`.thresholds` - ``due_thresholds``: a rollout's latency thresholds once they may be
  fixed.
"""

from model_canary.streams.evaluation.plans import current_weight, plan_of, progress_of
from model_canary.streams.evaluation.snapshot import step_snapshot
from model_canary.streams.evaluation.thresholds import due_thresholds

__all__ = [
    "current_weight",
    "due_thresholds",
    "plan_of",
    "progress_of",
    "step_snapshot",
]
