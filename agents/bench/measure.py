"""What a benchmark measures: drain throughput, produce-to-visible latency and exactly-once.

*Drain throughput*: with the input topic already full, messages drained divided by the time
from the contender's first output (its first message consumed, seen as its output topics'
high watermarks moving) to the moment its consumer group's committed offsets reach the end
of the input (its last transaction committed). Process start-up and the group join are left
out; the same observation, from outside, is used for every contender.

*Latency*: for each request sent at a fixed rate, the time from just before ``produce`` to the
moment a ``read_committed`` consumer of the contender's outputs received the copy.

>>> # drain = measure_drain(probe, child, group, inputs=[...], outputs=[...])
>>> # drain.msgs_per_s
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.load import SENT_NS
from model_canary.agents.bench.probe import OffsetProbe
from model_canary.agents.bench.procs import (
    Child,
    read_cpu_s,
    read_thread_cpu_s,
    thread_cpu_delta,
)
from model_canary.agents.bench.session import Contender
from model_canary.agents.kafka.clients import consume, new_consumer
from model_canary.streams import headers as h
from model_canary.streams.settings import Settings

IdOf = Callable[[Message], str | None]


@dataclass(frozen=True, slots=True)
class Drain:
    """One contender draining a full input topic."""

    name: str
    messages: int
    seconds: float
    rss_start_mb: float | None  # when its first output appeared
    rss_end_mb: float | None  # when its last commit was seen
    rss_peak_mb: float | None  # during the drain
    #: CPU time the process used from its first output to its last commit (every thread:
    #: librdkafka's too), or None when it could not be read.
    cpu_s: float | None = None
    #: The same per thread name (:func:`~model_canary.agents.bench.procs.thread_kind`), from
    #: ``/proc/PID/task/*/stat``: the interpreter's main thread against librdkafka's threads.
    thread_cpu_s: dict[str, float] | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_msg(self) -> float | None:
        """CPU microseconds per message drained: less sensitive than the rate to other
        processes sharing the machine. None when not read, or when no clock tick (10 ms) was
        counted: a drain that short measures nothing (0 would read as free)."""
        if not self.cpu_s or not self.messages:
            return None
        return self.cpu_s / self.messages * 1e6

    @property
    def thread_cpu_us_per_msg(self) -> dict[str, float]:
        """CPU microseconds per message drained, per thread name (empty: not read)."""
        if not self.thread_cpu_s or not self.messages:
            return {}
        return {k: v / self.messages * 1e6 for k, v in sorted(self.thread_cpu_s.items())}


def measure_drain(
    probe: OffsetProbe,
    child: Child,
    group: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    timeout: float = 600.0,
    poll_s: float = 0.01,
) -> Drain:
    """Start the (stopped) ``child`` and time it draining ``inputs`` to their current end."""
    if child.alive:
        raise BenchError(f"{child.name} must be stopped before a drain is measured")
    target = probe.end_total(inputs)
    before = probe.committed_total(group, inputs)
    if target <= before:
        raise BenchError(f"nothing for {child.name} to drain ({before}/{target} committed)")
    written = probe.end_total(outputs)
    deadline = time.monotonic() + timeout
    child.start()
    while probe.end_total(outputs) <= written:
        _check(child, deadline, "its first output")
        time.sleep(poll_s)
    first = time.monotonic()
    assert child.pid is not None
    cpu_first = read_cpu_s(child.pid)
    threads_first = read_thread_cpu_s(child.pid)
    while probe.committed_total(group, inputs) < target:
        _check(child, deadline, f"committing offset {target}")
        time.sleep(poll_s)
    last = time.monotonic()
    cpu_last = read_cpu_s(child.pid)
    threads_last = read_thread_cpu_s(child.pid)
    rss = child.rss
    assert rss is not None
    rss.sample_now()
    during = [b for t, b in rss.samples if first <= t <= last] or [b for _t, b in rss.samples]
    return Drain(
        name=child.name,
        messages=target - before,
        seconds=last - first,
        rss_start_mb=rss.at_mb(first),
        rss_end_mb=rss.last_mb(),
        rss_peak_mb=max(during) / 1024 / 1024 if during else None,
        cpu_s=cpu_last - cpu_first if cpu_first is not None and cpu_last is not None else None,
        thread_cpu_s=thread_cpu_delta(threads_first, threads_last) if threads_last else None,
    )


def wait_caught_up(
    probe: OffsetProbe, child: Child, group: str, inputs: Sequence[str], timeout: float = 600.0
) -> None:
    """Start ``child`` if needed and wait until its group has committed all of ``inputs``."""
    child.start()
    target = probe.end_total(inputs)
    deadline = time.monotonic() + timeout
    while probe.committed_total(group, inputs) < target:
        _check(child, deadline, f"catching up to offset {target}")
        time.sleep(0.05)


def _check(child: Child, deadline: float, what: str) -> None:
    child.check_alive()
    if time.monotonic() > deadline:
        raise BenchError(f"{child.name}: timed out waiting for {what}:\n{child.log_tail()}")


def header_value(msg: Message, name: str) -> str | None:
    for key, value in h.as_list(msg.headers()):
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def request_id_header(msg: Message) -> str | None:
    return header_value(msg, h.REQUEST_ID)


def key_text(msg: Message) -> str | None:
    key = msg.key()
    return key.decode() if key else None


def _reader(settings: Settings, **config: object) -> Consumer:
    name = f"canary-bench-read-{uuid.uuid4().hex[:8]}"
    return new_consumer(settings, name, name, **config)


class TopicTail:
    """Reads ``topics`` (``read_committed``, from their current end) in a thread and hands
    every message to ``record(message, received_ns)`` (``time.time_ns()`` when the batch it
    came in was received), under :attr:`lock`.

    ``fetch.wait.max.ms`` is 10 and each read returns with the first message there is
    (:func:`~model_canary.agents.kafka.clients.consume`), so a message is received as soon as
    a ``read_committed`` consumer can read it.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        record: Callable[[Message, int], None],
        name: str = "tail",
    ) -> None:
        self.record = record
        self.lock = threading.Lock()
        self._consumer = _reader(settings, **{"fetch.wait.max.ms": 10})
        assignment = []
        for topic in topics:
            md = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                tp = TopicPartition(topic, p)
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                assignment.append(TopicPartition(topic, p, high))
        self._consumer.assign(assignment)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msgs = consume(self._consumer, 1000, 0.05)
                now = time.time_ns()
                with self.lock:
                    for msg in msgs:
                        self.record(msg, now)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class LatencyTail:
    """Receives the copies of latency requests on ``topics`` (a :class:`TopicTail`);
    ``latencies_ms[request id]`` is receive time minus send time (the ``canary-bench-sent-ns``
    header)."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.latencies_ms: dict[str, float] = {}
        self.duplicates = 0
        self._tail = TopicTail(settings, topics, self._record, name="latency-tail")

    def _record(self, msg: Message, now: int) -> None:
        sent, rid = header_value(msg, SENT_NS), request_id_header(msg)
        if sent is None or rid is None:
            return
        if rid in self.latencies_ms:
            self.duplicates += 1
        else:
            self.latencies_ms[rid] = (now - int(sent)) / 1e6

    def wait_for(self, ids: Sequence[str], timeout: float) -> list[float]:
        """Latencies of ``ids`` once all arrived (or ``timeout`` passed), then stop."""
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while time.monotonic() < deadline:
            with self._tail.lock:
                if wanted.issubset(self.latencies_ms):
                    break
            time.sleep(0.05)
        self._tail.stop()
        return [self.latencies_ms[i] for i in ids if i in self.latencies_ms]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Which of the expected ids a contender's outputs hold, and how often."""

    expected: int
    messages: int
    lost: int
    duplicated: int  # messages beyond the first copy of an id
    unexpected: int  # ids nobody sent
    missing: frozenset[str] = frozenset()


def check_delivery(
    settings: Settings, topics: Sequence[str], expected: Iterable[str], id_of: IdOf
) -> Delivery:
    """Read every committed message of ``topics`` (``read_committed``, to their end) and
    compare the ids found with ``expected``."""
    counts = Counter(read_ids(settings, topics, id_of))
    wanted = set(expected)
    missing = frozenset(wanted - counts.keys())
    return Delivery(
        expected=len(wanted),
        messages=sum(counts.values()),
        lost=len(missing),
        duplicated=sum(c - 1 for c in counts.values() if c > 1),
        unexpected=len(counts.keys() - wanted),
        missing=missing,
    )


def read_ids(settings: Settings, topics: Sequence[str], id_of: IdOf) -> list[str | None]:
    """``id_of`` every committed message of ``topics``, read from the beginning to the end."""
    consumer = _reader(settings, **{"enable.partition.eof": True})
    try:
        assignment = []
        for topic in topics:
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, -2) for p in md.partitions]  # beginning
        consumer.assign(assignment)
        remaining = {(tp.topic, tp.partition) for tp in assignment}
        out: list[str | None] = []
        deadline = time.monotonic() + 300
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is None:
                    out.append(id_of(msg))
                elif err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard((msg.topic(), msg.partition()))
        if remaining:
            raise BenchError(f"could not read {sorted(remaining)} to the end")
        return out
    finally:
        consumer.close()


def drain_rounds(
    probe: OffsetProbe,
    contenders: Sequence[Contender],
    rounds: int,
    produce: Callable[[int], None],
    *,
    progress: Callable[[str], None] = lambda _m: None,
    timeout: float = 600.0,
) -> dict[str, list[Drain]]:
    """``rounds`` times: with every contender stopped, ``produce(round)`` fills the input;
    then each contender drains it alone. The order alternates between rounds; in the last
    round the last of ``contenders`` drains last and is left running."""
    drains: dict[str, list[Drain]] = {c.child.name: [] for c in contenders}
    for r in range(rounds):
        for c in contenders:
            c.child.stop()
        produce(r)
        order = list(contenders) if (rounds - 1 - r) % 2 == 0 else list(reversed(contenders))
        for i, c in enumerate(order):
            progress(f"round {r + 1}/{rounds}: {c.child.name} draining")
            drain = measure_drain(probe, c.child, c.group, c.inputs, c.outputs, timeout=timeout)
            drains[c.child.name].append(drain)
            progress(
                f"  {drain.messages:,} in {drain.seconds:.2f} s = {drain.msgs_per_s:,.0f} msgs/s"
            )
            if not (r == rounds - 1 and i == len(order) - 1):
                c.child.stop()
    return drains
