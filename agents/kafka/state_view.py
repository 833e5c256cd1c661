"""Every rollout's latest state, read from the compacted rollout-state topic.

Each router and worker instance keeps its own view (no consumer group: every instance reads
every partition), restored from the beginning on start, so a restarted process routes exactly
as before.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from model_canary.agents.kafka.clients import consume, new_reader
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import RolloutState
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

#: How long the broker holds the view's fetch while the rollout states do not change (they
#: change a few times per rollout). A new state ends the wait at once, its transaction's
#: commit included (measured: seen 1 ms after the commit with a 5 s wait), and the view reads
#: every partition from its start, so it never waits for a fetch in flight to take a new
#: partition in. A broker answers one request of a connection at a time, though: the end
#: offsets a :meth:`StateView.catch_up` asks for wait behind a held fetch, up to this long
#: (the controller catches up after each reassignment of its control partition; a view's
#: first catch-up, at start, has no fetch held yet). The latency profile's
#: ``fetch.wait.max.ms`` (10-100 ms) is for data paths: a view with it fetched 20 times a
#: second in every router, worker and evaluator, about 0.0015 CPU seconds per second each
#: (``canary bench pipeline``'s idle figures).
FETCH_WAIT_MS = 500


class StateView:
    """``view.get(model)`` -> the model's :class:`RolloutState` or ``None``.

    >>> view = StateView(Settings())   # connects on first use
    >>> # view.catch_up(); view.get("iris")
    """

    def __init__(self, settings: Settings, client_id: str = "canary-state-view") -> None:
        self._settings = settings
        self._topic = TopicCatalogue(settings.topic_prefix).rollout_state
        self._client_id = client_id
        self._consumer: Consumer | None = None
        self._codec = codec_for(RolloutState)
        self.states: dict[str, RolloutState] = {}
        self.revision = 0  # number of state records applied, for cheap change detection
        # States this process wrote in a transaction not yet committed: model -> the state
        # before (None: none), restored if the transaction aborts.
        self._uncommitted: dict[str, RolloutState | None] = {}

    def get(self, model: str) -> RolloutState | None:
        return self.states.get(model)

    def _open(self) -> Consumer:
        if self._consumer is None:
            # The group id is never used to commit (assign, not subscribe), but librdkafka
            # wants one.
            consumer = new_reader(
                self._settings,
                self._client_id,
                **{"enable.partition.eof": False, "fetch.wait.max.ms": FETCH_WAIT_MS},
            )
            try:
                md = consumer.list_topics(self._topic, timeout=10)
            except KafkaException as exc:
                raise wrap(f"read metadata of {self._topic}", exc) from None
            topic = md.topics.get(self._topic)
            if topic is None or topic.error is not None:
                raise wrap(
                    f"open {self._topic}",
                    RuntimeError(
                        f"topic missing: run 'canary topics create' ({topic and topic.error})"
                    ),
                )
            consumer.assign(
                [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in topic.partitions]
            )
            self._consumer = consumer
        return self._consumer

    def catch_up(self, timeout: float = 30.0) -> int:
        """Read until every partition's end (as of now); returns the number of records read."""
        consumer = self._open()
        deadline = time.monotonic() + timeout
        ends = {}
        for tp in consumer.assignment():
            while True:
                try:
                    _low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                    break
                except KafkaException as exc:
                    # A topic created a moment ago may have no leader yet.
                    if time.monotonic() > deadline:
                        raise wrap(f"read the end of {self._topic}", exc) from None
                    time.sleep(0.2)
            ends[tp.partition] = high
        read = 0
        while True:
            # Caught up already (a view that keeps reading usually is): no poll to wait out.
            positions = consumer.position(consumer.assignment())
            if all(
                ends[tp.partition] <= 0 or (tp.offset >= 0 and tp.offset >= ends[tp.partition])
                for tp in positions
            ):
                return read
            if time.monotonic() >= deadline:
                break
            read += self.poll(0.2)
        log.warning(
            "rollout state not fully read within %.0fs; going on with what arrived", timeout
        )
        return read

    def poll(self, timeout: float = 0.0) -> int:
        """Apply whatever state records have arrived; returns how many."""
        consumer = self._open()
        n = 0
        for msg in consume(consumer, 500, timeout):
            value = msg.value()
            if value is None:  # a tombstone forgets the model
                self.states.pop((msg.key() or b"").decode(), None)
                n += 1
                continue
            try:
                state = self._codec.decode(value)
            except DecodeError as exc:
                log.error("skipping undecodable rollout state at offset %s: %s", msg.offset(), exc)
                continue
            current = self.states.get(state.model)
            # Revisions only grow for a rollout; an older record never replaces a newer one.
            if (
                current is None
                or state.revision >= current.revision
                or state.rollout_id != current.rollout_id
            ):
                self.states[state.model] = state
            n += 1
        self.revision += n
        return n

    def apply_local(self, state: RolloutState) -> None:
        """Record a state this process wrote itself in the open transaction (before it comes
        back from the topic); :meth:`commit_local` or :meth:`rollback_local` settles it."""
        if state.model not in self._uncommitted:
            self._uncommitted[state.model] = self.states.get(state.model)
        self.states[state.model] = state
        self.revision += 1

    def commit_local(self) -> None:
        """The transaction that wrote the local states committed: they are the states now."""
        self._uncommitted.clear()

    def rollback_local(self) -> None:
        """The transaction that wrote the local states aborted: they were never written, so
        forget them (the commands that made them will be applied again).

        >>> from model_canary.streams.messages import Phase, RolloutState, utc_now
        >>> view, now = StateView(Settings()), utc_now()
        >>> view.apply_local(RolloutState(model="iris", rollout_id="r1", stable_version="v1",
        ...     baseline_version="v1", phase=Phase.STABLE, step_started_at=now, updated_at=now))
        >>> view.rollback_local(); view.get("iris") is None
        True
        """
        for model, before in self._uncommitted.items():
            if before is None:
                self.states.pop(model, None)
            else:
                self.states[model] = before
        if self._uncommitted:
            self.revision += 1
        self._uncommitted.clear()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
