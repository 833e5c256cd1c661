"""Inference requests: the JSON form, content-type dispatch, and JSON/Avro equivalence."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_canary.streams.codec import (
    INFERENCE_REQUEST_CONTENT_TYPE,
    codec_for,
    decode_request,
    encode_request_json,
    oip_request,
    parse_oip_response,
)
from model_canary.streams.codec.requests import canonical_json, media_type
from model_canary.streams.errors import (
    DecodeError,
    InvalidRecordError,
    PayloadTooLargeError,
    UndecodableError,
    UnsupportedContentTypeError,
)
from model_canary.streams.messages import InferenceRequest, from_epoch_ms
from tests.unit.record_strategies import record_strategy

JSON = "application/json"
NOW = from_epoch_ms(1_700_000_000_000)
OIP = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2]}]}
BASE: dict[str, Any] = {"request_id": "r1", "model": "iris", "inputs": OIP}


def _json(doc: Any, **overrides: Any) -> bytes:
    if isinstance(doc, dict):
        doc = {**doc, **overrides}
    return json.dumps(doc).encode()


def _decode(doc: Any, **overrides: Any) -> InferenceRequest:
    return decode_request(_json(doc, **overrides), JSON, now=NOW)


# --- the JSON form ----------------------------------------------------------------------------


def test_full_json_request() -> None:
    req = _decode(
        BASE,
        routing_key="user-7",
        timeout_ms=1000,
        attributes={"tenant": "a"},
        created_at=1_700_000_000_123,
        unknown_key="ignored",
    )
    assert req == InferenceRequest(
        request_id="r1",
        model="iris",
        inputs=canonical_json(OIP),
        routing_key="user-7",
        created_at=from_epoch_ms(1_700_000_000_123),
        timeout_ms=1000,
        attributes={"tenant": "a"},
    )
    assert json.loads(req.inputs) == OIP


def test_minimal_json_request_uses_the_callers_now() -> None:
    req = _decode(BASE)
    assert (req.created_at, req.routing_key, req.timeout_ms, req.attributes) == (
        NOW,
        None,
        None,
        {},
    )
    assert req.content_type == JSON
    assert req.inputs == b'{"inputs":[{"data":[1.5,2],"datatype":"FP64","name":"x","shape":[1,2]}]}'


def test_without_now_the_clock_is_used() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    req = decode_request(_json(BASE), JSON)
    assert before <= req.created_at <= datetime.now(UTC)
    assert req.created_at.microsecond % 1000 == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.123456Z", datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_created_at_forms(value: Any, expected: datetime) -> None:
    created_at = _decode(BASE, created_at=value).created_at
    assert created_at == expected
    assert created_at.tzinfo is UTC


def test_naive_now_means_utc() -> None:
    req = decode_request(_json(BASE), JSON, now=datetime(2024, 1, 1, 0, 0, 0, 999999))
    assert req.created_at == datetime(2024, 1, 1, 0, 0, 0, 999000, tzinfo=UTC)


def test_string_inputs_are_taken_verbatim() -> None:
    req = _decode(BASE, inputs="a,b,c\n1,2,3", content_type="text/csv")
    assert (req.inputs, req.content_type) == (b"a,b,c\n1,2,3", "text/csv")
    req = _decode(BASE, inputs='{"b": 1}')
    assert (req.inputs, req.content_type) == (b'{"b": 1}', JSON)


def test_array_inputs_are_canonical_json() -> None:
    assert _decode(BASE, inputs=[{"b": 1, "a": 2}]).inputs == b'[{"a":2,"b":1}]'


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=UTF-8", 'application/json;charset="utf-8"'],
)
def test_json_content_type_variants(content_type: str) -> None:
    assert decode_request(_json(BASE), content_type, now=NOW).request_id == "r1"


@pytest.mark.parametrize("content_type", [None, "", INFERENCE_REQUEST_CONTENT_TYPE])
def test_avro_content_type_or_none(content_type: str | None) -> None:
    req = _decode(BASE)
    assert decode_request(codec_for(InferenceRequest).encode(req), content_type) == req


def test_media_type() -> None:
    assert media_type(" Application/JSON ; Charset=UTF-8") == (
        "application/json",
        {"charset": "UTF-8"},
    )


# --- equivalence ------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=10,
)
_INPUTS = st.one_of(
    st.dictionaries(st.text(), _JSON_VALUES, max_size=4).map(canonical_json),
    st.lists(_JSON_VALUES, max_size=4).map(canonical_json),
    st.dictionaries(st.text(), _JSON_VALUES, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.text().map(str.encode),
)
_REQUESTS = st.builds(
    lambda r, inputs, ct: dataclasses.replace(r, inputs=inputs, content_type=ct),
    record_strategy(InferenceRequest),
    _INPUTS,
    st.sampled_from([JSON, "text/plain", "application/json; charset=utf-8"]),
)


@given(_REQUESTS)
def test_json_and_avro_forms_decode_to_equal_records(req: InferenceRequest) -> None:
    from_json = decode_request(encode_request_json(req), JSON)
    from_avro = decode_request(codec_for(InferenceRequest).encode(req), None)
    assert from_json == from_avro == req


@given(st.dictionaries(st.text(), _JSON_VALUES, max_size=4))
def test_json_written_by_hand_matches_its_avro_form(inputs: dict[str, Any]) -> None:
    req = _decode(BASE, inputs=inputs, routing_key="k")
    assert decode_request(codec_for(InferenceRequest).encode(req), None) == req
    assert json.loads(encode_request_json(req))["inputs"] == inputs


def test_non_canonical_json_inputs_are_embedded_as_a_string() -> None:
    req = _decode(BASE, inputs='{"b": 1}')
    doc = json.loads(encode_request_json(req))
    assert doc["inputs"] == '{"b": 1}' and doc["content_type"] == JSON
    assert "content_type" not in json.loads(encode_request_json(_decode(BASE)))


def test_binary_inputs_have_no_json_form() -> None:
    req = InferenceRequest(
        request_id="r", model="m", inputs=b"\xff", content_type="x/y", created_at=NOW
    )
    with pytest.raises(ValueError, match="not UTF-8"):
        encode_request_json(req)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["request_id", "model", "inputs"])
def test_missing_required_field(field: str) -> None:
    doc = {k: v for k, v in BASE.items() if k != field}
    with pytest.raises(InvalidRecordError, match=f"missing field '{field}'"):
        _decode(doc)
    with pytest.raises(InvalidRecordError, match=f"missing field '{field}'"):
        _decode(BASE, **{field: None})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"request_id": 7}, "'request_id' must be a str, got int"),
        ({"model": ["iris"]}, "'model' must be a str, got list"),
        ({"request_id": ""}, "request_id must not be empty"),
        ({"inputs": 5}, "'inputs' must be an object, array or string"),
        ({"inputs": True}, "'inputs' must be an object, array or string"),
        ({"content_type": 1}, "'content_type' must be a str"),
        ({"content_type": "text/csv"}, "'inputs' is JSON but content_type is 'text/csv'"),
        ({"routing_key": 7}, "'routing_key' must be a str"),
        ({"timeout_ms": "1000"}, "'timeout_ms' must be a int, got str"),
        ({"timeout_ms": True}, "'timeout_ms' must be a int, got bool"),
        ({"timeout_ms": 0}, "timeout_ms must be within 1..2147483647"),
        ({"timeout_ms": 2**31}, "timeout_ms must be within"),
        ({"attributes": []}, "'attributes' must be a dict"),
        ({"attributes": {"a": 1}}, "attribute 'a' must be a string"),
        ({"created_at": True}, "'created_at' must be epoch milliseconds or an ISO-8601"),
        ({"created_at": 1.5}, "'created_at' must be epoch milliseconds or an ISO-8601"),
        ({"created_at": "yesterday"}, "'created_at' is out of range or malformed"),
        ({"created_at": 10**20}, "'created_at' is out of range or malformed"),
    ],
)
def test_wrong_field_types(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        _decode(BASE, **overrides)


@pytest.mark.parametrize("doc", [[BASE], "r1", 42, None])
def test_json_not_an_object(doc: Any) -> None:
    with pytest.raises(InvalidRecordError, match="must be an object"):
        _decode(doc)


@pytest.mark.parametrize(
    "value", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"inputs": NaN}', b"[" * 100_000]
)
def test_not_json(value: bytes) -> None:
    with pytest.raises(UndecodableError, match="not UTF-8 JSON"):
        decode_request(value, JSON)


def test_oversize() -> None:
    body = _json(BASE)
    assert decode_request(body, JSON, max_bytes=len(body), now=NOW).request_id == "r1"
    with pytest.raises(PayloadTooLargeError, match=f"{len(body)} bytes, over the 10-byte limit"):
        decode_request(body, JSON, max_bytes=10)
    avro = codec_for(InferenceRequest).encode(_decode(BASE))
    with pytest.raises(PayloadTooLargeError) as info:
        decode_request(avro, None, max_bytes=len(avro) - 1)
    assert info.value.reason == "too-large"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/avro", "application/json; charset=latin-1"]
)
def test_unsupported_content_type(content_type: str) -> None:
    with pytest.raises(UnsupportedContentTypeError, match="not supported") as info:
        decode_request(_json(BASE), content_type)
    assert info.value.reason == "unsupported-content-type"


@given(st.binary(max_size=300), st.sampled_from([None, JSON, INFERENCE_REQUEST_CONTENT_TYPE]))
def test_arbitrary_bytes_raise_only_decode_errors(value: bytes, content_type: str | None) -> None:
    with contextlib.suppress(DecodeError):
        decode_request(value, content_type, now=NOW)


@given(
    st.dictionaries(
        st.sampled_from(
            [*BASE, "routing_key", "timeout_ms", "attributes", "created_at", "content_type"]
        ),
        _JSON_VALUES,
    )
)
def test_arbitrary_json_objects_raise_only_decode_errors(doc: dict[str, Any]) -> None:
    try:
        req = _decode(doc)
    except DecodeError:
        return
    assert decode_request(encode_request_json(req), JSON) == req


# --- Open Inference Protocol helpers ----------------------------------------------------------


def test_oip_request_shapes() -> None:
    body = json.loads(oip_request({"x": [[1, 2, 3], [4, 5, 6]], "y": [7]}, request_id="r1"))
    assert body == {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "y", "shape": [1], "datatype": "FP64", "data": [7]},
        ],
    }
    assert (
        json.loads(oip_request({"s": ["a"]}, datatype="BYTES"))["inputs"][0]["datatype"] == "BYTES"
    )
    with pytest.raises(ValueError, match="ragged"):
        oip_request({"x": [[1, 2], [3]]})


def test_parse_oip_response() -> None:
    body = (
        b'{"model_name":"iris","outputs":'
        b'[{"name":"p","shape":[2],"datatype":"FP64","data":[0.1,0.9]}]}'
    )
    assert parse_oip_response(body) == {"p": [0.1, 0.9]}
    with pytest.raises(UndecodableError):
        parse_oip_response(b"<html>")
    for bad in (
        b"[]",
        b'{"outputs": {}}',
        b'{"outputs": [{"data": []}]}',
        b'{"outputs": [{"name": "p"}]}',
    ):
        with pytest.raises(InvalidRecordError):
            parse_oip_response(bad)


def test_json_request_round_trips_through_a_fixed_offset_timezone() -> None:
    tz = timezone(timedelta(hours=-5))
    req = InferenceRequest(
        request_id="r", model="m", inputs=b"{}", created_at=datetime(2024, 1, 1, 7, tzinfo=tz)
    )
    assert decode_request(encode_request_json(req), JSON) == req


def test_a_bare_json_input_with_the_model_in_the_headers() -> None:
    oip = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}'
    request = decode_request(
        oip, "application/json", model="iris", request_id="0-12", routing_key="user-7", now=NOW
    )
    assert (request.request_id, request.model, request.routing_key) == ("0-12", "iris", "user-7")
    assert request.inputs == canonical_json(json.loads(oip))
    assert request.created_at == NOW and request.content_type == "application/json"
    text = decode_request(b'"just text"', "application/json", model="m", request_id="r")
    assert text.inputs == b'"just text"'
    # The request form still reads as one; headers fill in what it leaves out.
    form = decode_request(
        b'{"inputs": {"a": 1}, "routing_key": "k"}', JSON, model="iris", request_id="h1"
    )
    assert (form.request_id, form.model, form.routing_key, form.inputs) == (
        "h1",
        "iris",
        "k",
        b'{"a":1}',
    )
    with pytest.raises(InvalidRecordError, match="missing field 'request_id'"):
        decode_request(b'{"text": "x"}', JSON, model="m")


def test_the_kafka_key_is_the_routing_key_of_a_request_without_one() -> None:
    request = InferenceRequest(request_id="r1", model="iris", inputs=b"{}", created_at=NOW)
    avro = codec_for(InferenceRequest).encode(request)
    assert decode_request(avro, None, routing_key="user-9").routing_key == "user-9"
    keyed = dataclasses.replace(request, routing_key="own")
    encoded = codec_for(InferenceRequest).encode(keyed)
    assert decode_request(encoded, None, routing_key="user-9").routing_key == "own"
