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

Shaped like the router's output (``canary bench router``'s second reference): ``--header
NAME=VALUE`` adds headers after each copy's own, ``--stamp-header NAME`` adds one carrying the
batch's time in milliseconds (as the router's routed-at stamp; ``--stamp-format`` puts it in a
longer value, as the router's ``canary-route`` has it), and ``--split-bp BP`` with two
outputs writes each message once, to the second output when its key's bucket
(``crc32(key) % 10000``) is below ``BP``, else to the first (a rollout's split at that weight),
instead of copying it to every output. Then the only difference from the router is the
routing.

    python -m model_canary.agents.bench.passthrough --input canary.requests --output canary.copy \\
        --group canary.passthrough --transactional-id canary.passthrough.1
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
import zlib
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
        headers: Sequence[tuple[str, bytes]] = (),
        stamp_header: str | None = None,
        stamp_format: str = "{ms}",
        split_bp: int | None = None,
    ) -> None:
        if split_bp is not None and len(outputs) != 2:
            raise BenchError("--split-bp takes exactly two outputs")
        self.outputs = list(outputs)
        self.max_batch = max_batch
        self.headers = list(headers)
        self.stamp_header = stamp_header
        # The stamp's value around its milliseconds.
        head, _, rest = stamp_format.partition("{ms}")
        self.stamp_parts = (head.encode(), rest.encode())
        self.split_bp = split_bp
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
        split_bp = self.split_bp
        shaped = bool(self.headers) or self.stamp_header is not None or split_bp is not None
        tail: list[tuple[str, bytes]] = list(self.headers)
        try:
            while not stop.is_set():
                now = time.monotonic()
                wait = policy.wait_s((now - started) * 1000) if self.in_txn else 0.05
                msgs = fetch(consumer, self.max_batch, wait)
                if msgs and not self.in_txn:
                    producer.begin_transaction()
                    self.in_txn, started = True, time.monotonic()
                if msgs and self.stamp_header is not None:
                    head, rest = self.stamp_parts
                    ms = str(int(time.time() * 1000)).encode()
                    stamp = (self.stamp_header, head + ms + rest)
                    tail = [*self.headers, stamp]
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise BenchError(err.str())
                        continue
                    value, key, headers = msg.value(), msg.key(), msg.headers()
                    targets: Sequence[str] = outputs
                    if shaped:
                        # Consumed headers are a list (the stubs allow a dict for produce).
                        headers = (headers or []) + tail  # type: ignore[operator]
                        if split_bp is not None:
                            low = zlib.crc32(key or b"") % 10_000 < split_bp
                            targets = (outputs[1],) if low else (outputs[0],)
                    for topic in targets:
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
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header added to every copy, after its own (repeatable)",
    )
    parser.add_argument(
        "--stamp-header", metavar="NAME", help="a header carrying the batch's time in ms"
    )
    parser.add_argument(
        "--stamp-format",
        default="{ms}",
        metavar="TEXT",
        help="the --stamp-header value, {ms} replaced by the time (default: {ms})",
    )
    parser.add_argument(
        "--split-bp",
        type=int,
        metavar="BP",
        help="with two --output: write each message once, to the second when crc32(key) "
        "%% 10000 < BP, else to the first",
    )
    args = parser.parse_args(argv)
    headers = []
    for spec in args.header:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            parser.error(f"--header {spec!r}: expected NAME=VALUE")
        headers.append((name, value.encode()))
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
        headers=headers,
        stamp_header=args.stamp_header,
        stamp_format=args.stamp_format,
        split_bp=args.split_bp,
    ).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
