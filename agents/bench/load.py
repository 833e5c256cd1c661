"""Producing benchmark requests: in bulk before a drain, at a fixed rate for latency, or
already routed (with the router's headers) straight to a version topic for a worker.

Request ids are ``{id_prefix}{i}``; keys cycle through ``key_space`` routing keys.

>>> # ids = produce_requests(settings, "bench", 200_000, id_prefix="t0-")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from model_canary.agents.bench import BenchError
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.kafka.clients import new_producer, produce
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import INFERENCE_REQUEST_CONTENT_TYPE, codec_for
from model_canary.streams.messages import Arm, InferenceRequest, utc_now
from model_canary.streams.route_header import RouteHeader, encode_route
from model_canary.streams.settings import Settings

# Header a latency request carries: its send time, ``time.time_ns()`` in decimal.
SENT_NS = "canary-bench-sent-ns"
# The body of every benchmark request: a small OIP request.
INPUTS = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'


def _send_all(
    send: Callable[[int], None], n: int, flush: Callable[[float], None], timeout: float
) -> None:
    for i in range(n):
        send(i)  # waits for room when the local queue is full
        if i % 1000 == 999:
            flush(0)  # serve delivery reports so the queue does not fill up
    flush(timeout)


def produce_requests(
    settings: Settings,
    model: str,
    n: int,
    *,
    id_prefix: str,
    key_space: int = 50_000,
    timeout: float = 120.0,
) -> list[str]:
    """``n`` Avro requests to the requests topic, as :meth:`CanaryClient.send` writes them
    (``flush=False``), all acknowledged on return. Returns the request ids."""
    client = CanaryClient(settings)
    ids = [f"{id_prefix}{i}" for i in range(n)]

    def send(i: int) -> None:
        client.send(
            INPUTS, model=model, key=f"user-{i % key_space}", request_id=ids[i], flush=False
        )

    try:
        _send_all(send, n, client.flush, timeout)
    finally:
        client.close()
    return ids


def paced(n: int, rate: float) -> Iterator[int]:
    """``0 .. n-1``, the ``i``-th given ``i / rate`` seconds after the first (sleeping until
    then; one already late is given at once, so a stall is caught up rather than skipped):
    the steady rate of every latency measurement.

    >>> list(paced(3, 1000.0))
    [0, 1, 2]
    """
    began = time.monotonic()
    for i in range(n):
        wait = began + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield i


def produce_paced(
    settings: Settings,
    model: str,
    rate: float,
    seconds: float,
    *,
    id_prefix: str,
    key_space: int = 50_000,
    warmup: int = 10,
    ready: Callable[[], None],
) -> tuple[list[str], list[str]]:
    """``rate`` requests per second for ``seconds`` seconds, each with its send time in the
    ``canary-bench-sent-ns`` header. Returns the ids of all requests sent and of the timed
    ones: ``warmup`` untimed requests go first, then ``ready()`` returns once the agent under
    test has handled them, so neither connecting nor the agent's start is timed (a contender
    started just before would otherwise make its first timed requests wait for its start-up,
    one that was running already not)."""
    client = CanaryClient(settings)
    warm = [f"{id_prefix}w{i}" for i in range(warmup)]
    for rid in warm:
        client.send(INPUTS, model=model, key=rid, request_id=rid, flush=False)
    client.flush(30)
    ready()
    n = max(1, int(rate * seconds))
    ids = [f"{id_prefix}{i}" for i in range(n)]
    try:
        for i in paced(n, rate):
            rid = ids[i]
            client.send(
                INPUTS,
                model=model,
                key=f"user-{i % key_space}",
                request_id=rid,
                headers={SENT_NS: str(time.time_ns())},
                flush=False,
            )
            if i % 100 == 99:
                client.flush(0)
        client.flush(60)
    finally:
        client.close()
    return [*warm, *ids], ids


def produce_routed(
    settings: Settings,
    topic: str,
    model: str,
    version: str,
    n: int,
    *,
    id_prefix: str,
    rollout_id: str = "bench",
    extra_headers: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> list[str]:
    """``n`` Avro requests written straight to a version topic with the header the router
    sets (``canary-route``: baseline arm, weight 0), as a worker receives them. Returns the
    request ids."""
    producer = new_producer(settings, "canary-bench-load")
    codec = codec_for(InferenceRequest)
    ids = [f"{id_prefix}{i}" for i in range(n)]
    route = RouteHeader(Arm.BASELINE, version, 0, int(time.time() * 1000), rollout_id)
    routed = encode_route(route).decode()
    extra = list((extra_headers or {}).items())

    def send(i: int) -> None:
        rid = ids[i]
        request = InferenceRequest(
            request_id=rid, model=model, inputs=INPUTS, routing_key=rid, created_at=utc_now()
        )
        headers = h.as_list(
            h.encode_headers(
                [
                    (h.CONTENT_TYPE, INFERENCE_REQUEST_CONTENT_TYPE),
                    (h.REQUEST_ID, rid),
                    (h.MODEL, model),
                    (h.ROUTING_KEY, rid),
                    (h.ROUTE, routed),
                    *extra,
                ]
            )
        )
        produce(producer, topic, codec.encode(request), key=rid.encode(), headers=headers)

    def flush(t: float) -> None:
        producer.flush(t)

    _send_all(send, n, flush, timeout)
    if len(producer) > 0:
        raise BenchError(f"{len(producer)} requests not delivered within {timeout:g}s")
    return ids
