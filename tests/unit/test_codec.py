"""Avro single-object codec: round trips, schema evolution, and typed errors on bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.schemas import load_schema
from model_canary.streams.codec import (
    CONTENT_TYPES,
    INFERENCE_REQUEST_CONTENT_TYPE,
    AvroCodec,
    SchemaStore,
    codec_for,
    decode_any,
    default_store,
    fingerprint,
)
from model_canary.streams.codec.avro import MAGIC, schema_file
from model_canary.streams.codec.convert import to_avro
from model_canary.streams.errors import (
    DecodeError,
    InvalidRecordError,
    UndecodableError,
    UnknownSchemaError,
)
from model_canary.streams.messages import (
    RECORD_TYPES,
    Arm,
    Decision,
    Feedback,
    InferenceRequest,
    MetricEvent,
    MetricEvidence,
    Record,
)
from tests.unit.record_strategies import EXAMPLES, T0, record_strategy

TYPES = pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)


def _raw(schema: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """A single-object message written by fastavro directly with ``schema``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), datum)
    return MAGIC + fingerprint(schema) + out.getvalue()


def _with_field(schema: dict[str, Any], field: dict[str, Any], after: str) -> dict[str, Any]:
    fields = list(schema["fields"])
    index = [f["name"] for f in fields].index(after) + 1
    return {**schema, "fields": [*fields[:index], field, *fields[index:]]}


def _without_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] != name]}


# --- round trips ------------------------------------------------------------------------------


@TYPES
def test_example_round_trips(cls: type[Record]) -> None:
    codec = codec_for(cls)
    record = EXAMPLES[cls]
    data = codec.encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.fingerprint == fingerprint(load_schema(schema_file(cls)))
    assert codec.decode(data) == record
    assert decode_any(data) == record
    assert codec.content_type == CONTENT_TYPES[cls]


@TYPES
@given(data=st.data())
def test_any_record_round_trips(cls: type[Record], data: st.DataObject) -> None:
    record = data.draw(record_strategy(cls))
    codec = codec_for(cls)
    assert codec.decode(codec.encode(record)) == record


def test_content_types_are_distinct() -> None:
    assert len(set(CONTENT_TYPES.values())) == len(RECORD_TYPES)
    assert CONTENT_TYPES[InferenceRequest] == INFERENCE_REQUEST_CONTENT_TYPE
    assert INFERENCE_REQUEST_CONTENT_TYPE == "application/vnd.modelcanary.inference-request+avro"


def test_fingerprint_matches_the_avro_spec_vector() -> None:
    # CRC-64-AVRO of '"int"' is 0x7275d51a3f395c8f; single-object encoding writes it little-endian.
    fp = fastavro.schema.fingerprint('"int"', "CRC-64-AVRO")
    assert bytes.fromhex(fp) == (0x7275D51A3F395C8F).to_bytes(8, "little")


def test_decoded_values_have_the_declared_types() -> None:
    decision = codec_for(Decision).decode(codec_for(Decision).encode(EXAMPLES[Decision]))
    assert isinstance(decision.evidence, tuple)
    assert isinstance(decision.evidence[0], MetricEvidence)
    assert decision.decided_at.utcoffset() is not None
    event = codec_for(MetricEvent).decode(codec_for(MetricEvent).encode(EXAMPLES[MetricEvent]))
    assert type(event.arm) is Arm


def test_encode_rejects_another_type() -> None:
    with pytest.raises(TypeError, match="expected Feedback"):
        codec_for(Feedback).encode(EXAMPLES[InferenceRequest])


def test_project_store_knows_every_schema() -> None:
    store = default_store()
    assert len(store) >= len(RECORD_TYPES)
    for cls in RECORD_TYPES:
        assert fingerprint(load_schema(schema_file(cls))) in store
    assert b"\x00" * 8 not in store


# --- evolution --------------------------------------------------------------------------------


def test_newer_writer_with_an_extra_field_is_read_by_the_current_reader() -> None:
    current = load_schema("inference_request")
    newer = _with_field(current, {"name": "priority", "type": "int", "default": 5}, "model")
    newer = _without_field(newer, "attributes")  # removed later: the reader fills its default
    datum = {**to_avro(EXAMPLES[InferenceRequest]), "priority": 9}
    data = _raw(newer, datum)
    store = SchemaStore.with_project_schemas()
    codec = AvroCodec(InferenceRequest, store=store)
    with pytest.raises(UnknownSchemaError, match=fingerprint(newer).hex()):
        codec.decode(data)
    assert store.register(newer) == fingerprint(newer) == data[2:10]
    expected = dataclasses.replace(EXAMPLES[InferenceRequest], attributes={})
    assert codec.decode(data) == expected


def test_newer_nested_record_field_is_read_by_the_current_reader() -> None:
    current = load_schema("decision")
    evidence = current["fields"][8]["type"]["items"]
    assert evidence["name"] == "MetricEvidence"
    newer_evidence = _with_field(
        evidence, {"name": "p_value", "type": "double", "default": 1.0}, "statistic"
    )
    fields = [dict(f) for f in current["fields"]]
    fields[8] = {**fields[8], "type": {"type": "array", "items": newer_evidence}}
    newer = {**current, "fields": fields}
    datum = to_avro(EXAMPLES[Decision])
    for item in datum["evidence"]:
        item["p_value"] = 0.01
    store = SchemaStore.with_project_schemas()
    store.register(newer)
    assert AvroCodec(Decision, store=store).decode(_raw(newer, datum)) == EXAMPLES[Decision]


def test_older_writer_lacking_a_defaulted_field_is_read_with_the_default() -> None:
    older = _without_field(load_schema("feedback"), "source")
    store = SchemaStore.with_project_schemas()
    store.register(older)
    datum = {"request_id": "r1", "model": "iris", "label": "setosa", "observed_at": T0}
    decoded = AvroCodec(Feedback, store=store).decode(_raw(older, datum))
    assert decoded == Feedback(request_id="r1", model="iris", label="setosa", observed_at=T0)
    assert decoded.source is None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OldFeedback(Record):
    """Feedback as an older program knew it: no ``source``."""

    request_id: str
    model: str
    label: str
    observed_at: Any


def test_older_reader_lacking_a_defaulted_field_reads_a_current_message() -> None:
    older = _without_field(load_schema("feedback"), "source")
    store = SchemaStore.with_project_schemas()
    old_codec = AvroCodec(OldFeedback, older, store=store)
    assert old_codec.content_type == "application/vnd.modelcanary.feedback+avro"
    data = codec_for(Feedback).encode(EXAMPLES[Feedback])
    assert old_codec.decode(data) == OldFeedback(
        request_id="r1",
        model="iris",
        label="setosa",
        observed_at=EXAMPLES[Feedback].observed_at,
    )
    # The current dataclass read through the old reader schema gets its own default.
    assert AvroCodec(Feedback, older, store=store).decode(data).source is None


def test_newer_writer_with_a_field_the_reader_cannot_default() -> None:
    current = load_schema("feedback")
    store = SchemaStore.with_project_schemas()
    newer_reader = _with_field(current, {"name": "weight", "type": "double"}, "label")
    codec = AvroCodec(Feedback, newer_reader, store=store)
    with pytest.raises(InvalidRecordError, match=r"cannot be read as dev\.modelcanary\.Feedback"):
        codec.decode(codec_for(Feedback).encode(EXAMPLES[Feedback]))


# --- bad input --------------------------------------------------------------------------------


def test_wrong_marker() -> None:
    data = codec_for(Feedback).encode(EXAMPLES[Feedback])
    with pytest.raises(UndecodableError, match="expected marker c301") as info:
        codec_for(Feedback).decode(b"\x00\x01" + data[2:])
    assert info.value.reason == "undecodable"


def test_json_without_content_type_gets_a_hint() -> None:
    with pytest.raises(UndecodableError, match="content-type: application/json"):
        codec_for(InferenceRequest).decode(b'{"request_id": "r1", "model": "iris"}')


def test_unknown_fingerprint_names_it() -> None:
    data = MAGIC + bytes.fromhex("0123456789abcdef") + b"\x00"
    with pytest.raises(UnknownSchemaError, match="0123456789abcdef") as info:
        codec_for(Feedback).decode(data)
    assert info.value.reason == "unknown-schema"
    with pytest.raises(UnknownSchemaError):
        decode_any(data)


@TYPES
def test_every_truncation_is_undecodable(cls: type[Record]) -> None:
    data = codec_for(cls).encode(EXAMPLES[cls])
    for end in range(len(data)):
        with pytest.raises(UndecodableError):
            codec_for(cls).decode(data[:end])


def test_trailing_bytes_are_undecodable() -> None:
    data = codec_for(Feedback).encode(EXAMPLES[Feedback])
    with pytest.raises(UndecodableError, match="1 trailing bytes"):
        codec_for(Feedback).decode(data + b"\x00")


def test_message_of_another_type_is_invalid() -> None:
    data = codec_for(MetricEvent).encode(EXAMPLES[MetricEvent])
    with pytest.raises(InvalidRecordError, match="MetricEvent"):
        codec_for(Feedback).decode(data)
    assert decode_any(data) == EXAMPLES[MetricEvent]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("request_id", "", "request_id must not be empty"),
        ("model", "", "model must not be empty"),
        ("arm", "blue", "arm must be one of stable, baseline, canary, control; got 'blue'"),
        ("weight_bp", 10_001, "weight_bp must be within 0..10000"),
    ],
)
def test_decoded_but_invalid(field: str, value: Any, message: str) -> None:
    datum = {**to_avro(EXAMPLES[MetricEvent]), field: value}
    data = _raw(load_schema("metric_event"), datum)
    with pytest.raises(InvalidRecordError, match=message) as info:
        codec_for(MetricEvent).decode(data)
    assert info.value.reason == "invalid-record"


def test_invalid_utf8_string_is_undecodable() -> None:
    data = bytearray(codec_for(Feedback).encode(EXAMPLES[Feedback]))
    data[11] = 0xFF  # first byte of request_id "r1"
    with pytest.raises(UndecodableError, match="corrupt Avro body"):
        codec_for(Feedback).decode(bytes(data))


def test_not_bytes_is_undecodable() -> None:
    with pytest.raises(UndecodableError, match="expected bytes"):
        codec_for(Feedback).decode(None)  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    for cls in RECORD_TYPES:
        with contextlib.suppress(DecodeError):
            codec_for(cls).decode(data)


@TYPES
@given(body=st.binary(max_size=200))
def test_arbitrary_bodies_behind_a_known_header_raise_only_decode_errors(
    cls: type[Record], body: bytes
) -> None:
    header = codec_for(cls).encode(EXAMPLES[cls])[:10]
    try:
        record = codec_for(cls).decode(header + body)
    except DecodeError:
        return
    assert isinstance(record, cls)


@TYPES
@given(data=st.data())
def test_mutated_messages_raise_only_decode_errors(cls: type[Record], data: st.DataObject) -> None:
    message = bytearray(codec_for(cls).encode(EXAMPLES[cls]))
    index = data.draw(st.integers(10, len(message) - 1))
    message[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        codec_for(cls).decode(bytes(message))
