"""Example records and hypothesis strategies for every record type, derived from the schemas."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hypothesis import strategies as st

from schemas import load_schema
from streams.codec.avro import schema_file
from streams.messages import (
    INT32_MAX,
    MAX_BP,
    Action,
    Arm,
    ControlCommand,
    ControlEvent,
    DeadLetter,
    Decision,
    Feedback,
    Header,
    InferenceRequest,
    InferenceResult,
    MetricEvent,
    MetricEvidence,
    Mode,
    OffsetRange,
    Outcome,
    Phase,
    Record,
    RolloutState,
    from_epoch_ms,
    unwrap_optional,
)

T0 = from_epoch_ms(1_700_000_000_123)
T1 = from_epoch_ms(1_700_000_001_456)

EXAMPLES: dict[type[Record], Any] = {
    InferenceRequest: InferenceRequest(
        request_id="r1",
        model="iris",
        inputs=b'{"inputs":[]}',
        routing_key="user-7",
        created_at=T0,
        timeout_ms=1000,
        attributes={"tenant": "a", "tier": "gold"},
    ),
    InferenceResult: InferenceResult(
        request_id="r1",
        model="iris",
        version="v2",
        arm=Arm.CANARY,
        served=False,
        outputs=b"\x00\xffbinary",
        content_type="application/octet-stream",
        error="boom",
        error_type="RuntimeError",
        rollout_id="ro1",
        weight_bp=2500,
        routing_key="user-7",
        latency_ms=12.25,
        created_at=T1,
    ),
    MetricEvent: MetricEvent(
        request_id="r1",
        model="iris",
        version="v2",
        arm=Arm.BASELINE,
        served=True,
        rollout_id="ro1",
        weight_bp=100,
        latency_ms=3.5,
        error=True,
        error_type="Timeout",
        prediction="setosa",
        routing_key="k",
        routed_at=T0,
        completed_at=T1,
    ),
    Feedback: Feedback(
        request_id="r1", model="iris", label="setosa", observed_at=T1, source="labelling-ui"
    ),
    ControlCommand: ControlCommand(
        command_id="c1",
        model="iris",
        action=Action.START,
        issued_by="evaluator",
        issued_at=T0,
        reason="new model",
        baseline_version="v1",
        canary_version="v2",
        mode=Mode.SHADOW,
        steps_bp=(500, 10_000),
        weight_bp=500,
        shadow_sample_bp=2000,
        plan_json='{"steps":[500,10000]}',
        key_id="k1",
        signature="abcd",
    ),
    ControlEvent: ControlEvent(
        event_id="e1",
        model="iris",
        command_id="c1",
        action="set_weight",
        issued_by="operator",
        outcome="rejected",
        reason="bad-weight",
        detail="weight 20000 is over 10000",
        revision=7,
        phase="Progressing",
        weight_bp=2000,
        at=T1,
    ),
    RolloutState: RolloutState(
        model="iris",
        rollout_id="ro1",
        stable_version="v1",
        baseline_version="v1",
        canary_version="v2",
        mode=Mode.CANARY,
        phase=Phase.HOLDING,
        steps_bp=(100, 10_000),
        step_index=1,
        weight_bp=10_000,
        shadow_sample_bp=0,
        revision=2**40,
        step_started_at=T0,
        updated_at=T1,
        reason="holding",
        plan_json="{}",
    ),
    Decision: Decision(
        decision_id="d1",
        model="iris",
        rollout_id="ro1",
        outcome=Outcome.ROLLBACK,
        step_index=2,
        weight_bp=5000,
        reason="error rate",
        decided_at=T1,
        evidence=(
            MetricEvidence(
                metric="error_rate",
                baseline_n=1000,
                canary_n=990,
                baseline_bad=3,
                canary_bad=40,
                statistic=0.037,
                lower=0.02,
                upper=None,
                threshold=0.01,
                alarmed=True,
            ),
            MetricEvidence(metric="latency_p99"),
        ),
        offsets=(OffsetRange(topic="canary.metrics", partition=1, first=10, last=2**35),),
    ),
    DeadLetter: DeadLetter(
        original_topic="canary.requests",
        partition=2,
        offset=42,
        key=b"user-7",
        value=b"\xc3\x01junk",
        headers=(Header(key="content-type", value=b"x"), Header(key="empty")),
        reason="undecodable",
        detail="not Avro",
        agent="router",
        failed_at=T0,
    ),
}

_INT = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def _value(avro_type: Any, hint: Any, name: str) -> st.SearchStrategy[Any]:
    base, _ = unwrap_optional(hint)
    if isinstance(avro_type, list):  # ["null", T]
        inner = _value(avro_type[1], base, name)
        return st.none() | inner
    if name.endswith("_bp") and avro_type == "int":
        return st.integers(0, MAX_BP)
    if name == "timeout_ms":
        return st.integers(1, INT32_MAX)
    if isinstance(base, type) and issubclass(base, StrEnum):
        return st.sampled_from(list(base))
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if avro_type.get("logicalType") == "timestamp-millis":
            return _TIMES
        if kind == "map":
            return st.dictionaries(st.text(), st.text(), max_size=3)
        if kind == "array":
            item_hint = typing.get_args(base)[0]
            items = _value(avro_type["items"], item_hint, name)
            return st.lists(items, max_size=3).map(tuple)
        if kind == "record":
            return record_strategy(base, avro_type)
    if avro_type in _INT:
        return st.integers(*_INT[avro_type])
    return {
        "string": st.text(),
        "bytes": st.binary(),
        "double": st.floats(allow_nan=False),
        "boolean": st.booleans(),
    }[avro_type]


def record_strategy(cls: type[Any], schema: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Any valid instance of ``cls`` (identity strings non-empty, timestamps in milliseconds)."""
    schema = schema or load_schema(schema_file(cls))
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in schema["fields"]:
        if f["name"] in cls.IDENTITY:
            fields[f["name"]] = st.text(min_size=1)
        else:
            fields[f["name"]] = _value(f["type"], hints[f["name"]], f["name"])
    assert set(fields) == {f.name for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)
