"""Waiting for Kafka and librdkafka's log, with no broker at all: a closed port on loopback."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from confluent_kafka import Consumer

from model_canary.agents.kafka.client_log import LOGGER_NAME, RateLimiter
from model_canary.agents.kafka.config import consumer_config
from model_canary.agents.kafka.reachable import HINT, parse_bootstrap, probe, wait_for_kafka
from model_canary.streams.errors import ConfigError, KafkaUnavailableError
from model_canary.streams.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_rate_limiter_admits_one_per_interval_and_counts_the_rest() -> None:
    limiter = RateLimiter(interval_s=5.0)
    admitted = [limiter.admit("FAIL", now=t / 10) for t in range(0, 120)]  # 12 s, every 0.1 s
    assert [n for n in admitted if n is not None] == [0, 49, 49]
    assert limiter.admit("ERROR", now=11.95) == 0  # another kind has its own budget


def test_parse_bootstrap_refuses_what_is_not_host_port() -> None:
    assert parse_bootstrap("a:1,b:2") == [("a", 1), ("b", 2)]
    with pytest.raises(ConfigError):
        parse_bootstrap("kafka-without-port")


def test_probe_names_the_reason() -> None:
    assert probe(Settings(bootstrap=f"127.0.0.1:{_closed_port()}")).reason == "connection refused"
    assert probe(Settings(bootstrap="no-such-host.invalid:9092")).reason == "host not found"


def test_a_command_gives_up_after_its_timeout_with_the_hint() -> None:
    settings = Settings(bootstrap=f"127.0.0.1:{_closed_port()}")
    said: list[str] = []
    began = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as failure:
        wait_for_kafka(settings, timeout=1.5, say=said.append)
    assert time.monotonic() - began >= 1.5
    assert "connection refused" in str(failure.value) and HINT in str(failure.value)
    assert len(said) == 1 and said[0].startswith(f"waiting for Kafka at {settings.bootstrap}")


def test_an_agent_waits_until_stopped() -> None:
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    assert not wait_for_kafka(Settings(bootstrap=f"127.0.0.1:{_closed_port()}"), stop=stop)


def test_a_client_without_its_broker_logs_a_few_lines_not_hundreds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(bootstrap=f"127.0.0.1:{_closed_port()}")
    consumer = Consumer(consumer_config(settings, "test-noisy", "test-noisy"))
    consumer.subscribe(["nothing"])
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            consumer.consume(10, timeout=0.2)
    consumer.close()
    lines = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno >= logging.INFO]
    # librdkafka retries the connection every ~100 ms: dozens of failures in 6 s, one line
    # per kind every 10 s.
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]
    assert "Connection refused" in lines[0].getMessage()
