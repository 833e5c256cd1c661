"""The compiled Avro writer writes exactly what fastavro writes, for every record type."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.codec import codec_for
from model_canary.streams.codec.avro import MAGIC
from model_canary.streams.codec.avro_compiled import Unwritable, compile_writer
from model_canary.streams.codec.convert import to_avro
from model_canary.streams.messages import RECORD_TYPES, InferenceResult, Record
from tests.unit.record_strategies import EXAMPLES, record_strategy

TYPES = pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.__name__)


def _fastavro(record: Record) -> bytes:
    codec = codec_for(type(record))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, codec.schema, to_avro(record), disable_tuple_notation=True)
    return MAGIC + codec.fingerprint + out.getvalue()


@TYPES
@given(data=st.data())
def test_the_codec_writes_fastavros_bytes(cls: type[Record], data: st.DataObject) -> None:
    record = data.draw(record_strategy(cls))
    assert codec_for(cls).encode(record) == _fastavro(record)


@TYPES
def test_the_compiled_writer_writes_fastavros_body(cls: type[Record]) -> None:
    codec = codec_for(cls)
    write = compile_writer(codec.schema, cls)
    if write is None:
        pytest.skip(f"{cls.__name__} is written by fastavro")
    body = bytearray()
    write(body, EXAMPLES[cls])
    assert bytes(body) == _fastavro(EXAMPLES[cls])[10:]


def test_the_hot_records_are_compiled() -> None:
    for cls in (InferenceResult,):
        assert compile_writer(codec_for(cls).schema, cls) is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_bp", 2**40),  # out of an Avro int's range
        ("created_at", datetime(2026, 1, 1)),  # naive
        ("latency_ms", "1.5"),
    ],
)
def test_a_value_it_does_not_expect_goes_to_fastavro(field: str, value: Any) -> None:
    record = EXAMPLES[InferenceResult]
    object.__setattr__(record := _copy(record), field, value)
    write = compile_writer(codec_for(InferenceResult).schema, InferenceResult)
    assert write is not None
    with pytest.raises(Unwritable):
        write(bytearray(), record)
    # The codec hands it to fastavro: what it writes or raises is fastavro's.
    try:
        expected: bytes | type[BaseException] = _fastavro(record)
    except Exception as exc:
        expected = type(exc)
    try:
        got: bytes | type[BaseException] = codec_for(InferenceResult).encode(record)
    except Exception as exc:
        got = type(exc)
    assert got == expected


def _copy(record: InferenceResult) -> InferenceResult:
    import dataclasses

    return dataclasses.replace(record)
