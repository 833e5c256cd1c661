"""The reference a benchmark compares an agent with: the least an exactly-once
consume-then-produce loop can do, written directly against confluent-kafka.

It consumes in batches of up to 1000 (as the agents do:
:func:`~model_canary.agents.kafka.clients.fetch`), copies each message (value, key, headers) to
every output topic inside a transaction, and sends the consumed offsets to the transaction and
commits it when the agents' commit policy says so (``Settings.commit_policy``: the
``CANARY_LATENCY`` profile's, or ``CANARY_COMMIT_INTERVAL_MS``). Clients are configured as the
agents' are (:mod:`~model_canary.agents.kafka.config`: ``read_committed``, idempotence,
``acks=all``, the profile's ``linger.ms`` and ``fetch.wait.max.ms``, static group membership),
so the only difference from an agent is the agent's own work. Settings come from ``CANARY_*``
variables. Stops gracefully on SIGTERM/SIGINT.

    python -m model_canary.agents.bench.passthrough --input canary.requests --output canary.copy \\
        --group canary.passthrough --transactional-id canary.passthrough.1
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from model_canary.agents.bench import BenchError
from model_canary.agents.kafka.clients import fetch
from model_canary.agents.kafka.config import consumer_config, producer_config
from model_canary.streams.settings import Settings


class Passthrough:
    """Copy ``input_topic`` to each of ``outputs``, exactly once.

    >>> # Passthrough(settings, "in", ["out"], "g", "g.1").run(threading.Event())
    """

    def __init__(
        self,
        settings: Settings,
        input_topic: str,
        outputs: Sequence[str],
        group: str,
        transactional_id: str,
        *,
        max_batch: int = 1000,
    ) -> None:
        self.outputs = list(outputs)
        self.max_batch = max_batch
        self.policy = settings.commit_policy
        self.in_txn = False
        self.producer = Producer(
            producer_config(
                settings,
                "canary-bench-passthrough",
                transactional_id=transactional_id,
                **{"transaction.timeout.ms": 10_000, "queue.buffering.max.messages": 500_000},
            )
        )
        self.producer.init_transactions(30)
        self.consumer = Consumer(
            consumer_config(
                settings,
                "canary-bench-passthrough",
                group,
                **{"group.instance.id": transactional_id, "session.timeout.ms": 10_000},
            )
        )
        self.consumer.subscribe([input_topic], on_revoke=self._on_revoke)

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        if self.in_txn:
            self.commit()

    def commit(self) -> None:
        positions = [
            tp for tp in self.consumer.position(self.consumer.assignment()) if tp.offset >= 0
        ]
        if positions:
            self.producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 30
            )
        self.producer.commit_transaction(30)
        self.in_txn = False

    def run(self, stop: threading.Event) -> None:
        consumer, producer, outputs = self.consumer, self.producer, self.outputs
        policy = self.policy
        started = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                wait = policy.wait_s((now - started) * 1000) if self.in_txn else 0.05
                msgs = fetch(consumer, self.max_batch, wait)
                if msgs and not self.in_txn:
                    producer.begin_transaction()
                    self.in_txn, started = True, time.monotonic()
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise BenchError(err.str())
                        continue
                    value, key, headers = msg.value(), msg.key(), msg.headers()
                    for topic in outputs:
                        while True:
                            try:
                                producer.produce(topic, value, key=key, headers=headers)
                                break
                            except BufferError:
                                producer.poll(0.05)
                if self.in_txn and policy.due(
                    (time.monotonic() - started) * 1000, drained=len(msgs) < self.max_batch
                ):
                    self.commit()
            if self.in_txn:
                self.commit()
        finally:
            consumer.close()
            producer.flush(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_canary.agents.bench.passthrough",
        description="Copy one topic to others exactly once with a bare confluent-kafka "
        "transactional loop (the benchmarks' reference). Connection from CANARY_* variables.",
    )
    parser.add_argument("--input", required=True, help="topic to consume")
    parser.add_argument(
        "--output", action="append", required=True, help="topic to copy to (repeatable)"
    )
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--transactional-id", required=True, help="producer transactional id")
    parser.add_argument("--max-batch", type=int, default=1000, help="messages per consume()")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    Passthrough(
        Settings.from_env(),
        args.input,
        args.output,
        args.group,
        args.transactional_id,
        max_batch=args.max_batch,
    ).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
