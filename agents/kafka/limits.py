"""How large a message each output topic accepts, so an agent can refuse an output it cannot
write before it writes anything (a failed write would abort the whole transaction).

The limit is the smaller of the producer's ``message.max.bytes`` (librdkafka: 1,000,000 bytes
unless configured) and the topic's ``max.message.bytes`` (Kafka: 1,048,588 unless configured),
read once per topic. A message's size is counted as Kafka does, roughly: value, key, headers and
a record's overhead.

>>> limits = OutputLimits(lambda topic: {"max.message.bytes": "2000"}, producer_max=1_000_000)
>>> limits.limit("t")
2000
>>> limits.size(b"x" * 100, b"key", [("h", b"v")]) < 2000
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from model_canary.streams.errors import CanaryError
from model_canary.streams.headers import RawHeaders

log = logging.getLogger(__name__)

#: librdkafka's default ``message.max.bytes``.
PRODUCER_DEFAULT_MAX = 1_000_000
#: Kafka's default ``max.message.bytes`` for a topic (``message.max.bytes`` of the broker).
TOPIC_DEFAULT_MAX = 1_048_588
#: A record's framing in a batch (batch header, varints, attributes), counted generously.
RECORD_OVERHEAD = 128


class OutputLimits:
    """``limit(topic)``: the largest message (in bytes, as :meth:`size` counts) ``topic`` takes.

    ``describe`` returns a topic's configuration; it is called once per topic (lazily, so an
    agent connects when it first writes) and, if it fails, the Kafka default is assumed.
    """

    def __init__(
        self,
        describe: Callable[[str], Mapping[str, str]],
        producer_max: int = PRODUCER_DEFAULT_MAX,
    ) -> None:
        self._describe = describe
        self._producer_max = producer_max
        self._limits: dict[str, int] = {}

    def limit(self, topic: str) -> int:
        cached = self._limits.get(topic)
        if cached is None:
            topic_max = TOPIC_DEFAULT_MAX
            try:
                topic_max = int(self._describe(topic).get("max.message.bytes", TOPIC_DEFAULT_MAX))
            except (CanaryError, ValueError) as exc:
                log.warning(
                    "max.message.bytes of %s unknown (%s): assuming %d", topic, exc, topic_max
                )
            cached = self._limits[topic] = min(self._producer_max, topic_max)
        return cached

    @staticmethod
    def size(value: bytes | None, key: bytes | None, headers: RawHeaders | None) -> int:
        """The bytes a message takes in a record batch (an upper estimate)."""
        total = RECORD_OVERHEAD + len(value or b"") + len(key or b"")
        for name, raw in headers or ():
            total += 8 + len(name) + (len(raw) if raw is not None else 0)
        return total

    def check(
        self, topic: str, value: bytes | None, key: bytes | None, headers: RawHeaders | None
    ) -> str | None:
        """``None`` when the message fits ``topic``, else why not (for the refusal)."""
        size = self.size(value, key, headers)
        limit = self.limit(topic)
        if size <= limit:
            return None
        return f"a message of {size} bytes exceeds the {limit}-byte limit of {topic}"
