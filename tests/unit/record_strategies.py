"""Example records and hypothesis strategies for every record type, derived from the schemas."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hypothesis import strategies as st

from model_canary.schemas import load_schema
from model_canary.streams.codec.avro import schema_file
from model_canary.streams.messages import (
    INT32_MAX,
    MAX_BP,
    Action,
    Arm,
    BaselineMode,
    ControlCommand,
    ControlEvent,
    DeadLetter,
    Decision,
    Evidence,
    EvidenceKind,
    EvidenceSet,
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
    Prediction,
    Preflight,
    PreflightStatus,
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
        prediction="setosa",
        measures={"completion_tokens": 3.0},
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
        request_id="r1",
        model="iris",
        label="setosa",
        observed_at=T1,
        source="labelling-ui",
        value=4.5,
        attributes={"complaint": "yes"},
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
    Evidence: Evidence(
        kind=EvidenceKind.SERVED,
        model="iris",
        rollout_id="ro1",
        version="v2",
        arm=Arm.CANARY,
        served=True,
        weight_bp=100,
        second=1_700_000_000,
        source="canary.worker.iris.v2.w1",
        offsets=(OffsetRange(topic="canary.requests.iris.v2", partition=0, first=5, last=99),),
        requests=95,
        errors=2,
        refused=1,
        batches=3,
        batch_items=120,
        max_batch=64,
        latency_unit="item",
        latency_hist=b"\x10\x00\x05\x00\x00\x00",
        batch_latency_hist=b"\x10\x00\x03\x00\x00\x00",
        thresholds_revision=4,
        batches_timed=3,
        batches_over_p95=1,
        batches_over_p99=0,
        batch_m2=4100,
        batch_e2_errors=2,
        batch_em_errors=70,
        batch_e2_over_p95=9,
        batch_em_over_p95=150,
        batch_e2_over_p99=1,
        batch_em_over_p99=50,
        labelled=0,
        incorrect=0,
        units=b"\x07\x00" + b"\x01\x00\x00\x00" * 4,
    ),
    Prediction: Prediction(
        request_id="r1",
        model="iris",
        version="v2",
        rollout_id="ro1",
        arm=Arm.CANARY,
        served=False,
        weight_bp=5000,
        second=1_700_000_000,
        bucket=42,
        answers=2,
        label_window_s=3600,
        prediction="setosa",
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
    Preflight: Preflight(
        preflight_id="pf-iris-v2-1",
        model="iris",
        baseline_version="v1",
        candidate_version="v2",
        status=PreflightStatus.FAILED,
        baseline_mode=BaselineMode.RECORDED,
        sample_bp=5000,
        rate=200.0,
        max_requests=5000,
        ranges=(OffsetRange(topic="canary.requests", partition=0, first=10, last=99),),
        window_start=T0,
        replayed=90,
        answered=88,
        labelled=40,
        reason="errors: bad-event ratio 4.1",
        evidence=(MetricEvidence(metric="errors", canary_n=88, canary_bad=9, alarmed=True),),
        agreement=0.95,
        plan_json="{}",
        report="/tmp/r.html",
        started_at=T0,
        updated_at=T1,
    ),
}
EXAMPLES[EvidenceSet] = EvidenceSet(
    records=(
        EXAMPLES[Evidence],
        dataclasses.replace(EXAMPLES[Evidence], arm=Arm.CONTROL, part=0, parts=0),
    )
)

_INT = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# Evidence and prediction fields the records check beyond their Avro type.
_COUNTS = frozenset(
    {
        "requests",
        "errors",
        "refused",
        "batches",
        "batch_items",
        "max_batch",
        "labelled",
        "incorrect",
        "counted",
        "bad",
    }
    | {"batches_over_p95", "batches_over_p99", "batches_timed", "batch_m2"}
    | {f"batch_{m}_{k}" for m in ("e2", "em") for k in ("errors", "over_p95", "over_p99")}
)
_SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "latency_unit": st.sampled_from(["item", "batch"]),
    "bucket": st.integers(0, 9999),
    "answers": st.integers(1, 2),
    "label_window_s": st.integers(0, 2**31 - 1),
}
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
    if name in _COUNTS and avro_type in _INT:
        return st.integers(0, _INT[avro_type][1])
    if name in _SPECIAL:
        return _SPECIAL[name]
    if isinstance(base, type) and issubclass(base, StrEnum):
        return st.sampled_from(list(base))
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if avro_type.get("logicalType") == "timestamp-millis":
            return _TIMES
        if kind == "map":
            values = (
                st.floats(allow_nan=False, allow_infinity=False)
                if avro_type["values"] == "double"
                else st.text()
            )
            return st.dictionaries(st.text(min_size=1), values, max_size=3)
        if kind == "array":
            item_hint = typing.get_args(base)[0]
            items = _value(avro_type["items"], item_hint, name)
            return st.lists(items, max_size=3).map(tuple)
        if kind == "record":
            return record_strategy(base, avro_type)
    if name == "value" and avro_type == "double":  # Feedback.value: finite
        return st.floats(allow_nan=False, allow_infinity=False)
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
        if f["name"] in cls.IDENTITY or (cls is Feedback and f["name"] == "label"):
            # Feedback carries a label, a value or attributes: the label makes it valid.
            fields[f["name"]] = st.text(min_size=1)
        else:
            fields[f["name"]] = _value(f["type"], hints[f["name"]], f["name"])
    assert set(fields) == {f.name for f in dataclasses.fields(cls)}
    if cls is EvidenceSet:  # one to three records, all of one model
        evs = st.lists(record_strategy(Evidence), min_size=1, max_size=3)
        return st.builds(
            lambda v, es: cls(
                schema_version=v,
                records=tuple(dataclasses.replace(e, model=es[0].model) for e in es),
            ),
            fields["schema_version"],
            evs,
        )
    if cls is Evidence:  # part of parts: 0 of 0 (not numbered), or 1..n of n
        del fields["part"], fields["parts"]
        numbered = st.integers(0, 5).flatmap(
            lambda n: st.tuples(st.integers(min(1, n), n), st.just(n))
        )
        return st.builds(
            lambda kw, pn: cls(**kw, part=pn[0], parts=pn[1]),
            st.fixed_dictionaries(fields),
            numbered,
        )
    return st.builds(cls, **fields)


# --- hostile input ----------------------------------------------------------------------------

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
"""Any JSON-ish value (YAML gives the same kinds), NaN and infinities included."""


def avro_message(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """A single-object message written by fastavro straight from ``schema``, bypassing the
    records' checks, as a producer in another language could write it."""
    import io

    import fastavro

    from model_canary.streams.codec.avro import MAGIC, fingerprint

    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), datum)
    return MAGIC + fingerprint(schema) + body.getvalue()


def _raw_field(avro_type: Any) -> st.SearchStrategy[Any]:
    """Any value Avro accepts for ``avro_type``, whatever the record would think of it."""
    if isinstance(avro_type, list):
        return st.none() | _raw_field(avro_type[1])
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return st.integers(-(2**62), 2**62)  # most are beyond datetime's range
        if avro_type["type"] == "array":
            return st.lists(_raw_field(avro_type["items"]), max_size=4)
        if avro_type["type"] == "map":
            return st.dictionaries(st.text(max_size=8), _raw_field(avro_type["values"]), max_size=3)
        return st.fixed_dictionaries(
            {f["name"]: _raw_field(f["type"]) for f in avro_type["fields"]}
        )
    if avro_type in _INT:
        return st.integers(*_INT[avro_type])
    return {
        "string": st.text(max_size=30),
        "bytes": st.binary(max_size=30),
        "double": st.floats(),
        "boolean": st.booleans(),
    }[avro_type]


def raw_datum(cls: type[Record]) -> st.SearchStrategy[dict[str, Any]]:
    """A datum of ``cls``'s schema with any values the schema admits: empty identities,
    unknown enum values, basis points out of range, timestamps out of range."""
    schema = load_schema(schema_file(cls))
    return st.fixed_dictionaries({f["name"]: _raw_field(f["type"]) for f in schema["fields"]})


def raw_message(cls: type[Record]) -> st.SearchStrategy[bytes]:
    """:func:`raw_datum` encoded as a single-object message of ``cls``'s current schema."""
    schema = load_schema(schema_file(cls))
    return raw_datum(cls).map(lambda datum: avro_message(schema, datum))


def valid_message(cls: type[Record]) -> st.SearchStrategy[bytes]:
    from model_canary.streams.codec.avro import codec_for

    return record_strategy(cls).map(codec_for(cls).encode)


def hostile_payload(cls: type[Record], max_huge: int = 200_000) -> st.SearchStrategy[bytes]:
    """Bytes an agent expecting ``cls`` must survive: random bytes, a truncated or mutated
    message, a body behind a known fingerprint, valid Avro of another record type, schema-valid
    but invalid records, JSON of any shape, huge payloads."""
    others = [t for t in EXAMPLES if t is not cls]
    wrong_type = st.sampled_from(others).flatmap(valid_message)
    own = valid_message(cls)

    def truncated(data: bytes, cut: float) -> bytes:
        return data[: int(len(data) * cut)]

    def mutated(data: bytes, at: int, byte: int) -> bytes:
        index = at % len(data)
        return data[:index] + bytes([byte]) + data[index + 1 :]

    from model_canary.streams.codec.avro import codec_for

    header = codec_for(cls).encode(EXAMPLES[cls])[:10]
    return st.one_of(
        st.binary(max_size=200),
        st.builds(truncated, own, st.floats(0, 0.999)),
        st.builds(mutated, own, st.integers(10, 10_000), st.integers(0, 255)),
        st.binary(max_size=200).map(lambda body: header + body),
        wrong_type,
        raw_message(cls),
        JSON_VALUES.map(lambda doc: _json_bytes(doc)),
        st.integers(max_huge // 20, max_huge).map(lambda n: header + b"\xff" * n),
    )


def _json_bytes(doc: Any) -> bytes:
    import json

    return json.dumps(doc).encode()


HEADER_VALUES: st.SearchStrategy[str | bytes | None] = st.one_of(
    st.none(),
    st.binary(max_size=40),  # mostly not UTF-8
    st.text(max_size=40),
    st.integers(-(2**80), 2**80).map(lambda n: str(n).encode()),
    st.integers(1_000, 10_000).map(lambda n: b"9" * n),  # a huge number
    st.sampled_from(  # canary-route values, good and bad
        [
            b"1;canary;v2;500;1700000000000;;ro1",
            b"1;stable;v1;0;0;a;",
            b"1;canary;v2;5000;0;s;ro1",
            b"2;canary;v2;500;0;;ro1",
            b"1;canary;v2;10001;0;;ro1",
            b"1;canary;v2;500;0;zz;ro1",
            b"1;canary",
        ]
    ),
)

HEADERS: st.SearchStrategy[list[tuple[str, str | bytes | None]]] = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "content-type",
                "canary-model",
                "canary-request-id",
                "canary-arm",
                "canary-version",
                "canary-rollout-id",
                "canary-weight-bp",
                "canary-routed-at-ms",
                "canary-shadow",
                "canary-redriven",
                "canary-route",
                "canary-delivery",
            ]
        )
        | st.text(max_size=20),
        HEADER_VALUES,
    ),
    max_size=12,
)
"""Kafka headers with duplicates, ``None`` values, non-UTF-8 bytes and huge numbers, mostly
under the names the agents read."""
