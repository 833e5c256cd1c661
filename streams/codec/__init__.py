"""Wire formats: Avro single-object encoding of every record, plus the JSON form of inference
requests for clients without Avro tooling."""

from model_canary.streams.codec.avro import (
    CONTENT_TYPES,
    CONTROL_COMMAND_CONTENT_TYPE,
    CONTROL_EVENT_CONTENT_TYPE,
    DEAD_LETTER_CONTENT_TYPE,
    DECISION_CONTENT_TYPE,
    FEEDBACK_CONTENT_TYPE,
    INFERENCE_REQUEST_CONTENT_TYPE,
    INFERENCE_RESULT_CONTENT_TYPE,
    METRIC_EVENT_CONTENT_TYPE,
    ROLLOUT_STATE_CONTENT_TYPE,
    AvroCodec,
    SchemaStore,
    codec_for,
    decode_any,
    default_store,
    fingerprint,
)
from model_canary.streams.codec.requests import (
    decode_request,
    encode_request_json,
    oip_request,
    parse_oip_response,
)

__all__ = [
    "CONTENT_TYPES",
    "CONTROL_COMMAND_CONTENT_TYPE",
    "CONTROL_EVENT_CONTENT_TYPE",
    "DEAD_LETTER_CONTENT_TYPE",
    "DECISION_CONTENT_TYPE",
    "FEEDBACK_CONTENT_TYPE",
    "INFERENCE_REQUEST_CONTENT_TYPE",
    "INFERENCE_RESULT_CONTENT_TYPE",
    "METRIC_EVENT_CONTENT_TYPE",
    "ROLLOUT_STATE_CONTENT_TYPE",
    "AvroCodec",
    "SchemaStore",
    "codec_for",
    "decode_any",
    "decode_request",
    "default_store",
    "encode_request_json",
    "fingerprint",
    "oip_request",
    "parse_oip_response",
]
