"""Feedback records: a label, a numeric value and attributes; records written before the value
and attributes existed (``schemas/history/feedback.v1.avsc``) still read."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.schemas import schema_dir
from model_canary.streams.codec.avro import codec_for, fingerprint
from model_canary.streams.codec.json_records import decode_record, encode_json
from model_canary.streams.errors import InvalidRecordError, RecordValidationError
from model_canary.streams.messages import EPOCH, Feedback
from tests.unit.record_strategies import T0, avro_message

V1 = json.loads((schema_dir() / "history" / "feedback.v1.avsc").read_text(encoding="utf-8"))


def test_the_first_schema_is_kept_and_differs_from_the_current_one() -> None:
    assert [f["name"] for f in V1["fields"]] == [
        "request_id",
        "model",
        "label",
        "observed_at",
        "source",
    ]
    assert fingerprint(V1) != codec_for(Feedback).fingerprint


def test_a_record_of_the_first_writer_reads_with_no_value_and_no_attributes() -> None:
    datum = {
        "request_id": "r1",
        "model": "iris",
        "label": "setosa",
        "observed_at": T0,
        "source": "ui",
    }
    fb = codec_for(Feedback).decode(avro_message(V1, datum))
    expected = Feedback(request_id="r1", model="iris", label="setosa", observed_at=T0, source="ui")
    assert fb == expected
    assert fb.value is None and dict(fb.attributes) == {}


def test_value_and_attributes_round_trip_in_avro_and_json() -> None:
    fb = Feedback(
        request_id="r1",
        model="chat",
        value=0.25,
        attributes={"complaint": "yes", "channel": "app"},
        observed_at=T0,
    )
    assert codec_for(Feedback).decode(codec_for(Feedback).encode(fb)) == fb
    doc = json.loads(encode_json(fb))
    assert doc["label"] == "" and doc["value"] == 0.25 and doc["attributes"]["complaint"] == "yes"
    assert decode_record(Feedback, encode_json(fb), "application/json") == fb


def test_json_feedback_without_a_label() -> None:
    fb = decode_record(
        Feedback,
        b'{"request_id": "r1", "model": "chat", "value": 3, "attributes": {"thumb": "down"}}',
        "application/json",
        defaults={"observed_at": EPOCH},
    )
    assert fb.label == "" and fb.value == 3.0 and isinstance(fb.value, float)
    assert fb.attributes == {"thumb": "down"}
    with pytest.raises(InvalidRecordError, match="carries nothing"):
        decode_record(
            Feedback, b'{"request_id": "r1", "model": "chat"}', "application/json",
            defaults={"observed_at": EPOCH},
        )  # fmt: skip
    with pytest.raises(InvalidRecordError, match="must be a number"):
        decode_record(
            Feedback, b'{"request_id": "r1", "model": "chat", "value": "high"}',
            "application/json", defaults={"observed_at": EPOCH},
        )  # fmt: skip


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_must_be_finite(value: float) -> None:
    with pytest.raises(RecordValidationError, match="must be finite"):
        Feedback(request_id="r1", model="chat", value=value, observed_at=EPOCH)


def test_attribute_keys_must_not_be_empty() -> None:
    with pytest.raises(RecordValidationError, match="non-empty"):
        Feedback(request_id="r1", model="chat", attributes={"": "x"}, observed_at=EPOCH)


@given(
    label=st.text(max_size=5),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    attributes=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
)
def test_any_valid_feedback_round_trips(
    label: str, value: float | None, attributes: dict[str, str]
) -> None:
    if not label and value is None and not attributes:
        return
    fb = Feedback(
        request_id="r", model="m", label=label, value=value, attributes=attributes, observed_at=T0
    )
    assert codec_for(Feedback).decode(codec_for(Feedback).encode(fb)) == fb
    assert decode_record(Feedback, encode_json(fb), "application/json") == fb


def test_a_result_of_the_first_writer_reads_with_no_prediction_and_no_measures() -> None:
    from model_canary.streams.messages import Arm, InferenceResult

    v1 = json.loads(
        (schema_dir() / "history" / "inference_result.v1.avsc").read_text(encoding="utf-8")
    )
    datum = {
        "request_id": "r1", "model": "chat", "version": "v1", "arm": "stable", "served": True,
        "outputs": b"{}", "content_type": "application/json", "error": None, "error_type": None,
        "rollout_id": None, "weight_bp": 0, "routing_key": None, "latency_ms": 1.5,
        "created_at": T0,
    }  # fmt: skip
    result = codec_for(InferenceResult).decode(avro_message(v1, datum))
    assert result.prediction is None and dict(result.measures) == {}
    assert result.latency_ms == 1.5
    with pytest.raises(RecordValidationError, match="must be finite"):
        InferenceResult(
            request_id="r1", model="chat", version="v1", arm=Arm.STABLE, outputs=b"{}",
            latency_ms=1.0, created_at=T0, measures={"total_tokens": math.inf},
        )  # fmt: skip
