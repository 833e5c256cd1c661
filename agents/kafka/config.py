"""librdkafka configuration for each kind of client.

Order of precedence: project defaults < the user's pass-through settings (``extra_config``:
SASL, TLS, tuning) < what a client cannot work without (group id, transactional id).

Every client logs through Python logging, rate limited (see
:mod:`model_canary.agents.kafka.client_log`): librdkafka's ``logger`` and ``error_cb`` are set
here and nowhere else.

>>> config = base_config(Settings(bootstrap="k:9092"), "canary-doc")
>>> config["logger"] is CLIENT_LOG, config["error_cb"] is on_error
(True, True)
"""

from __future__ import annotations

from typing import Any

from model_canary.agents.kafka.client_log import CLIENT_LOG, on_error
from model_canary.streams.settings import Settings

#: How soon a transactional producer retries a request the coordinator refused as concurrent.
TXN_RETRY_BACKOFF_MS = 1
#: The longest a transactional producer waits before retrying a request: librdkafka doubles
#: the wait at each retry of the same request (1, 2, 4, ... ms), up to 1 s by default.
TXN_RETRY_BACKOFF_MAX_MS = 20


def base_config(settings: Settings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "logger": CLIENT_LOG,
        "error_cb": on_error,
        # Small requests (a transaction's offsets and commit, a fetch) go out at once instead
        # of waiting for the previous one's acknowledgement (Nagle): Java clients do the same.
        "socket.nagle.disable": True,
        **settings.extra_config,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return base_config(settings, "canary-admin")


def producer_config(
    settings: Settings,
    client_id: str,
    *,
    transactional_id: str | None = None,
    **required: Any,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        # How long a message waits for others to be sent with (CANARY_LATENCY).
        "linger.ms": settings.profile.linger_ms,
        "enable.idempotence": True,
        "acks": "all",
        # murmur2 puts a key on the same partition as Java clients do.
        "partitioner": "murmur2_random",
    }
    if transactional_id:
        # A transaction begun right after the previous one committed is refused with
        # CONCURRENT_TRANSACTIONS until the coordinator has written the previous one's markers
        # (a few ms); the client retries after retry.backoff.ms, 100 ms by default, which
        # would make every back-to-back transaction last 100 ms (KAFKA-5477).
        config["retry.backoff.ms"] = TXN_RETRY_BACKOFF_MS
        # The coordinator keeps refusing (AddOffsetsToTxn, EndTxn) for as long as the previous
        # transaction's markers take; with the wait doubling up to 1 s, a refusal lasting T ms
        # is retried up to ~2T ms after it began (a broker pause of 60 ms costs the commit up
        # to 128). Capped, a retry comes at most this long after the refusals end.
        config["retry.backoff.max.ms"] = TXN_RETRY_BACKOFF_MAX_MS
    config.update(base_config(settings, client_id))
    if transactional_id:
        config["transactional.id"] = transactional_id
    config.update(required)
    return config


def consumer_config(
    settings: Settings,
    client_id: str,
    group_id: str,
    **required: Any,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        # How long the broker holds a fetch with nothing to return (CANARY_LATENCY); new
        # data, or a transaction committing, answers it at once.
        "fetch.wait.max.ms": settings.profile.fetch_wait_ms,
    }
    config.update(base_config(settings, client_id))
    config["group.id"] = group_id
    config.update(required)
    return config


def reader_config(settings: Settings, client_id: str, **required: Any) -> dict[str, Any]:
    """A consumer that is assigned partitions and never commits (tails, state views, audits):
    librdkafka still wants a group id, so it gets a placeholder no one joins.

    >>> reader_config(Settings(bootstrap="k:9092"), "tail")["group.id"]
    'tail-unused'
    """
    return consumer_config(settings, client_id, f"{client_id}-unused", **required)
