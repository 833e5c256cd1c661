"""Results on the wire: the per-answer headers a worker writes, with the shared ones encoded once,
and answers written from their values as the result with those values is written."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE
from model_canary.streams.codec.results import (
    decode_result,
    encode_answer,
    encode_result,
    result_headers,
)
from model_canary.streams.messages import EPOCH, Arm, InferenceResult
from tests.unit.record_strategies import EXAMPLES, record_strategy


def _plain(result: InferenceResult, content_type: str) -> h.RawHeaders:
    """The headers spelled out one by one (what result_headers wrote before it cached)."""
    items = [
        (h.CONTENT_TYPE, content_type),
        (h.REQUEST_ID, result.request_id),
        (h.MODEL, result.model),
        (h.VERSION, result.version),
        (h.ARM, result.arm.value),
        (h.SERVED, "true" if result.served else "false"),
        (h.ROUTING_KEY, result.routing_key),
    ]
    return h.as_list(h.encode_headers(items))


@given(result=record_strategy(InferenceResult), as_json=st.booleans())
def test_headers_are_the_plain_headers(result: InferenceResult, as_json: bool) -> None:
    content_type = h.JSON if as_json else INFERENCE_RESULT_CONTENT_TYPE
    assert result_headers(result, content_type) == _plain(result, content_type)
    # And twice in a row (the second from the cache), with no shared list between answers.
    first, second = result_headers(result, content_type), result_headers(result, content_type)
    assert first == second and first is not second


@given(result=record_strategy(InferenceResult), as_json=st.booleans())
def test_an_encoded_result_decodes_back(result: InferenceResult, as_json: bool) -> None:
    value, headers = encode_result(result, as_json=as_json)
    if as_json:
        assert decode_result(value, headers).request_id == result.request_id
    else:
        assert decode_result(value, headers) == result


def _fields(result: InferenceResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _outcome(write: Callable[[], tuple[bytes, h.RawHeaders]]) -> object:
    """What a write gives: its value and headers, or the error it raises."""
    try:
        return write()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@given(result=record_strategy(InferenceResult), as_json=st.booleans())
def test_an_answer_is_written_as_its_result(result: InferenceResult, as_json: bool) -> None:
    # A worker writes its answers from the values it has, without building the result.
    answer = encode_answer(**_fields(result), as_json=as_json)
    assert answer == encode_result(result, as_json=as_json)


class _Float(float):
    """A float subclass (numpy's float64 is one): the result keeps it; fastavro writes it."""


# Values a result refuses or converts, or the compiled writer leaves to fastavro: the answer
# is then written (or refused) exactly as the result built from them would be.
_ODD: dict[str, list[Any]] = {
    "request_id": ["", "r1", b"r1", None],
    "arm": [Arm.CANARY, "canary", "shadow", "", None],
    "served": [True, False, 1, None],
    "weight_bp": [0, 10_000, 10_001, -1, 2**40, 2.5, True, "5", None],
    "created_at": [
        EPOCH,
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        "2026-01-01",
    ],
    "latency_ms": [0.0, 1, 1.5, "1.5", math.nan, math.inf, True, None, _Float(2.5)],
    "measures": [
        {},
        {"t": 1.0},
        {"t": 1},
        {"": 1.0},
        {"t": True},
        {"t": math.nan},
        {"t": -math.inf},
        {"t": "1"},
        {"t": _Float(1.5)},
        {1: 1.0},
        [],
        [1],
    ],
    "outputs": [b"{}", b"", "text", bytearray(b"x"), None],
    "content_type": [h.JSON, "", None, 5],
    "routing_key": [None, "user-7", "", b"k"],
    "prediction": [None, "setosa", 3],
    "error": [None, "boom"],
}
_ONE_ODD = [(name, value) for name, values in _ODD.items() for value in values]


def _same_outcome(fields: dict[str, Any], as_json: bool) -> None:
    expected = _outcome(lambda: encode_result(InferenceResult(**fields), as_json=as_json))
    assert _outcome(lambda: encode_answer(**fields, as_json=as_json)) == expected


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize(("name", "value"), _ONE_ODD, ids=[f"{n}={v!r}" for n, v in _ONE_ODD])
def test_an_odd_value_is_written_or_refused_as_its_result_would_be(
    name: str, value: Any, as_json: bool
) -> None:
    _same_outcome({**_fields(EXAMPLES[InferenceResult]), name: value}, as_json)


@settings(max_examples=300)
@given(
    result=record_strategy(InferenceResult),
    odd=st.lists(st.sampled_from(sorted(_ODD)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: st.sampled_from(_ODD[k]) for k in keys})
    ),
    as_json=st.booleans(),
)
def test_odd_values_together_are_written_or_refused_as_their_result_would_be(
    result: InferenceResult, odd: dict[str, Any], as_json: bool
) -> None:
    _same_outcome({**_fields(result), **odd}, as_json)
