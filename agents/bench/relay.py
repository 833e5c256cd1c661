"""A bare relay: consume one topic, produce every message to another, as plain Kafka does it.
Nothing of the product's loops: two of them in series are the request's path (client ->
router -> worker -> reader) with nothing but Kafka at each hop, ``canary bench latency``'s
same-run reference for a latency target (:mod:`~model_canary.agents.bench.hop_floor`).

Two modes:

* **plain** (the default): no transactions; offsets committed by the consumer in the
  background (``enable.auto.commit``).
* **transactional** (``--transactional-id``): the least an exactly-once hop does. Each batch
  read is one transaction: begin, produce every message, send the batch's offsets to the
  transaction (``send_offsets_to_transaction``), wait for what was produced (``flush``),
  commit (``commit_transaction``), and read on at once. No policy, hook or bookkeeping of the
  product's loop; a batch is what one read returns, as the product's ``balanced`` profile
  commits a transaction as soon as the input is drained. Its phases are timed and printed
  as one JSON line when it stops (:data:`PHASES_TAG`, :func:`phases_of`).

Its clients are the product's (:mod:`~model_canary.agents.kafka.clients`, with the settings of
:mod:`~model_canary.agents.kafka.config`: the latency profile's ``linger.ms`` and
``fetch.wait.max.ms``, idempotence, ``acks=all``, ``read_committed``; a transactional
producer's retry backoff), so the relay differs from an agent only by what the agent does.
Each read returns with the first message there is (``clients.fetch``), then takes what else
was fetched. Settings come from ``CANARY_*`` variables. Stops on SIGTERM/SIGINT.

    python -m model_canary.agents.bench.relay --input canary.chain-in --output canary.chain-mid \\
        --group canary.relay-1 [--transactional-id canary.relay-1.bench]
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, TopicPartition

from model_canary.agents.bench import BenchError
from model_canary.agents.kafka.clients import consume, new_consumer, new_producer, produce
from model_canary.streams import headers as h
from model_canary.streams.settings import Settings

#: The transactional relay's last line starts with this, then its :class:`Phases` as JSON.
PHASES_TAG = "relay-phases "
#: A transaction's steps, in order, as :class:`Phases` times them.
PHASE_NAMES = ("produce", "offsets", "flush", "end")


@dataclass
class Phases:
    """What the transactional relay's transactions took: for each of :data:`PHASE_NAMES`
    (``produce``: begin and produce the batch; ``offsets``: ``send_offsets_to_transaction``;
    ``flush``: the produced messages acknowledged; ``end``: ``commit_transaction``, the
    coordinator's EndTxn once nothing is left to send), the milliseconds of every
    transaction, in order; and the messages relayed. A commit is ``offsets``, ``flush`` and
    ``end``, as an agent's commit is (``router_commit_ms``).

    >>> p = Phases(); p.add({"produce": 0.2, "offsets": 1.0, "flush": 0.5, "end": 1.5}, 3)
    >>> p.summary()["commit_ms_p50"], p.summary()["messages_per_txn"]
    (3.0, 3.0)
    """

    ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in PHASE_NAMES})
    messages: int = 0
    #: The seconds from the first transaction's begin to the last one's commit.
    span_s: float = 0.0

    def add(self, ms: dict[str, float], messages: int) -> None:
        for k in PHASE_NAMES:
            self.ms[k].append(ms[k])
        self.messages += messages

    def summary(self) -> dict[str, float]:
        """Transactions, messages per transaction, each phase's mean and the whole commit's
        (offsets, flush and end) median and mean, in milliseconds, and the share of the
        time spent in them (near 1: the relay commits back to back)."""
        n = len(self.ms["end"])
        if n == 0:
            return {"transactions": 0}
        commit = sorted(
            self.ms["offsets"][i] + self.ms["flush"][i] + self.ms["end"][i] for i in range(n)
        )
        out = {
            "transactions": float(n),
            "messages_per_txn": self.messages / n,
            **{f"{k}_ms": sum(self.ms[k]) / n for k in PHASE_NAMES},
            "commit_ms_p50": round(commit[(n - 1) // 2], 3),
            "commit_ms_mean": sum(commit) / n,
        }
        if self.span_s > 0:
            out["commit_share"] = sum(commit) / 1000 / self.span_s
        return out


def phases_of(log: str) -> dict[str, float] | None:
    """The summary a transactional relay printed last in ``log`` (``None``: none printed).

    >>> phases_of('x\\nrelay-phases {"transactions": 2.0}\\n')
    {'transactions': 2.0}
    """
    found = [line for line in log.splitlines() if line.startswith(PHASES_TAG)]
    if not found:
        return None
    summary: dict[str, float] = json.loads(found[-1][len(PHASES_TAG) :])
    return summary


def relay(
    settings: Settings, input_topic: str, output: str, group: str, stop: threading.Event
) -> None:
    """Copy ``input_topic`` to ``output`` until ``stop`` is set (no transactions).

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


def relay_transactional(
    settings: Settings,
    input_topic: str,
    output: str,
    group: str,
    transactional_id: str,
    stop: threading.Event,
) -> Phases:
    """Copy ``input_topic`` to ``output`` until ``stop`` is set, one transaction per batch
    read (offsets committed in it; the only member of ``group``); returns the phases timed.

    >>> # relay_transactional(Settings.from_env(), "in", "out", "g", "g.1", threading.Event())
    """
    producer = new_producer(settings, "canary-bench-relay", transactional_id=transactional_id)
    producer.init_transactions(30)
    consumer = new_consumer(settings, "canary-bench-relay", group)
    consumer.subscribe([input_topic])
    phases = Phases()
    began: float | None = None
    try:
        while not stop.is_set():
            batch = consume(consumer, 1000, 0.1)
            if not batch:
                continue
            t0 = time.perf_counter()
            if began is None:
                began = t0
            producer.begin_transaction()
            ends: dict[tuple[str, int], int] = {}
            for msg in batch:
                produce(producer, output, msg.value(), msg.key(), headers=h.as_list(msg.headers()))
                ends[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            t1 = time.perf_counter()
            offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            t2 = time.perf_counter()
            if producer.flush(30):
                raise BenchError("the relay's messages were not delivered within 30 s")
            t3 = time.perf_counter()
            producer.commit_transaction(30)
            t4 = time.perf_counter()
            phases.span_s = t4 - began
            ms = {"produce": t1 - t0, "offsets": t2 - t1, "flush": t3 - t2, "end": t4 - t3}
            phases.add({k: v * 1000 for k, v in ms.items()}, len(batch))
    finally:
        consumer.close()
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_canary.agents.bench.relay",
        description="Copy one topic to another with a plain confluent-kafka consumer and "
        "producer (canary bench latency's reference): no transactions, or with "
        "--transactional-id one transaction per batch read (offsets sent to it), printing "
        "the transactions' phases as JSON when it stops. Connection from CANARY_* variables.",
    )
    parser.add_argument("--input", required=True, help="topic to consume")
    parser.add_argument("--output", required=True, help="topic to copy to")
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument(
        "--transactional-id",
        help="relay in transactions with this transactional id (read_committed, offsets "
        "committed in each transaction)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    settings = Settings.from_env()
    if args.transactional_id is None:
        relay(settings, args.input, args.output, args.group, stop)
        return 0
    phases = relay_transactional(
        settings, args.input, args.output, args.group, args.transactional_id, stop
    )
    print(PHASES_TAG + json.dumps(phases.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
