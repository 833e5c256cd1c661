"""What a verdict moves: the command the evaluator sends for it, if any.

* ADVANCE, ROLLBACK, FINALIZE ask for the matching command; in shadow mode, ADVANCE and
  FINALIZE move nothing (going live is the operator's call, informed by the decision);
* a HOLD whose code says the evidence is suspect or the step overran
  (:data:`HOLDING_CODES`) puts the rollout in the Holding phase once; other HOLDs (too
  short, too few samples, waiting for results) move nothing.

>>> from model_canary.streams.messages import Phase, RolloutState, utc_now
>>> from model_canary.streams.stats import Verdict
>>> now = utc_now()
>>> state = RolloutState(model="iris", rollout_id="r1", stable_version="v1",
...     baseline_version="v1", canary_version="v2", phase=Phase.PROGRESSING,
...     weight_bp=100, step_started_at=now, updated_at=now)
>>> action_for(state, Verdict(Outcome.ROLLBACK, "harm", "errors")).value
'rollback'
>>> action_for(state, Verdict(Outcome.HOLD, "too-short", "step ran 3s of 300s")) is None
True
"""

from __future__ import annotations

from model_canary.streams.enums import Action, Mode, Outcome, Phase
from model_canary.streams.messages import RolloutState
from model_canary.streams.stats import Verdict

#: HOLD codes that put the rollout in the Holding phase (the others are ordinary waiting).
HOLDING_CODES = frozenset({"sample-ratio-mismatch", "max-duration-exceeded"})

_ACTIONS = {
    Outcome.ADVANCE: Action.ADVANCE,
    Outcome.ROLLBACK: Action.ROLLBACK,
    Outcome.FINALIZE: Action.FINALIZE,
}


def action_for(state: RolloutState, verdict: Verdict) -> Action | None:
    """The command ``verdict`` asks for on ``state``, or None when it moves nothing."""
    if verdict.outcome is Outcome.HOLD:
        if verdict.code in HOLDING_CODES and state.phase is not Phase.HOLDING:
            return Action.HOLD
        return None
    if state.mode is Mode.SHADOW and verdict.outcome in (Outcome.ADVANCE, Outcome.FINALIZE):
        return None
    return _ACTIONS.get(verdict.outcome)
