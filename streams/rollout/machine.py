"""The rollout state machine.

``apply_command(state, command, now)`` returns the next :class:`RolloutState` or raises
:class:`CommandRejectedError` with a short reason code and a message; a rejected command changes
nothing. States by phase::

    (none) --register--> Stable --start--> Progressing --advance--> ... --> Promoting
                                   |  pause/resume <-> Paused, hold <-> Holding
                                   +--rollback--> RolledBack    +--finalize--> Succeeded

Stable, Succeeded and RolledBack have no rollout in progress: every request goes to the
stable version, and a new rollout may start.

>>> from model_canary.streams.messages import ControlCommand, utc_now
>>> now = utc_now()
>>> s = apply_command(None, ControlCommand(command_id="c1", model="iris", action="register",
...                   issued_at=now, baseline_version="v1"), now)
>>> s = apply_command(s, ControlCommand(command_id="c2", model="iris", action="start",
...                   issued_at=now, canary_version="v2"), now)
>>> s.phase.value, s.weight_bp, s.baseline_version, s.canary_version
('Progressing', 100, 'v1', 'v2')
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime
from itertools import pairwise

from model_canary.streams.defaults import DEFAULT_STEPS_BP
from model_canary.streams.errors import CanaryError, CommandRejectedError
from model_canary.streams.messages import MAX_BP, Action, ControlCommand, Mode, Phase, RolloutState
from model_canary.streams.plan import PlanError, RolloutPlan
from model_canary.streams.topics import validate_name

ACTIVE_PHASES = frozenset(
    {Phase.INITIALIZING, Phase.PROGRESSING, Phase.PAUSED, Phase.HOLDING, Phase.PROMOTING}
)


def apply_command(
    state: RolloutState | None, command: ControlCommand, now: datetime
) -> RolloutState:
    """The state after ``command``; raises :class:`CommandRejectedError` and changes nothing
    else."""
    if state is not None and state.model != command.model:
        raise CommandRejectedError("invalid-command", "command and state are for different models")
    handler = _HANDLERS.get(command.action)
    if handler is None:  # pragma: no cover - Action is a closed enum
        raise CommandRejectedError("invalid-command", f"unknown action {command.action!r}")
    if command.action not in (Action.REGISTER, Action.START) and state is None:
        raise CommandRejectedError(
            "unknown-model",
            f"model {command.model!r} is unknown: register it or start a rollout with "
            "a baseline version first",
        )
    if (
        command.expected_revision is not None
        and state is not None
        and state.revision != command.expected_revision
    ):
        raise CommandRejectedError(
            "stale",
            f"the command was decided on revision {command.expected_revision} of the rollout, "
            f"which is now at revision {state.revision}",
        )
    new = handler(state, command, now)
    revision = 0 if state is None else state.revision + 1
    return replace(new, revision=revision, updated_at=now, reason=command.reason or new.reason)


def is_active(state: RolloutState | None) -> bool:
    return state is not None and state.phase in ACTIVE_PHASES


def _require_active(state: RolloutState | None, command: ControlCommand) -> RolloutState:
    if state is None or state.phase not in ACTIVE_PHASES:
        phase = "no rollout" if state is None else state.phase.value
        raise CommandRejectedError(
            "forbidden-transition",
            f"{command.action.value} needs a rollout in progress for {command.model!r} "
            f"(it is {phase})",
        )
    return state


def _register(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    if is_active(state):
        raise CommandRejectedError(
            "forbidden-transition",
            f"a rollout of {cmd.model!r} is in progress: finalize or roll it back first",
        )
    if not cmd.baseline_version:
        raise CommandRejectedError("invalid-command", "register needs baseline_version")
    version = _version(cmd.baseline_version)
    return RolloutState(
        model=cmd.model,
        rollout_id=cmd.command_id,
        stable_version=version,
        baseline_version=version,
        phase=Phase.STABLE,
        step_started_at=now,
        updated_at=now,
    )


def _start(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    if is_active(state):
        raise CommandRejectedError(
            "forbidden-transition",
            f"a rollout of {cmd.model!r} is already in progress "
            f"({state.canary_version if state else ''}): finalize or roll it back first",
        )
    baseline = cmd.baseline_version or (state.stable_version if state else None)
    if baseline is None:
        raise CommandRejectedError(
            "unknown-model", f"model {cmd.model!r} is unknown: give the baseline version"
        )
    if state is not None and cmd.baseline_version and cmd.baseline_version != state.stable_version:
        raise CommandRejectedError(
            "invalid-command",
            f"baseline {cmd.baseline_version!r} is not the stable version "
            f"{state.stable_version!r} of {cmd.model!r}",
        )
    if not cmd.canary_version:
        raise CommandRejectedError("invalid-command", "start needs canary_version")
    canary = _version(cmd.canary_version)
    if canary == baseline:
        raise CommandRejectedError("invalid-command", "the canary version equals the baseline")
    mode = cmd.mode or Mode.CANARY
    steps = validate_steps(cmd.steps_bp or DEFAULT_STEPS_BP)
    shadow = cmd.shadow_sample_bp if cmd.shadow_sample_bp is not None else MAX_BP
    _check_bp("shadow_sample_bp", shadow)
    if cmd.plan_json is not None:
        try:
            RolloutPlan.from_json(cmd.plan_json)
        except PlanError as exc:
            # The evaluator judges the rollout by this plan: it must be readable.
            raise CommandRejectedError("invalid-command", f"plan_json: {exc}") from None
    return RolloutState(
        model=cmd.model,
        rollout_id=cmd.command_id,
        stable_version=baseline,
        baseline_version=baseline,
        canary_version=canary,
        mode=mode,
        phase=Phase.PROGRESSING,
        steps_bp=steps,
        step_index=0,
        weight_bp=0 if mode is Mode.SHADOW else steps[0],
        shadow_sample_bp=shadow,
        step_started_at=now,
        updated_at=now,
        plan_json=cmd.plan_json,
    )


def _set_weight(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if cmd.weight_bp is None:
        raise CommandRejectedError("bad-weight", "set_weight needs weight_bp")
    _check_bp("weight_bp", cmd.weight_bp)
    if s.mode is Mode.SHADOW:
        raise CommandRejectedError(
            "forbidden-transition", "a shadow rollout serves nothing from the canary"
        )
    # The step is the last one at or below the new weight, so a later advance goes on from it.
    index = max((i for i, w in enumerate(s.steps_bp) if w <= cmd.weight_bp), default=0)
    return replace(s, weight_bp=cmd.weight_bp, step_index=index, step_started_at=now)


def _advance(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if s.phase is Phase.PAUSED:
        raise CommandRejectedError("forbidden-transition", "the rollout is paused: resume it first")
    if s.mode is Mode.SHADOW:
        raise CommandRejectedError(
            "forbidden-transition", "a shadow rollout has no steps: finalize or roll back"
        )
    nxt = next((i for i, w in enumerate(s.steps_bp) if w > s.weight_bp), None)
    if nxt is None:
        raise CommandRejectedError(
            "forbidden-transition", "already at the final step: finalize the rollout"
        )
    weight = s.steps_bp[nxt]
    phase = Phase.PROMOTING if weight >= MAX_BP else Phase.PROGRESSING
    return replace(s, step_index=nxt, weight_bp=weight, phase=phase, step_started_at=now)


def _pause(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if s.phase is Phase.PAUSED:
        raise CommandRejectedError("forbidden-transition", "the rollout is already paused")
    return replace(s, phase=Phase.PAUSED)


def _resume(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if s.phase is not Phase.PAUSED:
        raise CommandRejectedError("forbidden-transition", "the rollout is not paused")
    return replace(s, phase=Phase.PROMOTING if s.weight_bp >= MAX_BP else Phase.PROGRESSING)


def _hold(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if s.phase is Phase.PAUSED:
        raise CommandRejectedError("forbidden-transition", "the rollout is paused by an operator")
    return replace(s, phase=Phase.HOLDING)


def _rollback(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    return replace(s, phase=Phase.ROLLED_BACK, weight_bp=0, step_started_at=now)


def _finalize(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if not s.canary_version:
        # Every rollout this machine starts has one; a state record from elsewhere may not.
        raise CommandRejectedError(
            "invalid-command", "the rollout has no canary version to finalize"
        )
    return replace(
        s,
        phase=Phase.SUCCEEDED,
        stable_version=s.canary_version,
        weight_bp=0,
        step_started_at=now,
    )


#: Latency thresholds a rollout can carry (over_p95 / over_p99 columns of served evidence).
THRESHOLD_NAMES = frozenset({"p95", "p99"})


def _set_thresholds(state: RolloutState | None, cmd: ControlCommand, now: datetime) -> RolloutState:
    s = _require_active(state, cmd)
    if s.latency_thresholds_ms is not None:
        raise CommandRejectedError(
            "forbidden-transition",
            "the rollout's latency thresholds are fixed already (once per rollout, so every "
            "answer is compared with the same ones)",
        )
    thresholds = dict(cmd.latency_thresholds_ms or {})
    if not thresholds or set(thresholds) - THRESHOLD_NAMES:
        raise CommandRejectedError(
            "invalid-command",
            f"set_thresholds needs latency_thresholds_ms with keys among "
            f"{sorted(THRESHOLD_NAMES)}, got {sorted(thresholds)}",
        )
    for name, ms in thresholds.items():
        if not (isinstance(ms, int | float) and math.isfinite(ms) and ms > 0):
            raise CommandRejectedError(
                "invalid-command", f"latency threshold {name} must be a positive number of ms"
            )
    return replace(s, latency_thresholds_ms={k: float(v) for k, v in thresholds.items()})


def validate_steps(steps: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Steps are canary weights in basis points, strictly increasing, ending at 10000."""
    steps = tuple(steps)
    if not steps:
        raise CommandRejectedError("bad-weight", "a rollout needs at least one step")
    for bp in steps:
        _check_bp("step", bp)
        if bp == 0:
            raise CommandRejectedError("bad-weight", "a step of 0% sends nothing to the canary")
    if any(b <= a for a, b in pairwise(steps)):
        raise CommandRejectedError("bad-weight", f"steps must increase strictly, got {list(steps)}")
    if steps[-1] != MAX_BP:
        raise CommandRejectedError("bad-weight", "the last step must be 100% (10000 basis points)")
    return steps


def _check_bp(name: str, value: int) -> None:
    if not 0 <= value <= MAX_BP:
        raise CommandRejectedError(
            "bad-weight",
            f"{name} {value / 100:g}% is outside 0..100% (basis points 0..{MAX_BP})",
        )


def _version(version: str) -> str:
    try:
        return validate_name("version", version)
    except CanaryError as exc:
        raise CommandRejectedError("invalid-command", str(exc)) from None


_HANDLERS = {
    Action.REGISTER: _register,
    Action.START: _start,
    Action.SET_WEIGHT: _set_weight,
    Action.ADVANCE: _advance,
    Action.PAUSE: _pause,
    Action.RESUME: _resume,
    Action.HOLD: _hold,
    Action.ROLLBACK: _rollback,
    Action.FINALIZE: _finalize,
    Action.SET_THRESHOLDS: _set_thresholds,
}
