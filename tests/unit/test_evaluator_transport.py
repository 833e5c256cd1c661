"""The evaluator's faust transport: its drain loop and its quiet monitor, without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from model_canary.agents.evaluator.transport import QuietMonitor, ReadCommittedConsumer

TOPIC = "p.evidence"


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


def _consumer(
    batches: list[list[tuple[TP, int]]], read_offsets: dict[TP, int | None]
) -> tuple[Any, Any, list[tuple[TP, int]]]:
    """A stand-in for faust's consumer (what the drain loop reads of it), a fetcher that stops
    once every batch is fetched, and the list the callback fills."""
    delivered: list[tuple[TP, int]] = []
    fetcher = SimpleNamespace(_stopped=_Flag())
    pending = list(batches)

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        batch = pending.pop(0) if pending else []
        if not pending:
            fetcher._stopped.value = True
        for tp, offset in batch:
            yield tp, SimpleNamespace(tp=tp, topic=tp.topic, offset=offset)

    async def callback(message: Any) -> None:
        delivered.append((message.tp, message.offset))

    consumer = SimpleNamespace(
        callback=callback,
        getmany=getmany,
        _stopped=_Flag(),
        _read_offset=read_offsets,
        diag=SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None),
        _commit_every=None,
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: False)),
        should_stop=False,
        consumer_stopped_errors=(),
        transport=SimpleNamespace(app=SimpleNamespace(should_stop=False)),
    )
    return consumer, fetcher, delivered


def test_drain_delivers_each_fetch_in_order_and_skips_what_was_read() -> None:
    tp0, tp1 = TP(TOPIC, 0), TP(TOPIC, 1)
    read: dict[TP, int | None] = {tp0: 5, tp1: None}
    batches = [[(tp0, 4), (tp0, 5), (tp1, 0), (tp0, 6)], [(tp1, 1), (tp0, 3), (tp0, 9)]]
    consumer, fetcher, delivered = _consumer(batches, read)

    asyncio.run(ReadCommittedConsumer._drain_messages(consumer, fetcher))

    # Offsets below the read offset (4, then 3 once 6 was read) are not handed on again.
    assert delivered == [(tp0, 5), (tp1, 0), (tp0, 6), (tp1, 1), (tp0, 9)]
    assert read == {tp0: 9, tp1: 1}


def test_drain_ends_when_the_consumer_stops() -> None:
    tp0 = TP(TOPIC, 0)
    consumer, fetcher, delivered = _consumer([[(tp0, 0)], [(tp0, 1)]], {tp0: None})
    consumer._stopped.value = True

    asyncio.run(ReadCommittedConsumer._drain_messages(consumer, fetcher))

    assert delivered == []


def test_quiet_monitor_keeps_only_the_stream_inbound_time() -> None:
    monitor = QuietMonitor()
    tp = TP(TOPIC, 0)
    message: Any = SimpleNamespace(tp=tp, offset=1)

    monitor.on_message_in(tp, 1, message)
    state = monitor.on_stream_event_in(tp, 1, SimpleNamespace(), SimpleNamespace())
    monitor.on_stream_event_out(tp, 1, SimpleNamespace(), SimpleNamespace(), state)
    monitor.on_message_out(tp, 1, message)

    assert state is None
    assert tp in monitor.stream_inbound_time  # faust's slow-processing warnings read it
    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0
