"""The least one hop costs on this machine: a bare produce -> consume at a steady rate, with
the clients configured as the product's are (the same settings: ``linger.ms``, idempotence,
``acks=all``; a ``read_committed`` reader), and nothing in between.

A request through the router and a worker makes three such hops (client -> router, router ->
worker, worker -> reader), plus each agent's work and, with exactly-once delivery, each
agent's transaction. Measured in the same run as the agents, on the same broker and at the
same rate, its p99 is the bound a latency target is compared with: on a small shared machine
the scheduling of the broker, the clients and the reader alone can put it out of reach.

A message the reader never sees within the timeout is counted (:attr:`HopFloor.lost`) and
counts in the percentiles as having taken at least until the reader gave up, so the p99 does
not leave out the worst cases.

>>> floor = HopFloor(ms=[2.0, 3.0], lost=0)
>>> floor.lost
0
>>> # floor = measure_hop_floor(settings, "canary.floor", rate=1000, seconds=10)
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Message

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.load import paced
from model_canary.agents.bench.measure import TopicTail
from model_canary.agents.kafka.clients import new_producer, produce
from model_canary.streams.settings import Settings


@dataclass(frozen=True, slots=True)
class HopFloor:
    """What the bare hop measured."""

    #: Milliseconds per message sent, in sending order; a message never seen counts as
    #: having taken until the reader gave up (a lower bound of its latency).
    ms: list[float]
    #: Messages the reader never saw.
    lost: int


def measure_hop_floor(
    settings: Settings,
    topic: str,
    *,
    rate: float,
    seconds: float,
    timeout: float = 30.0,
    read_topic: str | None = None,
) -> HopFloor:
    """Milliseconds from just before ``produce`` to a ``read_committed`` reader (the
    benchmark's own tail) having each message, ``rate`` messages per second for ``seconds``
    (keyed at random over ``topic``'s partitions); the reader waits ``timeout`` seconds
    after the last send for messages not yet seen.

    ``read_topic``: the reader reads that topic instead, where something else (relays:
    :mod:`~model_canary.agents.bench.relay`) copies ``topic``'s messages to; the warm-up
    message is sent again every second until it is seen (relays joining their groups)."""
    name = f"canary-bench-hop-{uuid.uuid4().hex[:8]}"
    warm_key = f"{name}-warm-up".encode()
    warm_seen = threading.Event()
    sent: dict[bytes, int] = {}
    seen: dict[bytes, int] = {}

    def record(msg: Message, now: int) -> None:
        key = msg.key()
        if key == warm_key:
            warm_seen.set()
        elif key is not None and key in sent and key not in seen:
            seen[key] = now

    producer = new_producer(settings, name)
    tail = TopicTail(settings, [read_topic or topic], record, name="hop-tail")
    n = max(1, int(rate * seconds))
    keys = [f"{name}-{i}".encode() for i in range(n)]
    try:
        # A first message, not timed: the connections and the reader's first fetch are not
        # (timing starts once the reader has it).
        deadline = time.monotonic() + timeout
        while True:
            produce(producer, topic, b"hop", warm_key)
            producer.flush(10)
            if warm_seen.wait(1.0 if read_topic else timeout):
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the bare hop's reader never saw its warm-up message on {read_topic or topic}"
                )
        for i in paced(n, rate):
            with tail.lock:
                sent[keys[i]] = time.time_ns()
            produce(producer, topic, b"hop", keys[i])
            producer.poll(0)
        producer.flush(10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with tail.lock:
                if len(seen) >= len(sent):
                    break
            time.sleep(0.05)
    finally:
        gave_up = time.time_ns()
        tail.stop()
    with tail.lock:
        return HopFloor(
            ms=[(seen.get(k, gave_up) - sent[k]) / 1e6 for k in keys],
            lost=sum(1 for k in keys if k not in seen),
        )
