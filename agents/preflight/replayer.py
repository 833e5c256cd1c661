"""The replay: recorded requests of one model, read from the requests topic (``read_committed``)
between fixed offsets, republished to the pre-flight topic of the candidate (and of the
baseline) inside Kafka transactions, at a limited rate.

It runs on the project's exactly-once loop, in a consumer group of its own
(``PREFIX.preflight.ID``) whose offsets are seeded at the replay's start offsets: each recorded
request is replayed exactly once, and a pre-flight stopped half-way resumes where it was. The
progress (requests replayed) is written to the pre-flight's record in the same transaction as
the copies it counts. The loop stops once every partition is read to its end offset, or when
``max_requests`` were replayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from confluent_kafka import KafkaException, Message, TopicPartition

from model_canary.agents.kafka.clients import new_consumer
from model_canary.agents.kafka.dead_letters import dead_letter
from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnHooks, TxnOutput
from model_canary.agents.kafka.errors import wrap
from model_canary.streams import headers as h
from model_canary.streams.accounting import position_id
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Arm, BaselineMode, PreflightStatus
from model_canary.streams.messages import Preflight, utc_now
from model_canary.streams.preflight.replay import (
    Bounds,
    Pacer,
    recorded_request,
    replay_headers,
    sampled,
)
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "preflight"


def bounds_of(job: Preflight) -> Bounds:
    """The replay's offsets, from the record (``first..last`` inclusive per partition)."""
    return Bounds(
        {r.partition: r.first for r in job.ranges},
        {r.partition: r.last + 1 for r in job.ranges},
    )


def group_of(settings: Settings, preflight_id: str) -> str:
    """The replay's consumer group and transactional id."""
    return f"{settings.topic_prefix}.preflight.{preflight_id}"


class Replayer:
    """Replay ``job``'s recorded requests (see the module docs); :meth:`run` returns when the
    replay is complete or ``stop`` is set.

    >>> # Replayer(settings, job).run(threading.Event())
    """

    def __init__(
        self,
        settings: Settings,
        job: Preflight,
        *,
        pacer: Pacer | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.job = job
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.bounds = bounds_of(job)
        self.pacer = pacer or Pacer(job.rate)
        self.on_progress = on_progress
        self.replayed = self.committed = self.written = job.replayed
        model = job.model
        arms = [(Arm.CANARY, job.candidate_version)]
        if job.baseline_mode is BaselineMode.REPLAY:
            arms.append((Arm.BASELINE, job.baseline_version))
        self.targets = [
            (arm.value, version, self.catalogue.preflight_requests(model, version))
            for arm, version in arms
        ]
        self._codec = codec_for(Preflight)
        self._done = threading.Event()
        self._stop: threading.Event | None = None
        self._inner = threading.Event()
        group = group_of(settings, job.preflight_id)
        per_tenth = int(job.rate / 10) if job.rate > 0 else 500
        self.loop = ExactlyOnceLoop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=group,
                topics=(self.catalogue.requests,),
                transactional_id=group,
                max_batch=max(1, min(500, per_tenth)),
                commit=settings.commit_policy,
            ),
            self.handle,
            on_idle=self._check,
            refuse=self._refuse,
            hooks=TxnHooks(
                before_commit=self._write_progress,
                after_commit=self._committed,
                on_abort=self._aborted,
            ),
        )

    @property
    def done(self) -> bool:
        """The replay is complete (every recorded request in range, or ``max_requests``)."""
        return self._done.is_set()

    def run(self, stop: threading.Event) -> None:
        """Seed the group's offsets (first run only) and replay until done or stopped."""
        if self._finished():
            self._done.set()
            return
        self.seed()
        self._stop = stop
        self._inner.clear()
        self.loop.run(self._inner)

    def seed(self) -> None:
        """Commit the replay's start offsets for its group, unless it has committed offsets
        already (a resumed pre-flight goes on from those)."""
        group = group_of(self.settings, self.job.preflight_id)
        topic = self.catalogue.requests
        parts = [TopicPartition(topic, p, o) for p, o in sorted(self.bounds.start.items())]
        consumer = new_consumer(self.settings, "canary-preflight-seed", group)
        try:
            committed = consumer.committed([TopicPartition(topic, tp.partition) for tp in parts])
            if all(tp.offset < 0 for tp in committed):
                consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as exc:
            raise wrap(f"seed the offsets of {group}", exc) from None
        finally:
            consumer.close()

    # -- per batch -----------------------------------------------------------------------
    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        job, limit = self.job, self.job.max_requests
        max_bytes = self.settings.max_request_bytes
        for msg in batch:
            out.source = msg
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if not self.bounds.within(partition, offset) or (limit and self.replayed >= limit):
                continue
            where = position_id(msg.topic() or "", partition, offset)
            raw = h.as_list(msg.headers())
            rec = recorded_request(msg.value(), raw, msg.key(), where, max_bytes=max_bytes)
            if rec is None or rec.model != job.model:
                continue
            if not sampled(rec.request_id, job.preflight_id, job.sample_bp):
                continue
            self.pacer.wait()
            now_ms = int(time.time() * 1000)
            for arm, version, topic in self.targets:
                headers = replay_headers(rec, arm, version, job.preflight_id, now_ms)
                out.produce(topic, msg.value(), key=rec.key, headers=headers)
            self.replayed += 1

    def _refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        # A recorded request whose replay failed in code: not replayed, kept with the reason.
        dead_letter(
            out, self.catalogue.dead_letters, msg, agent=AGENT, reason=reason, detail=detail
        )

    def _check(self) -> None:
        stop = self._stop
        limit = self.job.max_requests
        reached = bool(limit) and self.replayed >= limit
        positions = {p: o for (_t, p), o in self.loop.positions().items()}
        if reached or (positions and self.bounds.done(positions)) or self._nothing_to_read():
            self._done.set()
        if self._done.is_set() or (stop is not None and stop.is_set()):
            self._inner.set()

    def _nothing_to_read(self) -> bool:
        return self.bounds.total() == 0

    def _finished(self) -> bool:
        return self.job.status is not PreflightStatus.REPLAYING or self._nothing_to_read()

    # -- progress, in the transaction ----------------------------------------------------
    def _write_progress(self, out: TxnOutput) -> None:
        if self.replayed == self.written:
            return
        record = replace(
            self.job, status=PreflightStatus.REPLAYING, replayed=self.replayed, updated_at=utc_now()
        )
        key = self.job.preflight_id.encode()
        out.produce(self.catalogue.preflights, self._codec.encode(record), key=key)
        self.written = self.replayed

    def _committed(self) -> None:
        self.committed = self.written = self.replayed
        if self.on_progress is not None:
            self.on_progress(self.committed)

    def _aborted(self) -> None:
        # The copies of the aborted transaction were never written: count them again.
        self.replayed = self.written = self.committed
        log.info("preflight %s: transaction aborted, replaying again", self.job.preflight_id)
