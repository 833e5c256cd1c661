"""faust's aiokafka transport, reading ``read_committed``.

faust reads committed records only under its exactly-once processing guarantee; the
evaluator runs at-least-once (its state counts each evidence record once by itself, and its
checkpoints hold the offsets), yet it must never count evidence of a transaction that was
aborted. This transport is faust's own but for the worker consumer's isolation level and its
fetch sizes (:data:`FETCH_MIN_BYTES`), and a shorter way from each fetch to the agent (the
consumer's drain loop); the evaluator's broker URLs use its scheme, :data:`SCHEME`.
:class:`QuietMonitor` is the app's faust monitor.

>>> from faust.transport import by_url
>>> by_url(f"{SCHEME}://127.0.0.1:9092").__name__
'Transport'
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import Service

SCHEME = "canary-kafka"

#: The broker answers a fetch once it has this many bytes for it, or after
#: :data:`FETCH_MAX_WAIT_MS`. faust's default (1 byte) answered about every producer
#: transaction's one or two evidence messages with a fetch of its own, each waking faust's
#: consumer thread and event loop: at 5,000 requests/s (``canary bench pipeline``, about
#: 160 KB of evidence a second) that thread spent 0.025 CPU seconds per second. Most of a
#: fetch's cost is fixed (the request's send on the socket, the response's parsing in
#: Python, the hand-over to the event loop), so the fewer the better: decisions come once an
#: interval (1 s by default), and fetching every half interval at most keeps a decision's
#: evidence at most half an interval behind (at 5,000 requests/s: about 2.5 fetches a second
#: with these figures, 5 with 32 KiB and 250 ms, 2 instead of 4 idle).
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 500
#: Records handed on between two yields to the event loop (faust's figure).
YIELD_EVERY = 100


class ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts (not yet started here).
        consumer._isolation_level = "read_committed"
        # Fewer, larger fetches (see FETCH_MIN_BYTES).
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ReadCommittedThread:
        return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's loop from fetched records to the agent, without a race per record.

        faust awaits ``wait_first(callback(message), suspend_flow.wait())`` for every record:
        four tasks and an ``asyncio.wait`` per record, about as much CPU as the evaluator's
        own work on it. Here the callback is awaited directly. Nothing is lost by that: the
        records of one fetch stop as soon as the flow stops (faust's ``getmany`` checks), and
        a rebalance or shutdown stops the fetcher, which cancels this loop wherever it waits
        (faust's ``Fetcher.on_stop``), a callback waiting on the suspended flow included.
        The rest (read offsets, gaps, commits every ``broker_commit_every``) is faust's.
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                # faust sleeps here so that a loop of empty fetches still yields to the event
                # loop; a plain sleep(0) does that without a task of its own.
                await asyncio.sleep(0)
                if self.should_stop:
                    break
                async for tp, message in getmany(timeout=1.0):
                    num_since_yield += 1
                    if num_since_yield > YIELD_EVERY:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # read before (faust drops it too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await callback(message)
                    set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class QuietMonitor(Monitor):
    """faust's monitor without its per-record statistics (the app's ``Monitor``).

    faust's :class:`~faust.sensors.Monitor` counts and times every record and event for its
    web statistics page, which the evaluator does not serve (``web_enabled=False``; its own
    figures are Prometheus metrics), and samples them every second. This one keeps only what
    faust itself reads back: when a stream last took an event from a partition (its
    slow-processing warnings).
    """

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: Any, event: Any
    ) -> dict[str, Any] | None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        return None

    @Service.task
    async def _sampler(self) -> None:
        return None


class Transport(faust_aiokafka.Transport):
    Consumer = ReadCommittedConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
