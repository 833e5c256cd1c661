"""A bare relay: consume one topic, produce every message to another, as plain Kafka does it
(no transactions; offsets committed by the consumer in the background,
``enable.auto.commit``). Nothing of the product's loops: two of them in series are the
request's path (client -> router -> worker -> reader) with nothing but Kafka at each hop,
``canary bench latency``'s same-run reference for a latency target
(:mod:`~model_canary.agents.bench.hop_floor`).

Its clients are the product's (:mod:`~model_canary.agents.kafka.clients`, with the settings of
:mod:`~model_canary.agents.kafka.config`: the latency profile's ``linger.ms`` and
``fetch.wait.max.ms``, idempotence, ``acks=all``, ``read_committed``), so the relay differs
from an agent only by what the agent does. Each
read returns with the first message there is (``poll``), then takes what else was fetched.
Settings come from ``CANARY_*`` variables. Stops on SIGTERM/SIGINT.

    python -m model_canary.agents.bench.relay --input canary.chain-in --output canary.chain-mid \\
        --group canary.relay-1
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError

from model_canary.agents.bench import BenchError
from model_canary.agents.kafka.clients import new_consumer, new_producer, produce
from model_canary.streams import headers as h
from model_canary.streams.settings import Settings


def relay(
    settings: Settings, input_topic: str, output: str, group: str, stop: threading.Event
) -> None:
    """Copy ``input_topic`` to ``output`` until ``stop`` is set.

    >>> # relay(Settings.from_env(), "in", "out", "g", threading.Event())
    """
    producer = new_producer(settings, "canary-bench-relay")
    consumer = new_consumer(settings, "canary-bench-relay", group, **{"enable.auto.commit": True})
    consumer.subscribe([input_topic])
    try:
        while not stop.is_set():
            first = consumer.poll(0.1)
            if first is None:
                producer.poll(0)
                continue
            for msg in [first, *consumer.consume(num_messages=999, timeout=0)]:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise BenchError(err.str())
                    continue
                produce(producer, output, msg.value(), msg.key(), headers=h.as_list(msg.headers()))
            producer.poll(0)
    finally:
        producer.flush(10)
        consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_canary.agents.bench.relay",
        description="Copy one topic to another with a plain confluent-kafka consumer and "
        "producer, no transactions (canary bench latency's reference). Connection from "
        "CANARY_* variables.",
    )
    parser.add_argument("--input", required=True, help="topic to consume")
    parser.add_argument("--output", required=True, help="topic to copy to")
    parser.add_argument("--group", required=True, help="consumer group id")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    relay(Settings.from_env(), args.input, args.output, args.group, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
