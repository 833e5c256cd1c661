"""The label joiner: ground-truth feedback meets the predictions it labels, and each join
becomes ``labelled`` evidence for the evaluator, exactly once.

Predictions and feedback are both keyed by request id, so a request's prediction and label
land on the same partition number of their topics; the joiner's consumer group (range
assignment) gives each instance the same partitions of both, so more partitions and more
instances join more labels. Feedback that arrives with another key (older clients keyed it by
model) is re-keyed by its request id to an internal topic in the same transaction and joined
from there.

It runs on the project's exactly-once loop (:mod:`model_canary.agents.kafka.eos`), not on
faust's per-event streams: a transaction covers many labels. Per partition, the pending state
(:class:`~model_canary.streams.evidence.join.LabelJoin`: predictions waiting for their label,
labels waiting for their prediction) changes inside the transaction that consumed the inputs,
and the changes go to the compacted joiner-state topic in that same transaction: a delta per
transaction, and a full snapshot (in chunks) whenever the deltas since the last one outweigh
it, which tombstones those deltas. A restarted or reassigned joiner reads the partition's
latest snapshot and the deltas since, and expires what has passed; an aborted transaction
reloads the partition the same way, so its state never holds what was not committed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from model_canary.agents import metrics
from model_canary.agents.kafka.clients import new_reader
from model_canary.agents.kafka.dead_letters import dead_letter
from model_canary.agents.kafka.eos import ExactlyOnceLoop, LoopConfig, TxnHooks, TxnOutput
from model_canary.agents.kafka.state_view import StateView
from model_canary.streams import headers as h
from model_canary.streams.codec.avro import AvroCodec, codec_for
from model_canary.streams.codec.json_records import decode_record, is_json
from model_canary.streams.codec.requests import media_type
from model_canary.streams.cohort import BUCKETS
from model_canary.streams.errors import DecodeError, InvalidRecordError, KafkaOperationError
from model_canary.streams.evaluation import plan_of
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.join import (
    Joined,
    LabelJoin,
    Waiting,
    dump_chunks,
    dump_ops,
    load_ops,
)
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.messages import MAX_BP, Arm, Feedback, Prediction, utc_now
from model_canary.streams.outcomes.expr import Condition, Outcome
from model_canary.streams.outcomes.metrics import condition
from model_canary.streams.plan import labelled_metrics, outcome_metrics
from model_canary.streams.rollout.machine import ACTIVE_PHASES
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)

AGENT = "joiner"
#: A snapshot is written when the deltas since the last one weigh more than it (or this).
MIN_SNAPSHOT_BYTES = 1_000_000
SNAPSHOT_OPS = 5_000  # operations per snapshot chunk
_ARMS = frozenset(a.value for a in Arm)
_AVRO_TYPES = ("", codec_for(Feedback).content_type)


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What a model's rollout in progress needs of feedback (see ``LabelJoiner._wanted``)."""

    rollout_id: str
    labels: bool
    outcomes: dict[str, Condition]


@dataclass
class _Log:
    """Where one partition's changelog stands."""

    generation: int = 0
    seq: int = 0
    chunks: int = 0
    delta_bytes: int = 0
    snapshot_bytes: int = 0
    deltas: list[bytes] = field(default_factory=list)  # keys to tombstone at the next snapshot


class LabelJoiner:
    """Join labels with predictions until stopped (see the module docstring).

    >>> # LabelJoiner(settings, "evaluator-1").run(stop)
    """

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        cat = self.catalogue
        prefix = settings.topic_prefix
        self.view = StateView(settings, client_id=f"canary-joiner-state-{instance}")
        tid = f"{prefix}.joiner.{instance}"
        self.loop = ExactlyOnceLoop(
            settings,
            LoopConfig(
                agent=AGENT,
                group_id=f"{prefix}.joiner",
                topics=(cat.predictions, cat.feedback, cat.feedback_rekeyed),
                transactional_id=tid,
                max_batch=2000,
                commit=settings.commit_policy,
                assignment_strategy="range",
            ),
            self.handle,
            refuse=self._refuse,
            hooks=TxnHooks(
                before_commit=self._before_commit,
                on_abort=self._on_abort,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
            ),
        )
        self.builder = EvidenceBuilder("labelled", source=tid)
        self.joins: dict[int, LabelJoin] = {}
        self.logs: dict[int, _Log] = {}
        self._prediction = codec_for(Prediction)
        self._feedback = codec_for(Feedback)
        self._labels_wanted: dict[str, _Wanted] = {}
        self._view_revision = -1
        self._expired_at = 0.0
        self.joined = 0  # labels joined since start (for benchmarks)

    def run(self, stop: threading.Event) -> None:
        self.view.catch_up()
        try:
            self.loop.run(stop)
        finally:
            self.view.close()

    # -- partitions ------------------------------------------------------------------------
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self._restore(sorted({tp.partition for tp in partitions} - set(self.joins)))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        for p in {tp.partition for tp in partitions}:
            self.joins.pop(p, None)
            self.logs.pop(p, None)

    def _on_abort(self) -> None:
        # The aborted transaction's joins, expiries and changes never happened: reload.
        self.builder.clear()
        self._restore(sorted(self.joins))

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        began = time.monotonic()
        restored = restore(self.settings, self.catalogue.joiner_state, partitions)
        for partition, (join, state_log) in restored.items():
            expired = join.expire(int(time.time()))
            join.take_changes()
            self.joins[partition] = join
            self.logs[partition] = state_log
            log.info(
                "label join partition %d restored: %d pending (%d expired)",
                partition,
                len(join),
                expired,
            )
        log.info("label join restored in %.2fs", time.monotonic() - began)

    # -- per batch -------------------------------------------------------------------------
    def handle(self, batch: Sequence[Message], out: TxnOutput) -> None:
        now_s = int(time.time())
        cat = self.catalogue
        predictions, feedback = cat.predictions, cat.feedback
        # The rollout-state view's news, once per batch (not per record: a poll costs as much
        # as joining a label).
        if self.view.poll(0) or self._view_revision != self.view.revision:
            self._view_revision = self.view.revision
            self._labels_wanted.clear()
        for msg in batch:
            out.source = msg
            topic = msg.topic()
            join = self.joins.get(msg.partition() or 0)
            if join is None:  # not restored (should not happen): restore now
                self._restore([msg.partition() or 0])
                join = self.joins[msg.partition() or 0]
            try:
                if topic == predictions:
                    self._on_prediction(msg, join, now_s)
                elif self._on_feedback(msg, join, now_s, out, rekey=topic == feedback):
                    continue
            except DecodeError as exc:
                self._dead(out, msg, exc.reason, str(exc))
        out.source = None
        if time.monotonic() - self._expired_at >= 1.0:
            self._expired_at = time.monotonic()
            for join in self.joins.values():
                join.expire(now_s)

    def _on_prediction(self, msg: Message, join: LabelJoin, now_s: int) -> None:
        f = prediction_fields(self._prediction, msg.value() or b"")
        waiting = Waiting(
            f["model"],
            f["rollout_id"],
            f["version"],
            f["arm"],
            f["served"],
            f["weight_bp"],
            f["second"],
            f["bucket"],
            f["answers"],
            f["prediction"],
            f["second"] + f["label_window_s"],
        )
        for j in join.add_prediction(f["request_id"], waiting, now_s):
            self._joined(j)

    def _on_feedback(
        self, msg: Message, join: LabelJoin, now_s: int, out: TxnOutput, *, rekey: bool
    ) -> bool:
        """Join a label; True when it was re-keyed instead (joined later, from there)."""
        raw_headers = msg.headers()  # (most labels carry none: no dict built for them)
        content_type = (
            h.header_dict(h.as_list(raw_headers)).get(h.CONTENT_TYPE) if raw_headers else None
        )
        if content_type is not None and (
            is_json(content_type) or media_type(content_type)[0] not in _AVRO_TYPES
        ):  # a JSON label (docs/json.md), or a content type decode_record refuses
            fb = decode_record(
                Feedback, msg.value(), content_type, defaults={"observed_at": utc_now()}
            )
            rid, model = fb.request_id, fb.model
            said = Outcome(fb.label, fb.value, dict(fb.attributes))
        else:
            f = feedback_fields(self._feedback, msg.value() or b"")
            rid, model = f["request_id"], f["model"]
            said = Outcome(f["label"], f.get("value"), f.get("attributes") or {})
        key = rid.encode()
        if rekey and msg.key() != key:
            out.produce(
                self.catalogue.feedback_rekeyed,
                msg.value(),
                key=key,
                headers=h.as_list(msg.headers()),
            )
            metrics.FEEDBACK_REKEYED.inc()
            return True
        wanted = self._wanted(model)
        if not said.label and not wanted.outcomes:
            return False  # a value or attributes only, and no outcome metric to read them
        for j in join.add_label(rid, said, now_s, keep=wanted.labels):
            self._joined(j)
        return False

    def _joined(self, j: Joined) -> None:
        w = j.waiting
        wanted = self._wanted(w.model)
        correct, outcomes = j.judge(wanted.outcomes if wanted.rollout_id == w.rollout_id else {})
        if correct is None and not outcomes:
            return  # feedback that says nothing about any metric of this rollout
        cell = Cell(w.model, w.rollout_id, w.version, w.arm, w.served, w.weight_bp, w.second)
        self.builder.add_label(cell, w.bucket, correct, outcomes)
        self.joined += 1

    def _wanted(self, model: str) -> _Wanted:
        """What the model's rollout needs of feedback: whether feedback that came first is
        worth keeping (a rollout in progress whose plan compares ground truth or outcomes),
        and its outcome metrics' conditions (as the view stood when the batch began)."""
        wanted = self._labels_wanted.get(model)
        if wanted is None:
            state = self.view.get(model)
            wanted = _Wanted("", False, {})
            if state is not None and state.phase in ACTIVE_PHASES:
                plan = plan_of(state)
                wanted = _Wanted(
                    state.rollout_id,
                    bool(labelled_metrics(plan)),
                    {name: condition(text) for name, text in outcome_metrics(plan).items()},
                )
            self._labels_wanted[model] = wanted
        return wanted

    def _dead(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        dead_letter(
            out, self.catalogue.dead_letters, msg, agent=AGENT, reason=reason, detail=detail
        )

    def _refuse(self, out: TxnOutput, msg: Message, reason: str, detail: str) -> None:
        self._dead(out, msg, reason, detail)

    # -- per transaction -------------------------------------------------------------------
    def _before_commit(self, out: TxnOutput) -> None:
        if self.builder:
            offsets = self.loop.consumed_ranges()
            records = self.builder.build(offsets)
            for key, value in encode_evidence(records, sets=self.settings.evidence_sets):
                out.produce(self.catalogue.evidence, value, key=key)
            for ev in records:
                metrics.LABELS_JOINED.inc(ev.labelled)
        for p, join in self.joins.items():
            self._write_changes(out, p, join, self.logs[p])
        metrics.LABELS_PENDING.set(sum(len(j) for j in self.joins.values()))

    def _write_changes(self, out: TxnOutput, partition: int, join: LabelJoin, state: _Log) -> None:
        changes = join.take_changes()
        if not changes:
            return
        topic = self.catalogue.joiner_state
        if state.delta_bytes > max(MIN_SNAPSHOT_BYTES, state.snapshot_bytes):
            # A new generation: the whole state in chunks, the old deltas and chunks gone.
            chunks = dump_chunks(join, SNAPSHOT_OPS)
            gen = state.generation + 1
            header: h.RawHeaders = [
                ("gen", str(gen).encode()),
                ("chunks", str(len(chunks)).encode()),
            ]
            for i, chunk in enumerate(chunks):
                out.produce(
                    topic, chunk, key=f"s/{i}".encode(), headers=header, partition=partition
                )
            for i in range(len(chunks), state.chunks):
                out.produce(topic, None, key=f"s/{i}".encode(), partition=partition)
            for key in state.deltas:
                out.produce(topic, None, key=key, partition=partition)
            state.generation, state.seq, state.chunks = gen, 0, len(chunks)
            state.snapshot_bytes, state.delta_bytes, state.deltas = sum(map(len, chunks)), 0, []
            return
        data = dump_ops(changes)
        key = f"d/{state.generation}/{state.seq}".encode()
        out.produce(topic, data, key=key, partition=partition)
        state.seq += 1
        state.delta_bytes += len(data)
        state.deltas.append(key)


def restore(
    settings: Settings, topic: str, partitions: list[int]
) -> dict[int, tuple[LabelJoin, _Log]]:
    """Partitions' join states from their changelog (read side by side): the latest complete
    snapshot, then the deltas of its generation in order.

    Each partition is read up to its high watermark as it is now, not to the first end of
    partition: a read_committed reader's end is the last stable offset, and a transaction's
    commit returns before its markers are written. A restore right after a commit (an abort
    of the next transaction, a new owner after a revocation) would otherwise miss that
    commit's changes, and the next delta would take its key (lost when compacted)."""
    consumer = new_reader(settings, "canary-joiner-restore", **{"enable.partition.eof": True})
    latest: dict[int, dict[bytes, tuple[bytes | None, dict[str, str]]]] = {
        p: {} for p in partitions
    }
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 120
        left = {p for p in partitions if ends[p] > 0}
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    p = msg.partition() or 0
                    if err.code() == KafkaError._PARTITION_EOF and (msg.offset() or 0) >= ends[p]:
                        left.discard(p)
                    continue
                headers = h.header_dict(h.as_list(msg.headers()))
                latest[msg.partition() or 0][msg.key() or b""] = (msg.value(), headers)
            positions = consumer.position([TopicPartition(topic, p) for p in left])
            left -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        if left:
            raise KafkaOperationError(
                "restore", "TIMED_OUT", f"{topic}{sorted(left)} not read within 120 s"
            )
    finally:
        consumer.close()
    return {p: _rebuild(latest[p], p) for p in partitions}


def _rebuild(
    latest: dict[bytes, tuple[bytes | None, dict[str, str]]], partition: int
) -> tuple[LabelJoin, _Log]:
    state = _Log()
    snapshot: list[bytes] = []
    chunks = {k: v for k, v in latest.items() if k.startswith(b"s/") and v[0] is not None}
    if chunks:
        gens = {int(h.get("gen", "0")) for _v, h in chunks.values()}
        gen = max(gens)
        count = {
            int(h.get("chunks", "0")) for _v, h in chunks.values() if int(h.get("gen", "0")) == gen
        }
        n = max(count) if count else 0
        ordered = [chunks.get(f"s/{i}".encode()) for i in range(n)]
        if all(c is not None and int(c[1].get("gen", "-1")) == gen for c in ordered):
            snapshot = [c[0] for c in ordered if c is not None and c[0] is not None]
            state.generation, state.chunks = gen, n
            state.snapshot_bytes = sum(map(len, snapshot))
        else:
            log.error(
                "label join snapshot of partition %d is incomplete; using deltas only", partition
            )
    join = LabelJoin()
    for chunk in snapshot:
        join.apply_changes(load_ops(chunk))
    prefix = f"d/{state.generation}/".encode()
    deltas = sorted(
        (int(k[len(prefix) :]), k, v[0])
        for k, v in latest.items()
        if k.startswith(prefix) and v[0] is not None
    )
    for seq, key, value in deltas:
        assert value is not None
        join.apply_changes(load_ops(value))
        state.seq = seq + 1
        state.delta_bytes += len(value)
        state.deltas.append(key)
    return join, state


def prediction_fields(codec: AvroCodec[Prediction], data: bytes) -> dict[str, Any]:
    """A prediction's fields, checked as :class:`Prediction` checks itself (identity fields
    set, a known arm, basis points, bucket, answers and window in range) without building
    the record: the joiner reads tens of thousands a second. Raises :class:`DecodeError`."""
    f = codec.decode_fields(data)
    if not (f["request_id"] and f["model"] and f["rollout_id"]):
        raise InvalidRecordError("Prediction identity fields must not be empty")
    if f["arm"] not in _ARMS:
        raise InvalidRecordError(f"Prediction.arm {f['arm']!r} is not a known arm")
    if not (
        0 <= f["weight_bp"] <= MAX_BP
        and 0 <= f["bucket"] < BUCKETS
        and f["answers"] >= 1
        and f["label_window_s"] >= 0
    ):
        raise InvalidRecordError("Prediction weight, bucket, answers or window out of range")
    return f


def feedback_fields(codec: AvroCodec[Feedback], data: bytes) -> dict[str, Any]:
    """A feedback record's fields, checked as :class:`Feedback` checks itself (identity fields
    set; a label, a value or attributes; a finite value; non-empty attribute keys; the
    timestamp was read by the codec). Raises :class:`DecodeError`."""
    f = codec.decode_fields(data)
    if not (f["request_id"] and f["model"]):
        raise InvalidRecordError("Feedback identity fields must not be empty")
    value, attributes = f.get("value"), f.get("attributes") or {}
    if value is not None and not math.isfinite(value):
        raise InvalidRecordError(f"Feedback.value must be finite, got {value!r}")
    if any(not k for k in attributes):
        raise InvalidRecordError("Feedback.attributes: every key must be a non-empty text")
    if not f["label"] and value is None and not attributes:
        raise InvalidRecordError("Feedback carries nothing: give a label, a value or attributes")
    return f
