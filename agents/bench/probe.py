"""Offsets seen from outside a contender: how much it has written (high watermarks of its
output topics) and how much it has committed (its consumer group's committed offsets).

Observing both the router and the passthrough this way measures them identically, without
touching either.

>>> # probe = OffsetProbe(settings); probe.end_total(["canary.requests"])
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from model_canary.agents.bench import BenchError
from model_canary.agents.kafka.clients import new_consumer
from model_canary.streams.settings import Settings


class OffsetProbe:
    """High watermarks and committed offsets, summed over topics' partitions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # read_uncommitted: ListOffsets then answers the high watermark, not the last stable
        # offset, so records of a transaction still open count as written.
        self._watermarks = self._consumer(
            "canary-bench-probe", **{"isolation.level": "read_uncommitted"}
        )
        self._groups: dict[str, Consumer] = {}
        self._partitions: dict[str, list[int]] = {}

    def _consumer(self, group: str, **config: object) -> Consumer:
        # Never subscribes: committed() is an OffsetFetch, it does not join the group.
        return new_consumer(self.settings, "canary-bench-probe", group, **config)

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            md = self._watermarks.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                raise BenchError(f"topic {topic} is missing ({md and md.error})")
            self._partitions[topic] = sorted(md.partitions)
        return self._partitions[topic]

    def _tps(self, topics: Iterable[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topics for p in self.partitions(t)]

    def end_total(self, topics: Iterable[str]) -> int:
        """Sum of the high watermarks (committed or not, transaction markers included)."""
        return sum(max(self._high(tp), 0) for tp in self._tps(topics))

    def _high(self, tp: TopicPartition) -> int:
        deadline = time.monotonic() + 30
        while True:
            try:
                _low, high = self._watermarks.get_watermark_offsets(tp, timeout=10, cached=False)
                return int(high)
            except KafkaException:
                # A topic created a moment ago may answer "not leader" for a little while.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def committed_total(self, group: str, topics: Iterable[str]) -> int:
        """Sum of ``group``'s committed offsets on ``topics`` (0 where none is committed).

        The probe reads ``read_committed``, so a transactional offset commit counts once its
        transaction has committed.
        """
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups[group] = self._consumer(group)
        tps = self._tps(topics)
        for _attempt in range(20):
            try:
                committed = consumer.committed(tps, timeout=10)
                return sum(max(tp.offset, 0) for tp in committed)
            except KafkaException:
                continue  # e.g. coordinator moving; try again
        raise BenchError(f"cannot read the committed offsets of group {group}")

    def close(self) -> None:
        self._watermarks.close()
        for consumer in self._groups.values():
            consumer.close()
        self._groups.clear()
