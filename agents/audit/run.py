"""``audit(settings)``: the end-to-end accounting of the requests, results and dead-letter
topics, read with isolation.level=read_committed up to their ends as of the start."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from confluent_kafka import Message

from model_canary.agents.audit.reader import RangeReader
from model_canary.streams import headers as h
from model_canary.streams.accounting import AccountingReport, Ledger, position_id, request_id_of
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.codec.results import decode_result
from model_canary.streams.errors import DecodeError
from model_canary.streams.messages import InferenceResult
from model_canary.streams.route_header import is_shadow_copy
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

# Requests this long before --since are read too, so their answers (written after --since)
# are not taken for results with no request.
EARLIER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The accounting of one audit, and what it covered.

    >>> # report = audit(Settings.from_env(), since=utc_now() - timedelta(minutes=10))
    >>> # report.ok, report.lost, report.duplicated
    """

    accounting: AccountingReport
    since: datetime | None
    other_dead_letters: int
    seconds: float

    @property
    def lost(self) -> int:
        return len(self.accounting.missing)

    @property
    def duplicated(self) -> int:
        return len(self.accounting.duplicated)

    @property
    def ok(self) -> bool:
        return self.accounting.ok

    def to_dict(self, max_ids: int = 20) -> dict[str, Any]:
        return {
            **self.accounting.to_dict(max_ids),
            "other_dead_letters": self.other_dead_letters,
            "since": self.since.isoformat() if self.since else None,
            "seconds": round(self.seconds, 2),
        }


class _Accountant:
    """Turns messages of the three topics into ledger entries."""

    def __init__(self, catalogue: TopicCatalogue, max_bytes: int, since_ms: int | None) -> None:
        self.ledger = Ledger()
        self.requests_topic = catalogue.requests
        self.max_bytes = max_bytes
        self.since_ms = since_ms
        self.codec = codec_for(InferenceResult)
        self.other_dead_letters = 0
        # Once the snapshot is accounted, only answers to these ids are taken.
        self.only: set[str] | None = None

    def request(self, msg: Message) -> None:
        rid = request_id_of(msg.value(), h.as_list(msg.headers()), self.max_bytes) or position_id(
            msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        )
        if self.since_ms is not None and msg.timestamp()[1] < self.since_ms:
            self.ledger.earlier(rid)
        else:
            self.ledger.request(rid)

    def result(self, msg: Message) -> None:
        try:
            result = decode_result(msg.value(), msg.headers())
        except DecodeError:
            if self.only is None:
                self.ledger.unreadable_result()
            return
        if self.only is None or result.request_id in self.only:
            repeatable = h.header_dict(h.as_list(msg.headers())).get(h.DELIVERY) == (
                h.AT_LEAST_ONCE.decode()
            )
            self.ledger.result(
                result.request_id,
                served=result.served,
                repeatable=repeatable,
                error_type=(result.error_type or "error") if result.error else None,
            )

    def dead_letter(self, msg: Message) -> None:
        meta = h.header_dict(h.as_list(msg.headers()))
        source = meta.get(h.DLQ_TOPIC, "")
        if source != self.requests_topic and not source.startswith(f"{self.requests_topic}."):
            if self.only is None:
                self.other_dead_letters += 1
            return
        rid = request_id_of(msg.value(), h.as_list(msg.headers()), self.max_bytes)
        if rid is None and source == self.requests_topic:
            rid = position_id(source, _int(meta.get(h.DLQ_PARTITION)), _int(meta.get(h.DLQ_OFFSET)))
        if self.only is None or rid in self.only:
            reason = meta.get(h.DLQ_REASON, "unknown")
            self.ledger.dead_letter(rid, reason, shadow=is_shadow_copy(meta))


def audit(settings: Settings, since: datetime | None = None, timeout: float = 30.0) -> AuditReport:
    """Account for every request written since ``since`` (all of them if ``None``).

    The three topics are read up to their ends as of the call. Requests still unanswered
    then may be in flight: for up to ``timeout`` seconds more, answers to them are awaited.

    >>> # report = audit(Settings.from_env()); print(report.to_dict()["lost"])
    """
    began = time.monotonic()
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    since_ms = int(since.timestamp() * 1000) if since else None
    accountant = _Accountant(catalogue, settings.max_request_bytes, since_ms)
    answers = [catalogue.results, catalogue.shadow_results, catalogue.dead_letters]
    reader = RangeReader(settings)
    try:
        ends = reader.ends([catalogue.requests, *answers])
        earlier = since - EARLIER if since else None
        reader.read(reader.starts([catalogue.requests], earlier), ends, accountant.request)
        starts = reader.starts(answers, since)
        left = reader.read(starts, ends, lambda m: _answer(accountant, catalogue, m))
        report = accountant.ledger.report()
        deadline = time.monotonic() + timeout
        while report.missing and time.monotonic() < deadline:
            time.sleep(0.5)
            accountant.only = set(report.missing)
            left = reader.read(
                left, reader.ends(answers), lambda m: _answer(accountant, catalogue, m)
            )
            report = accountant.ledger.report()
    finally:
        reader.close()
    return AuditReport(report, since, accountant.other_dead_letters, time.monotonic() - began)


def _answer(accountant: _Accountant, catalogue: TopicCatalogue, msg: Message) -> None:
    if msg.topic() in (catalogue.results, catalogue.shadow_results):
        accountant.result(msg)
    else:
        accountant.dead_letter(msg)


def _int(raw: str | None) -> int:
    try:
        return int(raw or "-1")
    except ValueError:
        return -1
