"""Kafka header names and helpers. Routing metadata travels in headers (and the key) so the
router never decodes a payload.

>>> h = header_dict([("canary-model", b"iris"), ("canary-request-id", b"r1")])
>>> h[MODEL], h[REQUEST_ID]
('iris', 'r1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Headers = list[tuple[str, bytes]]
# What confluent-kafka accepts and returns: values may be text, bytes or None.
RawHeaders = list[tuple[str, str | bytes | None]]

CONTENT_TYPE = "content-type"
REQUEST_ID = "canary-request-id"
MODEL = "canary-model"
ROUTING_KEY = "canary-routing-key"
#: Set by the router on every routed request: arm, version, weight, routed-at stamp, flags
#: and rollout id packed in one versioned value (see :mod:`~.route_header`).
ROUTE = "canary-route"
# Set by routers before ``canary-route`` (one header each; workers still read them). A client
# may set ``canary-arm`` on a request to force an arm (header match for testers); ``canary-arm``
# and ``canary-version`` are also on every result.
ARM = "canary-arm"
VERSION = "canary-version"
ROLLOUT_ID = "canary-rollout-id"
WEIGHT_BP = "canary-weight-bp"
ROUTED_AT_MS = "canary-routed-at-ms"
SHADOW = "canary-shadow"
#: On a request a worker re-drove to the baseline after a rollback, with the separate headers.
REDRIVEN = "canary-redriven"
#: On a result written with at-least-once delivery: ``at-least-once`` (the same request may
#: be answered more than once; readers drop the repeats by request id).
DELIVERY = "canary-delivery"
AT_LEAST_ONCE = b"at-least-once"
#: Headers a router sets on a routed request (this release ``canary-route`` only; older ones
#: the others, which workers still read): a client's values for them are dropped on the way in.
ROUTER_SET = frozenset(
    {ROUTE, ARM, VERSION, ROLLOUT_ID, WEIGHT_BP, ROUTED_AT_MS, SHADOW, DELIVERY, REDRIVEN}
)
#: On every result: ``true`` for the answer a client gets, ``false`` for a shadow's.
SERVED = "canary-served"
#: On a replayed copy of a recorded request and on its answer: the pre-flight's id.
PREFLIGHT = "canary-preflight"
#: On a replayed request's answer: the worker micro-batch it was answered in (the pre-flight
#: counts batches as the worker's served evidence does).
PREFLIGHT_BATCH = "canary-preflight-batch"

DLQ_REASON = "canary-dlq-reason"
DLQ_DETAIL = "canary-dlq-detail"
DLQ_TOPIC = "canary-dlq-topic"
DLQ_PARTITION = "canary-dlq-partition"
DLQ_OFFSET = "canary-dlq-offset"
DLQ_AGENT = "canary-dlq-agent"
#: A dead letter keeps a bounded copy of what failed: the payload's size and SHA-256 digest,
#: whether the copy was cut, and which payload it is (``request`` or ``output``).
DLQ_SIZE = "canary-dlq-size"
DLQ_SHA256 = "canary-dlq-sha256"
DLQ_TRUNCATED = "canary-dlq-truncated"
DLQ_PAYLOAD = "canary-dlq-payload"

JSON = "application/json"


def header_dict(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, str]:
    """Headers as ``{name: text}``; the last value wins, undecodable values are replaced.

    >>> header_dict([("a", b"1"), ("b", None), ("a", "2"), ("c", b"\\xff")])
    {'a': '2', 'b': '', 'c': '\\ufffd'}
    """
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    # One comprehension: every message's headers pass through here on the hot paths.
    return {
        name: ""
        if value is None
        else value.decode("utf-8", "replace")
        if isinstance(value, bytes)
        else value
        for name, value in pairs
    }


def header_text(value: str | bytes | None) -> str:
    """One header value as :func:`header_dict` gives it: text as it is, bytes decoded
    (undecodable bytes replaced), ``None`` as ``""``; for a hot loop that reads a few headers
    of ``dict(headers)`` instead of decoding them all.

    >>> [header_text(v) for v in (b"1", None, "2", b"\\xff")]
    ['1', '', '2', '\\ufffd']
    """
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def as_list(headers: object) -> RawHeaders:
    """A message's headers as a list of pairs (confluent-kafka may type them as a dict)."""
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    pairs: RawHeaders = list(headers)  # type: ignore[call-overload]
    return pairs


def encode_headers(items: Iterable[tuple[str, str | None]]) -> Headers:
    """``[(name, text)]`` -> Kafka headers, skipping ``None`` values."""
    return [(name, value.encode()) for name, value in items if value is not None]


def delivery_headers(exactly_once: bool) -> RawHeaders | None:
    """The headers every result carries: none with exactly-once delivery; the
    ``canary-delivery: at-least-once`` mark otherwise.

    >>> delivery_headers(True) is None, delivery_headers(False)
    (True, [('canary-delivery', b'at-least-once')])
    """
    return None if exactly_once else [(DELIVERY, AT_LEAST_ONCE)]
