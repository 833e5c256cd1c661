"""The least a transactional hop can cost on this broker: a minimal confluent-kafka loop that,
one message at a time, begins a transaction, produces the message, sends consumed offsets to
the transaction (as every agent does) and commits, then waits until a ``read_committed``
consumer has read the message; the next transaction begins at once, as an agent's does under
a steady load (so it pays the coordinator's refusals while the previous one completes).

Each exactly-once hop (router, worker) pays at least this for every request, whatever the
agent does; a request through the router and a worker pays it twice. Measured in the same run
as the agents, it is the bound a latency figure is compared with.

>>> # floor = measure_txn_floor(settings, topic, 'floor-group', samples=200); percentile(floor, 50)
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import TopicPartition

from model_canary.agents.bench import BenchError
from model_canary.agents.kafka.clients import consume, new_consumer, new_producer, new_reader
from model_canary.streams.settings import Settings


def measure_txn_floor(
    settings: Settings, topic: str, group_id: str, *, samples: int = 200, pause_s: float = 0.0
) -> list[float]:
    """Milliseconds from ``begin_transaction`` to the message being read, ``samples`` times
    (partition 0 of ``topic``, which must exist; offsets committed for group ``group_id``),
    with ``pause_s`` between samples."""
    name = f"canary-bench-floor-{uuid.uuid4().hex[:8]}"
    producer = new_producer(settings, name, transactional_id=name)
    producer.init_transactions(30)
    group = new_consumer(settings, name, group_id)  # only its group metadata is used
    reader = new_reader(settings, name, **{"fetch.wait.max.ms": 10})
    tp = TopicPartition(topic, 0)
    _low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
    reader.assign([TopicPartition(topic, 0, high)])
    out: list[float] = []
    try:
        for i in range(samples):
            key = f"{name}-{i}".encode()
            began = time.perf_counter()
            producer.begin_transaction()
            producer.produce(topic, b"floor", key=key, partition=0)
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, 0, i + 1)], group.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
            deadline = began + 10
            seen = False
            while not seen and time.perf_counter() < deadline:
                seen = any(m.key() == key for m in consume(reader, 100, 0.05))
            if not seen:
                raise BenchError(f"a committed message was not readable within 10 s ({topic})")
            out.append((time.perf_counter() - began) * 1000)
            if pause_s:
                time.sleep(pause_s)
    finally:
        reader.close()
        group.close()
        producer.flush(10)
    return out
