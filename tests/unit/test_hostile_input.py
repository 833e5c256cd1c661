"""Hostile input: every decoder, the command path and the plan parser, fed anything, raise only
their typed errors; a message from a newer writer schema is read by the current reader."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.agents.worker.agent import _Routed
from model_canary.schemas import load_schema
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import (
    AvroCodec,
    SchemaStore,
    codec_for,
    decode_any,
    fingerprint,
    schema_file,
)
from model_canary.streams.codec.convert import to_avro
from model_canary.streams.codec.requests import decode_request
from model_canary.streams.errors import ConfigError, DecodeError
from model_canary.streams.messages import (
    RECORD_TYPES,
    Action,
    ControlCommand,
    InferenceRequest,
    MetricEvent,
    Record,
    RolloutState,
)
from model_canary.streams.plan import PlanError, RolloutPlan, load_plan, parse_plan
from model_canary.streams.rollout import CommandRejectedError, apply_command
from tests.unit.record_strategies import (
    EXAMPLES,
    HEADERS,
    JSON_VALUES,
    T1,
    avro_message,
    hostile_payload,
    raw_datum,
    raw_message,
    record_strategy,
)

TYPES = pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)


# --- decoders ---------------------------------------------------------------------------------


@TYPES
@given(data=st.data())
def test_any_payload_decodes_to_its_type_or_raises_a_decode_error(
    cls: type[Record], data: st.DataObject
) -> None:
    payload = data.draw(hostile_payload(cls))
    try:
        record = codec_for(cls).decode(payload)
    except DecodeError as exc:
        assert exc.reason in {"undecodable", "unknown-schema", "invalid-record"}
        assert str(exc)
    else:
        assert type(record) is cls
        encoded = codec_for(cls).encode(record)  # compared as bytes: NaN != NaN
        assert codec_for(cls).encode(codec_for(cls).decode(encoded)) == encoded
    try:
        any_record = decode_any(payload)
    except DecodeError:
        return
    assert type(any_record) in RECORD_TYPES


@given(
    payload=hostile_payload(InferenceRequest),
    content_type=st.none() | st.text(max_size=30) | st.sampled_from([h.JSON, "application/json;"]),
    max_bytes=st.integers(1, 2_000_000),
)
def test_any_request_payload_and_content_type_raise_only_decode_errors(
    payload: bytes, content_type: str | None, max_bytes: int
) -> None:
    try:
        request = decode_request(payload, content_type, max_bytes=max_bytes, now=T1)
    except DecodeError:
        return
    assert isinstance(request, InferenceRequest) and len(payload) <= max_bytes


# --- the command path -------------------------------------------------------------------------

STATES = [None, EXAMPLES[RolloutState]]


def _apply_or_reject(command: ControlCommand, state: RolloutState | None) -> None:
    """What the controller does with a decoded command: a new state it can write, or a
    rejection with a reason."""
    try:
        new = apply_command(state, command, T1)
    except CommandRejectedError as rej:
        assert rej.reason in {
            "unknown-model",
            "bad-weight",
            "forbidden-transition",
            "invalid-command",
            "stale",
        }
        assert str(rej)
        return
    codec = codec_for(RolloutState)
    assert codec.decode(codec.encode(new)) == new
    assert new.model == command.model
    if command.action is Action.START and new.plan_json is not None:
        RolloutPlan.from_json(new.plan_json)  # the evaluator can read what was applied


@given(payload=st.one_of(raw_message(ControlCommand), hostile_payload(ControlCommand)))
def test_any_control_message_is_applied_or_rejected_with_a_reason(payload: bytes) -> None:
    try:
        record = decode_any(payload)
    except DecodeError:
        return  # the controller rejects it with exc.reason and dead-letters it
    if not isinstance(record, ControlCommand):
        return  # rejected as "invalid-command" (or a Decision, kept for audit)
    for state in STATES:
        _apply_or_reject(record, None if state is None else _for(state, record.model))


@given(
    command=record_strategy(ControlCommand),
    # A state 2**63 revisions old cannot be written by the controller (a long overflows).
    state=st.none() | record_strategy(RolloutState).filter(lambda s: s.revision < 2**62),
)
def test_any_valid_command_on_any_state_is_applied_or_rejected(
    command: ControlCommand, state: RolloutState | None
) -> None:
    _apply_or_reject(command, None if state is None else _for(state, command.model))


@given(
    datum=raw_datum(ControlCommand), plan_json=st.none() | st.text() | JSON_VALUES.map(json.dumps)
)
def test_a_start_command_with_any_plan_is_applied_only_with_a_readable_plan(
    datum: dict[str, Any], plan_json: str | None
) -> None:
    datum = {**datum, "action": "start", "model": "iris", "plan_json": plan_json}
    datum.update(baseline_version="v1", canary_version="v2", steps_bp=[], weight_bp=None)
    datum.update(shadow_sample_bp=None, mode=None, expected_revision=None, issued_at=0)
    try:
        command = decode_any(avro_message(load_schema("control_command"), datum))
    except DecodeError:
        return
    assert isinstance(command, ControlCommand)
    _apply_or_reject(command, None)


def _for(state: RolloutState, model: str) -> RolloutState:
    from dataclasses import replace

    return replace(state, model=model)


# --- the plan parser --------------------------------------------------------------------------

_FIELD_PATH = re.compile(
    r"^(model|baseline|canary|mode|alpha|shadow_sample|steps(\[\d+\])?|step(\.\w+)?"
    r"|metrics(\..+?)?|unknown field\(s\))[:; ]"
)
_PLAN_KEYS = ["model", "baseline", "canary", "mode", "steps", "step", "metrics", "alpha"]
_PLAN_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(["iris", "v1", "v2", "shadow", "90s", "5m", "1h"]),
    st.lists(st.integers(-5, 150) | st.floats(), max_size=5),
    st.dictionaries(
        st.sampled_from(["errors", "accuracy", "latency_p95", "min_duration", "warmup"])
        | st.text(max_size=5),
        JSON_VALUES
        | st.dictionaries(st.sampled_from(["tolerance", "min_label_coverage"]), JSON_VALUES),
        max_size=3,
    ),
)
PLAN_DOCS = st.dictionaries(
    st.sampled_from([*_PLAN_KEYS, "shadow_sample"]) | st.text(max_size=8) | st.integers(),
    _PLAN_VALUES,
    max_size=8,
)


@given(doc=PLAN_DOCS)
def test_any_plan_document_is_a_plan_or_a_plan_error_naming_the_field(doc: dict[Any, Any]) -> None:
    try:
        plan = parse_plan(doc)
    except PlanError as exc:
        assert _FIELD_PATH.match(str(exc)), str(exc)
        return
    assert RolloutPlan.from_json(plan.to_json()) == plan


@given(text=st.text(max_size=300) | JSON_VALUES.map(json.dumps) | PLAN_DOCS.map(repr))
def test_any_plan_file_is_a_plan_or_a_plan_error(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("plan.yaml", "plan.json"):
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            with contextlib.suppress(PlanError):
                load_plan(path)


@given(text=st.text(max_size=200) | JSON_VALUES.map(json.dumps))
def test_any_stored_plan_json_is_a_plan_or_a_plan_error(text: str) -> None:
    try:
        plan = RolloutPlan.from_json(text)
    except PlanError:
        return
    assert isinstance(plan, RolloutPlan)


# --- headers ----------------------------------------------------------------------------------


@given(headers=HEADERS)
def test_any_headers_give_text_and_the_worker_reads_them_or_rejects_them(
    headers: list[tuple[str, str | bytes | None]],
) -> None:
    meta = h.header_dict(headers)
    assert all(isinstance(v, str) for v in meta.values())
    assert h.as_list(headers) == headers and h.as_list(dict(headers)) == list(dict(headers).items())
    try:
        routed = _Routed.from_headers(meta)
    except DecodeError as exc:
        # A canary-route of a later version is refused as such; anything else is invalid.
        assert exc.reason in ("invalid-record", "unknown-route-version")
        return
    # What the worker builds from them must be buildable.
    MetricEvent(
        request_id="r1",
        model="iris",
        version="v1",
        arm=routed.arm,
        served=routed.served,
        rollout_id=routed.rollout_id,
        weight_bp=routed.weight_bp,
        latency_ms=1.0,
        routed_at=T1,
        completed_at=T1,
    )
    if routed.routed_at_ms is not None:
        from model_canary.streams.messages import from_epoch_ms

        from_epoch_ms(routed.routed_at_ms)


# --- schema evolution -------------------------------------------------------------------------

NEWER_FIELD = {"name": "added_in_v2", "type": "string", "default": "none"}


def newer_schema(cls: type[Record]) -> dict[str, Any]:
    """``cls``'s schema as a newer writer has it: one more field, with a default."""
    schema = load_schema(schema_file(cls))
    return {**schema, "fields": [*schema["fields"], NEWER_FIELD]}


@pytest.mark.parametrize("cls", [InferenceRequest, ControlCommand, MetricEvent], ids=str)
def test_a_newer_writers_extra_field_is_ignored_by_the_current_reader(
    cls: type[Record], tmp_path: Path
) -> None:
    newer = newer_schema(cls)
    (tmp_path / f"{schema_file(cls)}_v2.avsc").write_text(json.dumps(newer))
    store = SchemaStore.with_project_schemas([tmp_path])
    assert fingerprint(newer) in store
    record = EXAMPLES[cls]
    data = avro_message(newer, {**to_avro(record), "added_in_v2": "hello"})
    assert AvroCodec(cls, store=store).decode(data) == record
    assert AvroCodec(cls, store=SchemaStore.with_project_schemas()).content_type


def test_an_unreadable_extra_schema_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.avsc").write_text('{"type": "record", "name": ')
    with pytest.raises(ConfigError, match=r"broken\.avsc"):
        SchemaStore.with_project_schemas([tmp_path])
