"""Read topics between fixed offsets (read_committed), so a reader of a live topic ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from model_canary.agents.kafka.clients import new_reader
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.errors import CanaryError
from model_canary.streams.settings import Settings

# (topic, partition) -> offset
Offsets = dict[tuple[str, int], int]


class AuditIncompleteError(CanaryError):
    """A topic could not be read to its end in time (an open transaction holds it back, or
    the broker is unreachable)."""


class RangeReader:
    """One consumer without a group that reads ranges of offsets of several topics.

    >>> reader = RangeReader(Settings(bootstrap="localhost:9092"))  # connects on first use
    >>> # ends = reader.ends(["canary.results"]); reader.read(starts, ends, print)
    """

    def __init__(self, settings: Settings, client_id: str = "canary-audit") -> None:
        self._consumer = new_reader(settings, client_id, **{"enable.partition.eof": True})

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topics: Iterable[str]) -> list[tuple[str, int]]:
        out = []
        for topic in topics:
            try:
                meta = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
            except KafkaException as exc:
                raise wrap(f"read metadata of {topic}", exc) from None
            if meta is None or meta.error is not None or not meta.partitions:
                raise wrap(f"open {topic}", RuntimeError(f"no such topic: {topic}"))
            out += [(topic, p) for p in sorted(meta.partitions)]
        return out

    def ends(self, topics: Iterable[str]) -> Offsets:
        """Each partition's end (high watermark) as of now."""
        ends: Offsets = {}
        for topic, p in self.partitions(topics):
            ends[topic, p] = self._watermarks(topic, p)[1]
        return ends

    def starts(self, topics: Iterable[str], since: datetime | None) -> Offsets:
        """Each partition's first offset written at or after ``since`` (its start if None)."""
        parts = self.partitions(topics)
        if since is None:
            return {tp: self._watermarks(*tp)[0] for tp in parts}
        ms = int(since.timestamp() * 1000)
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(t, p, ms) for t, p in parts], timeout=10
            )
        except KafkaException as exc:
            raise wrap("look up offsets by time", exc) from None
        starts: Offsets = {}
        for tp in found:
            # -1: nothing written since then, so the range starts at the end.
            offset = tp.offset if tp.offset >= 0 else self._watermarks(tp.topic, tp.partition)[1]
            starts[tp.topic, tp.partition] = offset
        return starts

    def read(
        self,
        starts: Offsets,
        ends: Offsets,
        handle: Callable[[Message], None],
        *,
        stall_s: float = 60.0,
    ) -> Offsets:
        """Pass every committed message in ``[start, end)`` of each partition of ``starts``
        to ``handle``.

        Returns where each partition was left (its end). Raises
        :class:`AuditIncompleteError` if no partition moved for ``stall_s`` seconds.
        """
        todo = {tp for tp, start in starts.items() if start < ends[tp]}
        if not todo:
            return {tp: ends[tp] for tp in starts}
        consumer = self._consumer
        consumer.assign([TopicPartition(t, p, starts[t, p]) for t, p in sorted(todo)])
        progress = time.monotonic()
        try:
            while todo:
                msgs = consumer.consume(1000, timeout=0.5)
                for msg in msgs:
                    tp = (msg.topic() or "", msg.partition() or 0)
                    err = msg.error()
                    if err is not None:
                        if (
                            err.code() == KafkaError._PARTITION_EOF
                            and (msg.offset() or 0) >= ends[tp]
                        ):
                            todo.discard(tp)
                        elif err.code() != KafkaError._PARTITION_EOF and err.fatal():
                            raise wrap("read for the audit", err)
                        continue
                    offset = msg.offset() or 0
                    if offset < ends[tp]:
                        handle(msg)
                    if offset + 1 >= ends[tp]:
                        todo.discard(tp)
                if msgs:
                    progress = time.monotonic()
                # The last records before an end may be transaction markers, never delivered.
                for pos in consumer.position([TopicPartition(t, p) for t, p in todo]):
                    if pos.offset >= ends[pos.topic, pos.partition]:
                        todo.discard((pos.topic, pos.partition))
                if todo and time.monotonic() - progress > stall_s:
                    stuck = ", ".join(f"{t}[{p}]" for t, p in sorted(todo))
                    raise AuditIncompleteError(
                        f"no progress reading {stuck} for {stall_s:g}s: an open transaction "
                        "or an unreachable broker holds it back"
                    )
        finally:
            consumer.unassign()
        return {tp: ends[tp] for tp in starts}

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        deadline = time.monotonic() + 15
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10, cached=False
                )
                return int(low), int(high)
            except KafkaException as exc:
                # A topic created a moment ago may have no leader yet.
                if time.monotonic() > deadline:
                    raise wrap(f"read the offsets of {topic}[{partition}]", exc) from None
                time.sleep(0.2)
