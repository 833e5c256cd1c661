"""faust's aiokafka transport, reading ``read_committed``.

faust reads committed records only under its exactly-once processing guarantee; the
evaluator runs at-least-once (its state counts each evidence record once by itself, and its
checkpoints hold the offsets), yet it must never count evidence of a transaction that was
aborted. This transport is faust's own but for the worker consumer's isolation level and its
fetch sizes (:data:`FETCH_MIN_BYTES`); the evaluator's broker URLs use its scheme,
:data:`SCHEME`.

>>> from faust.transport import by_url
>>> by_url(f"{SCHEME}://127.0.0.1:9092").__name__
'Transport'
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "canary-kafka"

#: The broker answers a fetch once it has this many bytes for it, or after
#: :data:`FETCH_MAX_WAIT_MS`. faust's default (1 byte) answered about every producer
#: transaction's one or two evidence messages with a fetch of its own, each waking faust's
#: consumer thread and event loop: at 5,000 requests/s (``canary bench pipeline``) that
#: thread spent 0.025 CPU seconds per second, 0.007 with these (and 0.004 instead of 0.003
#: idle). A decision waits at most a quarter of a second longer for its evidence.
FETCH_MIN_BYTES = 32 * 1024
FETCH_MAX_WAIT_MS = 250


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


class Transport(faust_aiokafka.Transport):
    Consumer = ReadCommittedConsumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
