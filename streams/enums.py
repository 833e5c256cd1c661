"""The closed vocabularies of the records: arms, modes, actions, phases, outcomes, pre-flight
statuses."""

from __future__ import annotations

from enum import StrEnum


class Arm(StrEnum):
    """The deployment that answered a request. ``control``: the baseline version served by its
    own worker group at the canary's share (same cohort hash), the fair comparison for
    load-dependent metrics such as latency."""

    STABLE = "stable"
    BASELINE = "baseline"
    CANARY = "canary"
    CONTROL = "control"


class Mode(StrEnum):
    """``canary`` serves a share of traffic from the canary; ``shadow`` only mirrors it."""

    CANARY = "canary"
    SHADOW = "shadow"


class Action(StrEnum):
    """What a :class:`ControlCommand` asks the controller to do."""

    REGISTER = "register"
    START = "start"
    SET_WEIGHT = "set_weight"
    ADVANCE = "advance"
    PAUSE = "pause"
    RESUME = "resume"
    HOLD = "hold"
    ROLLBACK = "rollback"
    FINALIZE = "finalize"
    SET_THRESHOLDS = "set_thresholds"


class Phase(StrEnum):
    """Where a rollout is in its life (``Stable``: a registered model with no rollout)."""

    STABLE = "Stable"
    INITIALIZING = "Initializing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HOLDING = "Holding"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"


class Outcome(StrEnum):
    """The evaluator's verdict on a rollout step."""

    ADVANCE = "ADVANCE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"
    FINALIZE = "FINALIZE"


class PreflightStatus(StrEnum):
    """Where a pre-flight is: replaying and collecting answers, then its verdict."""

    REPLAYING = "replaying"
    COLLECTING = "collecting"
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


class BaselineMode(StrEnum):
    """How a pre-flight gets the baseline's answers: it ``replay``s the recorded requests
    through the baseline too (same load and batching: latency compares), or uses the answers
    ``recorded`` when they were served (no latency comparison)."""

    REPLAY = "replay"
    RECORDED = "recorded"


class EvidenceKind(StrEnum):
    """Who produced an :class:`~model_canary.streams.messages.Evidence` record: the router
    (``routed``), a worker (``served``) or the label joiner (``labelled``)."""

    ROUTED = "routed"
    SERVED = "served"
    LABELLED = "labelled"
