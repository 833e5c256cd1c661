"""What a pre-flight reads back: the requests it replayed and each arm's answers to them (on the
pre-flight topics, marked with its id), the feedback recorded for those requests, and, when the
baseline is not replayed, the baseline's recorded answers. Every read is ``read_committed``
between offsets fixed when it starts, so it ends.

>>> # seen = Collector(settings, job); seen.poll(); seen.missing()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from confluent_kafka import Message

from model_canary.agents.audit.reader import Offsets, RangeReader
from model_canary.streams import headers as h
from model_canary.streams.codec.json_records import decode_record
from model_canary.streams.codec.results import decode_result
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import Arm, Feedback, InferenceResult, Preflight, epoch_ms
from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.preflight.judge import Answer
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


def answer_of(result: InferenceResult, batch: str = "") -> Answer:
    """A result as the judge reads it (``batch``: the worker micro-batch it came in)."""
    return Answer(
        result.request_id,
        result.version,
        result.error is not None,
        result.latency_ms,
        result.prediction,
        epoch_ms(result.created_at),
        result.routing_key,
        batch,
    )


class Collector:
    """Reads, as often as :meth:`poll` is called, the pre-flight's replayed requests (their ids,
    in replay order) and both arms' answers to them."""

    def __init__(self, settings: Settings, job: Preflight) -> None:
        self.job = job
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.reader = RangeReader(settings, f"canary-preflight-{job.preflight_id}")
        self.replayed: dict[str, int] = {}  # request id -> replay time (ms)
        self.candidate: dict[str, Answer] = {}
        self.baseline: dict[str, Answer] = {}
        self.refused = 0
        replayed = self.catalogue.preflight_requests(job.model, job.candidate_version)
        self._topics = [replayed, self.catalogue.preflight_results]
        self._positions: Offsets = {}

    def close(self) -> None:
        self.reader.close()

    def poll(self) -> None:
        """Read what was written since the last call."""
        ends = self.reader.ends(self._topics)
        starts = {tp: self._positions.get(tp, 0) for tp in ends}
        if not self._positions:
            starts = self.reader.starts(self._topics, None)
        self._positions = self.reader.read(starts, ends, self._handle)

    def _handle(self, msg: Message) -> None:
        meta = h.header_dict(h.as_list(msg.headers()))
        if meta.get(h.PREFLIGHT) != self.job.preflight_id:
            return
        if msg.topic() != self.catalogue.preflight_results:
            rid = meta.get(h.REQUEST_ID)
            if rid:
                self.replayed.setdefault(rid, msg.timestamp()[1])
            return
        try:
            result = decode_result(msg.value(), msg.headers())
        except DecodeError:
            self.refused += 1
            return
        answers = self.candidate if result.arm is Arm.CANARY else self.baseline
        answers.setdefault(result.request_id, answer_of(result, meta.get(h.PREFLIGHT_BATCH, "")))

    @property
    def order(self) -> list[str]:
        """The replayed requests' ids in the order they were replayed."""
        return sorted(self.replayed, key=lambda rid: (self.replayed[rid], rid))

    def missing(self, *, replayed_baseline: bool) -> int:
        """Answers still to come (one per arm replayed for every replayed request)."""
        arms = [self.candidate, self.baseline] if replayed_baseline else [self.candidate]
        return sum(1 for rid in self.replayed for answers in arms if rid not in answers)


def read_feedback(
    settings: Settings, since: datetime | None, wanted: Iterable[str], model: str
) -> dict[str, Outcome]:
    """The feedback recorded since ``since`` for the ``wanted`` requests of ``model`` (the
    newest per request wins; unreadable records are skipped)."""
    want = set(wanted)
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    out: dict[str, Outcome] = {}

    def take(msg: Message) -> None:
        content_type = h.header_dict(h.as_list(msg.headers())).get(h.CONTENT_TYPE)
        try:
            fb = decode_record(Feedback, msg.value(), content_type)
        except DecodeError:
            return
        if fb.request_id in want and fb.model == model:
            out[fb.request_id] = Outcome(fb.label, fb.value, dict(fb.attributes))

    _read_all(settings, catalogue.feedback, since, take)
    return out


def read_recorded(
    settings: Settings, since: datetime | None, wanted: Iterable[str], version: str
) -> dict[str, Answer]:
    """The answers ``version`` served, since ``since``, to the ``wanted`` requests."""
    want = set(wanted)
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    out: dict[str, Answer] = {}

    def take(msg: Message) -> None:
        try:
            result = decode_result(msg.value(), msg.headers())
        except DecodeError:
            return
        if result.request_id in want and result.version == version and result.served:
            out.setdefault(result.request_id, answer_of(result))

    _read_all(settings, catalogue.results, since, take)
    return out


def _read_all(
    settings: Settings, topic: str, since: datetime | None, take: Callable[[Message], None]
) -> None:
    reader = RangeReader(settings, "canary-preflight-read")
    try:
        ends = reader.ends([topic])
        reader.read(reader.starts([topic], since), ends, take)
    finally:
        reader.close()
