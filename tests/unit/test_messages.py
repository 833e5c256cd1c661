"""Record dataclasses: validation on construction, immutability, helpers, module doctests."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from model_canary.streams.messages import (
    EPOCH,
    Action,
    Arm,
    ControlCommand,
    Decision,
    Feedback,
    InferenceRequest,
    InferenceResult,
    MetricEvidence,
    Mode,
    Outcome,
    Phase,
    RolloutState,
    epoch_ms,
    from_epoch_ms,
    utc_now,
)
from tests.unit.record_strategies import EXAMPLES


def _state(**overrides: object) -> RolloutState:
    fields: dict[str, object] = {
        "model": "iris",
        "rollout_id": "ro1",
        "stable_version": "v1",
        "baseline_version": "v1",
        "phase": Phase.PROGRESSING,
        "step_started_at": EPOCH,
        "updated_at": EPOCH,
    }
    return RolloutState(**{**fields, **overrides})  # type: ignore[arg-type]


def test_defaults() -> None:
    state = _state()
    assert (state.mode, state.steps_bp, state.step_index, state.weight_bp) == (
        Mode.CANARY, (100, 2000, 5000, 10000), 0, 0,
    )  # fmt: skip
    assert (state.shadow_sample_bp, state.revision, state.reason) == (10_000, 0, "")
    cmd = ControlCommand(command_id="c", model="m", action=Action.PAUSE, issued_at=EPOCH)
    assert (cmd.issued_by, cmd.steps_bp, cmd.mode, cmd.signature) == ("operator", (), None, None)


def test_plain_strings_become_enums() -> None:
    state = _state(phase="RolledBack", mode="shadow")
    assert state.phase is Phase.ROLLED_BACK and state.mode is Mode.SHADOW
    decision = Decision(
        decision_id="d",
        model="m",
        rollout_id="r",
        outcome="FINALIZE",  # type: ignore[arg-type]
        decided_at=EPOCH,
    )
    assert decision.outcome is Outcome.FINALIZE


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": ""}, "RolloutState.model must not be empty"),
        ({"rollout_id": ""}, "rollout_id must not be empty"),
        ({"phase": "Done"}, "phase must be one of Stable, Initializing, .*; got 'Done'"),
        ({"mode": "blue-green"}, "mode must be one of canary, shadow"),
        ({"weight_bp": -1}, "weight_bp must be within 0..10000; got -1"),
        ({"shadow_sample_bp": 10_001}, "shadow_sample_bp must be within"),
        ({"steps_bp": (100, 20_000)}, "steps_bp must be within 0..10000; got 20000"),
        ({"updated_at": datetime(2024, 1, 1)}, "updated_at must be a timezone-aware datetime"),
        ({"updated_at": 0}, "updated_at must be a timezone-aware datetime"),
    ],
)
def test_invalid_records_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _state(**overrides)


def test_other_records_validate_too() -> None:
    with pytest.raises(ValueError, match="arm must be one of stable, baseline, canary"):
        InferenceResult(
            request_id="r", model="m", version="v", arm="green",  # type: ignore[arg-type]
            outputs=b"", latency_ms=1.0, created_at=EPOCH,
        )  # fmt: skip
    with pytest.raises(ValueError, match="action must be one of register, start, set_weight"):
        ControlCommand(command_id="c", model="m", action="explode", issued_at=EPOCH)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"MetricEvidence\.metric must not be empty"):
        MetricEvidence(metric="")
    with pytest.raises(ValueError, match="carries nothing: give a label, a value or attributes"):
        Feedback(request_id="r", model="m", label="", observed_at=EPOCH)
    with pytest.raises(ValueError, match=r"timeout_ms must be within 1\.\."):
        InferenceRequest(request_id="r", model="m", inputs=b"", created_at=EPOCH, timeout_ms=0)
    assert Arm("canary") is Arm.CANARY


def test_records_are_frozen_and_hashable() -> None:
    for record in EXAMPLES.values():
        hash(record)
        assert not hasattr(record, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXAMPLES[Feedback].label = "x"


def test_time_helpers() -> None:
    assert from_epoch_ms(1_500) == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 1999, tzinfo=UTC)) == 1
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    assert epoch_ms(datetime(1970, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 0
    now = utc_now()
    assert now.tzinfo is UTC and now.microsecond % 1000 == 0


@pytest.mark.parametrize(
    "module",
    [
        "schemas",
        "model_canary.streams.messages",
        "model_canary.streams.codec.convert",
        "model_canary.streams.codec.avro",
        "model_canary.streams.codec.requests",
        "model_canary.streams.codec.results",
        "model_canary.streams.codec.avro_compiled",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
