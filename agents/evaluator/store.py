"""The evaluator's checkpoints on the compacted evaluator-state topic.

Partition ``p`` of the state topic holds the checkpoints of the models whose evidence is on
partition ``p`` of the evidence topic: one snapshot per model (key = model) and a manifest
(key :data:`MANIFEST_KEY`) naming the evidence offset the snapshots cover. A checkpoint is
written in one transaction by a producer whose transactional id is the partition's
(``{prefix}.evaluator-state.p{p}``): the instance that takes a partition over fences any
previous owner before it reads the partition, so a stale owner can never overwrite a newer
checkpoint. Dead letters of that partition's evidence go in the same transaction.

>>> # store = StateStore(settings); cp = store.load(0); store.write(0, 120, {"iris": b"..."})
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Producer, TopicPartition

from model_canary.agents import heap
from model_canary.agents.kafka.clients import new_producer, new_reader, produce
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.errors import KafkaOperationError
from model_canary.streams.headers import RawHeaders
from model_canary.streams.settings import Settings
from model_canary.streams.topics import SNAPSHOT_MAX_BYTES, TopicCatalogue

log = logging.getLogger(__name__)

#: Model names are letters, digits, ``_`` and ``-``: this key is never a model's.
MANIFEST_KEY = b"#partition"


@dataclass(frozen=True, slots=True)
class DeadLetterOut:
    """A dead letter to write with the next checkpoint."""

    value: bytes | None
    key: bytes | None
    headers: RawHeaders


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a partition's last checkpoint holds: the evidence offset it covers (the next one
    to read; -1 when there is none) and each model's snapshot."""

    position: int = -1
    snapshots: Mapping[str, bytes] = field(default_factory=dict)


class StateStore:
    """Reads and writes the evaluator's checkpoints (blocking calls: run them off the event
    loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.topic = self.catalogue.evaluator_state
        self._producers: dict[int, Producer] = {}

    def _producer(self, partition: int) -> Producer:
        producer = self._producers.get(partition)
        if producer is None:
            tid = f"{self.settings.topic_prefix}.evaluator-state.p{partition}"
            producer = new_producer(
                self.settings,
                "canary-evaluator-state",
                transactional_id=tid,
                **{
                    "message.max.bytes": SNAPSHOT_MAX_BYTES + 1024 * 1024,
                    "transaction.timeout.ms": 30_000,
                },
            )
            try:
                producer.init_transactions(60)
            except KafkaException as exc:
                raise wrap(f"init transactions ({tid})", exc) from None
            self._producers[partition] = producer
        return producer

    def load(self, partition: int, timeout: float = 60.0) -> Checkpoint:
        """Fence any previous writer of ``partition``, then read its checkpoint."""
        self._producer(partition)
        consumer = new_reader(
            self.settings,
            "canary-evaluator-restore",
            **{"enable.partition.eof": True, "fetch.max.bytes": SNAPSHOT_MAX_BYTES * 2},
        )
        snapshots: dict[str, bytes] = {}
        position = -1
        try:
            consumer.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise KafkaOperationError(
                        "restore",
                        "TIMED_OUT",
                        f"{self.topic}[{partition}] not read in {timeout:g}s",
                    )
                msgs = consumer.consume(num_messages=100, timeout=0.5)
                done = False
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done = True
                        elif err.fatal():
                            raise wrap(f"read {self.topic}", KafkaException(err))
                        continue
                    key, value = msg.key() or b"", msg.value()
                    if key == MANIFEST_KEY:
                        position = _manifest_position(value, position)
                    elif value is None:
                        snapshots.pop(key.decode(errors="replace"), None)
                    else:
                        snapshots[key.decode(errors="replace")] = value
                if done:
                    break
        finally:
            consumer.close()
        return Checkpoint(position, snapshots)

    def write(
        self,
        partition: int,
        position: int,
        snapshots: Mapping[str, bytes],
        dead_letters: Sequence[DeadLetterOut] = (),
    ) -> None:
        """One checkpoint of ``partition`` (in one transaction): the snapshots of the models
        that changed, the manifest, and the dead letters since the last checkpoint; then the
        heap's free pages go back to the system (:func:`~model_canary.agents.heap.trim`)."""
        producer = self._producer(partition)
        try:
            producer.begin_transaction()
            for model, data in snapshots.items():
                producer.produce(self.topic, data, key=model.encode(), partition=partition)
            manifest = json.dumps({"version": 1, "position": position}).encode()
            producer.produce(self.topic, manifest, key=MANIFEST_KEY, partition=partition)
            for dl in dead_letters:
                produce(producer, self.catalogue.dead_letters, dl.value, dl.key, dl.headers)
            producer.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                producer.abort_transaction(30)
            raise wrap(f"checkpoint {self.topic}[{partition}]", exc) from None
        # The serialized snapshots and the producer's copies of them were the largest
        # transient allocations: give their pages back, or RSS ratchets while state is flat.
        heap.trim()

    def release(self, partition: int) -> None:
        """Forget the partition's producer (another instance owns it now)."""
        producer = self._producers.pop(partition, None)
        if producer is not None:
            producer.flush(5)

    def close(self) -> None:
        for partition in list(self._producers):
            self.release(partition)


def _manifest_position(value: bytes | None, default: int) -> int:
    try:
        doc = json.loads(value or b"")
        return int(doc["position"])
    except (ValueError, TypeError, KeyError):
        log.error("unreadable checkpoint manifest: %r", (value or b"")[:80])
        return default
