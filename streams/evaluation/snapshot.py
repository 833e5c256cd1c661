"""The decision rule's view of the current step, from a rollout's evidence state: the
tally's released evidence (complete seconds, warm-up left out) read by
:func:`~model_canary.streams.stats.snapshot.take_snapshot`, with each arm's completeness (to
name a lagging arm).

>>> from model_canary.streams.evidence.state import RolloutEvidence
>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> from model_canary.streams.evaluation.plans import plan_of
>>> from model_canary.streams.stats import decide, policy, tally_for
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> plan = plan_of(state)
>>> evidence = RolloutEvidence.new("iris", "r1", tally_for(plan))
>>> snap = step_snapshot(evidence, state, policy(plan), now)
>>> snap.weight_bp.tolist(), snap.canary_requests.tolist(), sorted(snap.comparisons)
([100], [0], ['errors', 'latency_p95', 'latency_p99'])
>>> decide(snap, policy(plan)).code
'too-short'
>>> snap.thresholds_fixed.tolist()  # a step holds until the latency thresholds are fixed
[False]
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from model_canary.streams.evaluation.plans import progress_of
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import RolloutState, epoch_ms
from model_canary.streams.stats import StepPolicy, StepSnapshot, take_snapshot
from model_canary.streams.stats.layout import ARMS


def step_snapshot(
    evidence: RolloutEvidence, state: RolloutState, rule: StepPolicy, now: datetime
) -> StepSnapshot:
    """What :func:`~model_canary.streams.stats.decide` needs about the current step."""
    upto, closed = evidence.complete_upto(epoch_ms(now))
    complete = np.array([[upto.get(arm, closed) for arm in ARMS]], dtype=np.int64)
    return take_snapshot(
        evidence.tally,
        progress_of(state),
        rule,
        now.timestamp(),
        complete_upto=complete,
        thresholds_fixed=state.latency_thresholds_ms is not None,
    )
