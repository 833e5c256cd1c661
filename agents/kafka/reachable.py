"""Is Kafka there? Wait for it with backoff, saying once in a while why not.

Agents call :func:`wait_for_kafka` before their first client is made, so one started before
its broker logs one clear line every :data:`SAY_EVERY_S` seconds and serves as soon as the
broker answers; CLI commands call it with a timeout and fail with one line. A probe first
tries a TCP connection to each bootstrap server (quiet, cheap, and it tells "connection
refused" from "host not found"), then a metadata request, which also exercises TLS and SASL:
credentials or certificates the cluster refuses end the wait at once, since retrying cannot
fix them.

>>> parse_bootstrap("kafka-1:9093, SASL_SSL://kafka-2:9093,[::1]:9092")
[('kafka-1', 9093), ('kafka-2', 9093), ('::1', 9092)]
>>> describe_errno(111)
'connection refused'
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from model_canary.agents.kafka.config import admin_config
from model_canary.streams.errors import ConfigError, KafkaUnavailableError
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

HINT = "start one with 'canary broker start'"
SAY_EVERY_S = 10.0
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0
CONNECT_TIMEOUT_S = 2.0

# Errors a retry cannot fix: the cluster is there but refuses these credentials or this TLS.
_REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


@dataclass(frozen=True, slots=True)
class Probe:
    """One look at the cluster: ``reason`` is ``None`` when it answered, else why not;
    ``refused`` when it refused the client (TLS or authentication), which waiting cannot fix."""

    reason: str | None
    refused: bool = False

    @property
    def up(self) -> bool:
        return self.reason is None


def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a ``bootstrap.servers`` list (see the module example)."""
    out: list[tuple[str, int]] = []
    for item in servers.split(","):
        item = item.strip().rpartition("://")[2]
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"bootstrap server {item!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ConfigError("no bootstrap server given")
    return out


def describe_errno(number: int | None) -> str:
    """A few words for a socket error number."""
    words = {
        errno.ECONNREFUSED: "connection refused",
        errno.ETIMEDOUT: "timed out",
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
    }
    if number in words:
        return words[number]
    return errno.errorcode.get(number or 0, "connection failed").lower()


def _tcp(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return "host not found"
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return describe_errno(exc.errno)


def probe(settings: Settings, timeout: float = CONNECT_TIMEOUT_S) -> Probe:
    """Look at the cluster once (see the module docs)."""
    servers = parse_bootstrap(settings.bootstrap_servers)
    failures = [(f"{h}:{p}", _tcp(h, p, timeout)) for h, p in servers]
    if all(reason is not None for _, reason in failures):
        reasons = {reason for _, reason in failures}
        if len(reasons) == 1:
            return Probe(reasons.pop())
        return Probe("; ".join(f"{server} {reason}" for server, reason in failures))
    return _metadata(settings, max(timeout, 5.0))


def _metadata(settings: Settings, timeout: float) -> Probe:
    errors: list[KafkaError] = []
    lines = _Collect()
    config = admin_config(settings)
    # This client's own trouble is the answer, not something to log.
    config["error_cb"] = errors.append
    config["logger"] = lines
    try:
        client = AdminClient(config)
    except KafkaException as exc:
        raise ConfigError(f"invalid Kafka client settings: {_text(exc)}") from None
    try:
        md = client.list_topics(timeout=timeout)
        if md.brokers:
            return Probe(None)
        reason = "no broker in the metadata answer"
    except KafkaException as exc:
        reason = f"no answer to a metadata request ({_text(exc)})"
    client.poll(0)  # serve the callbacks
    for error in errors:
        if error.code() in _REFUSALS or error.fatal():
            return Probe(f"{error.name()}: {error.str()}", refused=True)
    if any("APIVERSION_QUERY" in line for line in lines.lines):
        # A plaintext client of a TLS listener only sees the connection close on its first
        # request (which a broker that is still starting does not do).
        reason = (
            "the broker closes the connection at the first request: does security.protocol "
            "match its listener (SSL, SASL_SSL, SASL_PLAINTEXT)?"
        )
    return Probe(reason)


class _Collect:
    """A probe's librdkafka log: kept to find the reason in, logged in debug only."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: int, msg: str, *args: object) -> None:
        text = msg % args if args else msg
        if len(self.lines) < 100:
            self.lines.append(text)
        log.debug("%s", text)


def _text(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return f"{err.name()}: {err.str()}" if isinstance(err, KafkaError) else str(exc)


def wait_for_kafka(
    settings: Settings,
    *,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> bool:
    """Return ``True`` once the cluster answers, probing with backoff (0.25 s doubling to 2 s).

    Says why it waits at the first failed probe, then at most once every
    :data:`SAY_EVERY_S` seconds (``say`` defaults to this module's logger at WARNING). Returns
    ``False`` if ``stop`` is set first. Raises :class:`KafkaUnavailableError` when ``timeout``
    passes, or at once when the cluster refuses the client's TLS or credentials.
    """
    say = say or (lambda line: log.warning("%s", line))
    where = settings.bootstrap_servers
    began = time.monotonic()
    delay = FIRST_DELAY_S
    said_at: float | None = None
    while True:
        left = None if timeout is None else began + timeout - time.monotonic()
        result = probe(settings, CONNECT_TIMEOUT_S if left is None else max(0.1, min(left, 2.0)))
        if result.up:
            if said_at is not None:
                log.info("Kafka at %s answers after %.0fs", where, time.monotonic() - began)
            return True
        if result.refused:
            raise KafkaUnavailableError(
                f"Kafka at {where} refused this client ({result.reason}): check the "
                "CANARY_KAFKA_* security settings (security.protocol, sasl.*, ssl.*)"
            )
        now = time.monotonic()
        if timeout is not None and now - began >= timeout:
            raise KafkaUnavailableError(
                f"Kafka at {where} is not reachable ({result.reason}) after {timeout:g}s; {HINT}"
            )
        if said_at is None or now - said_at >= SAY_EVERY_S:
            waited = f", {now - began:.0f}s so far" if said_at is not None else ""
            say(f"waiting for Kafka at {where} ({result.reason}){waited}; {HINT}")
            said_at = now
        pause = delay if left is None else min(delay, max(0.0, left))
        if stop is not None:
            if stop.wait(pause):
                return False
        else:
            time.sleep(pause)
        delay = min(delay * 2, MAX_DELAY_S)


def wait_for_kafka_or_signal(settings: Settings) -> bool:
    """:func:`wait_for_kafka` until the cluster answers (``True``) or SIGTERM/SIGINT arrives
    (``False``), for a launcher whose own signal handling starts later (the evaluator's faust
    worker); the previous handlers are back in place on return."""
    stop = threading.Event()

    def _set(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _set) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return wait_for_kafka(settings, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
