"""The least one hop costs on this machine: a bare produce -> consume at a steady rate, with
the clients configured as the product's are (the same settings: ``linger.ms``, idempotence,
``acks=all``; a ``read_committed`` reader), and nothing in between.

A request through the router and a worker makes three such hops (client -> router, router ->
worker, worker -> reader), plus each agent's work and, with exactly-once delivery, each
agent's transaction. Measured in the same run as the agents, on the same broker and at the
same rate, its p99 is the bound a latency target is compared with: on a small shared machine
the scheduling of the broker, the clients and the reader alone can put it out of reach.

>>> # ms = measure_hop_floor(settings, "canary.floor", rate=1000, seconds=10)
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Message

from model_canary.agents.bench.measure import TopicTail
from model_canary.agents.kafka.clients import new_producer, produce
from model_canary.streams.settings import Settings


def measure_hop_floor(
    settings: Settings, topic: str, *, rate: float, seconds: float, timeout: float = 30.0
) -> list[float]:
    """Milliseconds from just before ``produce`` to a ``read_committed`` reader (the
    benchmark's own tail) having each message, ``rate`` messages per second for ``seconds``
    (keyed at random over ``topic``'s partitions); messages never seen are left out."""
    name = f"canary-bench-hop-{uuid.uuid4().hex[:8]}"
    sent: dict[bytes, int] = {}
    seen: dict[bytes, int] = {}

    def record(msg: Message, now: int) -> None:
        key = msg.key()
        if key is not None and key in sent and key not in seen:
            seen[key] = now

    producer = new_producer(settings, name)
    tail = TopicTail(settings, [topic], record, name="hop-tail")
    n = max(1, int(rate * seconds))
    keys = [f"{name}-{i}".encode() for i in range(n)]
    try:
        # A first message, not timed: connections and the reader's first fetch are not.
        produce(producer, topic, b"hop", b"warm-up")
        producer.flush(10)
        began = time.monotonic()
        for i, key in enumerate(keys):
            wait = began + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with tail.lock:
                sent[key] = time.time_ns()
            produce(producer, topic, b"hop", key)
            producer.poll(0)
        producer.flush(10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with tail.lock:
                if len(seen) >= len(sent):
                    break
            time.sleep(0.05)
    finally:
        tail.stop()
    with tail.lock:
        return [(seen[k] - sent[k]) / 1e6 for k in keys if k in seen]
