"""librdkafka's own log and error reports, through Python logging and rate limited.

Without a ``logger``, librdkafka writes every connection failure to stderr from its own
threads: a client whose broker is down prints a line per reconnect attempt (hundreds a
minute). Every client of the project gets :data:`CLIENT_LOG` as its ``logger`` and
:func:`on_error` as its ``error_cb`` (see :mod:`model_canary.agents.kafka.config`), so those
lines go to the ``model_canary.agents.kafka.librdkafka`` logger, at most one per kind (level
and facility, or error code) every :data:`INTERVAL_S` seconds, with the number of similar
lines left out since the last one.

>>> limiter = RateLimiter(interval_s=10.0)
>>> limiter.admit("FAIL", now=100.0), limiter.admit("FAIL", now=101.0)
(0, None)
>>> limiter.admit("FAIL", now=111.0)   # admitted again, one similar line was left out
1
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError

__all__ = ["CLIENT_LOG", "INTERVAL_S", "ClientLog", "RateLimiter", "on_error"]

INTERVAL_S = 10.0
LOGGER_NAME = "model_canary.agents.kafka.librdkafka"

# Connection trouble librdkafka also reports through its log (the FAIL line): the error
# callback's copy only repeats it.
_ECHOES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


class RateLimiter:
    """Admits one event per key every ``interval_s`` seconds (see the module example).

    :meth:`admit` returns ``None`` for an event to leave out, else how many events of that key
    were left out since the last admitted one. Thread-safe: librdkafka's callbacks run in
    whichever thread polls the client.
    """

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[object, tuple[float, int]] = {}

    def admit(self, key: object, now: float) -> int | None:
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval_s:
                self._last[key] = (last[0], last[1] + 1)
                return None
            if len(self._last) > 1000:  # keys are few (levels, facilities, codes); stay bounded
                self._last.clear()
            self._last[key] = (now, 0)
            return 0 if last is None else last[1]


class ClientLog:
    """What librdkafka calls as its ``logger``: an object with a ``log(level, msg, *args)``
    method (confluent-kafka passes the facility, the client's name and the text as args)."""

    def __init__(self, logger: logging.Logger, limiter: RateLimiter) -> None:
        self.logger = logger
        self.limiter = limiter

    def log(self, level: int, msg: str, *args: object) -> None:
        facility = args[0] if args else msg
        self.emit(level, (level, facility), msg % args if args else msg)

    def emit(self, level: int, key: object, text: str) -> None:
        if not self.logger.isEnabledFor(level):
            return
        left_out = self.limiter.admit(key, time.monotonic())
        if left_out is None:
            return
        if left_out:
            text += f" ({left_out} similar left out since the last one)"
        self.logger.log(level, "%s", text)


CLIENT_LOG = ClientLog(logging.getLogger(LOGGER_NAME), RateLimiter())


def on_error(error: KafkaError) -> None:
    """librdkafka's ``error_cb``: a fatal error is logged every time, the rest rate limited;
    connection failures, which the client's log already reports, only in debug logging."""
    code = error.code()
    if error.fatal():
        CLIENT_LOG.logger.error("fatal Kafka client error: %s: %s", error.name(), error.str())
        return
    level = logging.DEBUG if code in _ECHOES else logging.WARNING
    CLIENT_LOG.emit(level, ("error", code), f"Kafka client error: {error.name()}: {error.str()}")
