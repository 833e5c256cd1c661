"""The label joiner reads predictions and labels without building records (tens of thousands a
second), so its own checks must accept exactly what the records accept."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_canary.agents.evaluator.joiner import feedback_fields, prediction_fields
from model_canary.schemas import load_schema
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import Feedback, Prediction
from tests.unit.record_strategies import avro_message, raw_datum, record_strategy


def _agrees(record_type: type[Any], reader: Any, data: bytes) -> None:
    codec = codec_for(record_type)
    try:
        record = codec.decode(data)
    except DecodeError:
        record = None
    try:
        fields = reader(codec, data)
    except DecodeError:
        fields = None
    assert (record is None) == (fields is None), (record, fields)
    if record is not None and fields is not None:
        assert fields["request_id"] == record.request_id


@settings(max_examples=300, suppress_health_check=list(HealthCheck))
@given(
    datum=st.one_of(
        raw_datum(Prediction),
        record_strategy(Prediction).map(lambda p: codec_for(Prediction).encode(p)),
    )
)
def test_the_joiners_prediction_check_is_the_records(datum: Any) -> None:
    data = datum if isinstance(datum, bytes) else avro_message(load_schema("prediction"), datum)
    _agrees(Prediction, prediction_fields, data)


@settings(max_examples=300, suppress_health_check=list(HealthCheck))
@given(
    datum=st.one_of(
        raw_datum(Feedback), record_strategy(Feedback).map(lambda f: codec_for(Feedback).encode(f))
    )
)
def test_the_joiners_label_check_is_the_records(datum: Any) -> None:
    data = datum if isinstance(datum, bytes) else avro_message(load_schema("feedback"), datum)
    _agrees(Feedback, feedback_fields, data)


def test_garbage_is_refused_by_both() -> None:
    for data in (b"", b"\xc3\x01", b"not avro at all"):
        _agrees(Prediction, prediction_fields, data)
        _agrees(Feedback, feedback_fields, data)
