from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from model_canary.streams.messages import Action, ControlCommand, Mode, Phase, RolloutState, utc_now
from model_canary.streams.rollout import CommandRejectedError, apply_command

NOW = utc_now()


def cmd(action: str, n: int = 0, **fields: Any) -> ControlCommand:
    return ControlCommand(
        command_id=f"c{n}-{action}", model="iris", action=Action(action), issued_at=NOW, **fields
    )


def registered() -> RolloutState:
    return apply_command(None, cmd("register", baseline_version="v1"), NOW)


def started(**fields: Any) -> RolloutState:
    return apply_command(registered(), cmd("start", 1, canary_version="v2", **fields), NOW)


def test_register_then_start_uses_the_stable_version_as_baseline() -> None:
    s = started()
    assert s.phase is Phase.PROGRESSING
    assert (s.baseline_version, s.canary_version, s.weight_bp, s.step_index) == ("v1", "v2", 100, 0)
    assert s.rollout_id == "c1-start"
    assert s.revision == 1


def test_advance_through_every_step_then_finalize() -> None:
    s = started()
    weights = [s.weight_bp]
    later = NOW + timedelta(seconds=5)
    while s.weight_bp < 10_000:
        s = apply_command(s, cmd("advance", len(weights)), later)
        weights.append(s.weight_bp)
    assert weights == [100, 2000, 5000, 10000]
    assert s.phase is Phase.PROMOTING
    assert s.step_started_at == later
    with pytest.raises(CommandRejectedError, match="final step"):
        apply_command(s, cmd("advance", 9), NOW)
    done = apply_command(s, cmd("finalize", 10), NOW)
    assert done.phase is Phase.SUCCEEDED
    assert done.stable_version == "v2" and done.weight_bp == 0
    # A new rollout may start from the new stable version.
    again = apply_command(done, cmd("start", 11, canary_version="v3"), NOW)
    assert again.baseline_version == "v2" and again.phase is Phase.PROGRESSING


def test_rollback_sends_everything_back_and_keeps_the_stable_version() -> None:
    s = apply_command(started(), cmd("rollback", 2, reason="errors"), NOW)
    assert s.phase is Phase.ROLLED_BACK and s.weight_bp == 0
    assert s.stable_version == "v1" and s.reason == "errors"
    with pytest.raises(CommandRejectedError, match="in progress") as info:
        apply_command(s, cmd("rollback", 3), NOW)
    assert info.value.reason == "forbidden-transition"


def test_pause_resume_and_hold() -> None:
    paused = apply_command(started(), cmd("pause", 2), NOW)
    assert paused.phase is Phase.PAUSED
    with pytest.raises(CommandRejectedError, match="paused"):
        apply_command(paused, cmd("advance", 3), NOW)
    with pytest.raises(CommandRejectedError, match="paused"):
        apply_command(paused, cmd("hold", 3), NOW)
    resumed = apply_command(paused, cmd("resume", 4), NOW)
    assert resumed.phase is Phase.PROGRESSING and resumed.weight_bp == paused.weight_bp
    held = apply_command(resumed, cmd("hold", 5, reason="too few labels"), NOW)
    assert held.phase is Phase.HOLDING and held.reason == "too few labels"
    assert apply_command(held, cmd("advance", 6), NOW).phase is Phase.PROGRESSING


def test_set_weight_moves_the_step_and_validates_range() -> None:
    s = apply_command(started(), cmd("set_weight", 2, weight_bp=3000), NOW)
    assert (s.weight_bp, s.step_index) == (3000, 1)
    assert apply_command(s, cmd("advance", 3), NOW).weight_bp == 5000
    with pytest.raises(CommandRejectedError) as info:
        apply_command(s, cmd("set_weight", 4, weight_bp=None), NOW)
    assert info.value.reason == "bad-weight"


@pytest.mark.parametrize(
    ("state_fn", "command", "reason"),
    [
        (lambda: None, cmd("advance"), "unknown-model"),
        (lambda: None, cmd("start", canary_version="v2"), "unknown-model"),
        (registered, cmd("pause"), "forbidden-transition"),
        (started, cmd("start", 5, canary_version="v3"), "forbidden-transition"),
        (started, cmd("register", 5, baseline_version="v9"), "forbidden-transition"),
        (registered, cmd("start", 5, canary_version="v1"), "invalid-command"),
        (registered, cmd("start", 5, canary_version="bad.name"), "invalid-command"),
        (
            registered,
            cmd("start", 5, canary_version="v2", steps_bp=(2000, 100, 10000)),
            "bad-weight",
        ),
        (registered, cmd("start", 5, canary_version="v2", steps_bp=(100, 5000)), "bad-weight"),
        (
            registered,
            cmd("start", 5, canary_version="v2", baseline_version="v7"),
            "invalid-command",
        ),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(
    state_fn: Any, command: ControlCommand, reason: str
) -> None:
    state = state_fn()
    with pytest.raises(CommandRejectedError) as info:
        apply_command(state, command, NOW)
    assert info.value.reason == reason
    assert str(info.value)


def test_shadow_rollouts_serve_nothing_from_the_canary() -> None:
    s = started(mode=Mode.SHADOW, shadow_sample_bp=5000)
    assert s.mode is Mode.SHADOW and s.weight_bp == 0 and s.shadow_sample_bp == 5000
    for action, fields in (("advance", {}), ("set_weight", {"weight_bp": 100})):
        with pytest.raises(CommandRejectedError):
            apply_command(s, cmd(action, 3, **fields), NOW)
    assert apply_command(s, cmd("finalize", 4), NOW).stable_version == "v2"


def test_every_action_has_a_handler() -> None:
    s = started()
    for action in Action:
        fields = {"weight_bp": 100, "canary_version": "v3", "baseline_version": "v1"}
        try:
            apply_command(s, cmd(action.value, 7, **fields), NOW)
        except CommandRejectedError as rejected:
            # Rejected for a phase or field reason, never for a missing handler.
            assert "unknown action" not in str(rejected)


def test_a_command_decided_on_an_older_revision_is_rejected_as_stale() -> None:
    s = started()  # revision 1
    with pytest.raises(CommandRejectedError) as info:
        apply_command(s, cmd("advance", 8, expected_revision=0), NOW)
    assert info.value.reason == "stale"
    assert apply_command(s, cmd("advance", 9, expected_revision=1), NOW).weight_bp == 2000


def test_latency_thresholds_are_fixed_once_per_rollout() -> None:
    s = started()
    assert s.latency_thresholds_ms is None
    fixed = apply_command(
        s,
        cmd(
            "set_thresholds",
            2,
            latency_thresholds_ms={"p95": 12.5, "p99": 40.0},
            expected_revision=s.revision,
        ),
        NOW,
    )
    assert fixed.latency_thresholds_ms == {"p95": 12.5, "p99": 40.0}
    assert fixed.revision == s.revision + 1 and fixed.phase is s.phase
    with pytest.raises(CommandRejectedError, match="fixed already"):
        apply_command(fixed, cmd("set_thresholds", 3, latency_thresholds_ms={"p95": 1.0}), NOW)
    # They survive the rollout's other steps, and a new rollout starts without them.
    later = apply_command(fixed, cmd("advance", 4), NOW)
    assert later.latency_thresholds_ms == fixed.latency_thresholds_ms
    done = apply_command(later, cmd("rollback", 5), NOW)
    again = apply_command(done, cmd("start", 6, canary_version="v3"), NOW)
    assert again.latency_thresholds_ms is None


@pytest.mark.parametrize(
    "thresholds", [None, {}, {"p50": 3.0}, {"p95": -1.0}, {"p95": float("nan")}, {"p99": 0.0}]
)
def test_unusable_latency_thresholds_are_rejected(thresholds: dict[str, float] | None) -> None:
    with pytest.raises(CommandRejectedError) as info:
        apply_command(started(), cmd("set_thresholds", 2, latency_thresholds_ms=thresholds), NOW)
    assert info.value.reason == "invalid-command"


def test_thresholds_need_a_rollout_in_progress() -> None:
    with pytest.raises(CommandRejectedError, match="needs a rollout in progress"):
        apply_command(
            registered(), cmd("set_thresholds", 2, latency_thresholds_ms={"p95": 1.0}), NOW
        )
