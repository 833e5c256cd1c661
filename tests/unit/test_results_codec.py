"""Result headers: the per-answer headers a worker writes, with the shared ones encoded once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_RESULT_CONTENT_TYPE
from model_canary.streams.codec.results import decode_result, encode_result, result_headers
from model_canary.streams.messages import InferenceResult
from tests.unit.record_strategies import record_strategy


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
