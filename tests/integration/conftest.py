"""Fixtures for tests against a real Apache Kafka broker.

The broker is session-scoped: ``CANARY_TEST_BOOTSTRAP`` names a running one (``scripts/test``
starts it); otherwise the session starts a local broker on port 19092 under ``.canary-test/``
and stops it at the end. Each test gets its own topic prefix and consumer groups.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer

from agents.broker import LocalBroker
from agents.kafka.admin import Admin
from agents.kafka.config import consumer_config, producer_config
from streams.settings import Settings
from streams.topics import TopicCatalogue

ROOT = Path(__file__).resolve().parents[2]
TEST_PORT = int(os.environ.get("CANARY_TEST_PORT", "19092"))


@pytest.fixture(scope="session")
def broker_settings() -> Iterator[Settings]:
    bootstrap = os.environ.get("CANARY_TEST_BOOTSTRAP")
    if bootstrap:
        yield Settings.from_env(bootstrap=bootstrap)
        return
    local = Settings.from_env(broker_port=TEST_PORT, state_dir=ROOT / ".canary-test")
    broker = LocalBroker(local)
    started = broker.pid() is None
    broker.start()
    try:
        yield local.with_overrides(bootstrap=broker.bootstrap)
    finally:
        if started:
            broker.stop()


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topic prefixes and consumer groups."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(broker_settings: Settings, unique: str) -> Settings:
    """Settings with a topic prefix of this test's own."""
    return broker_settings.with_overrides(topic_prefix=f"t{unique}", partitions=3)


@pytest.fixture
def catalogue(settings: Settings) -> TopicCatalogue:
    return TopicCatalogue(settings.topic_prefix, settings.partitions)


@pytest.fixture
def admin(settings: Settings) -> Admin:
    return Admin(settings)


@pytest.fixture
def make_topic(admin: Admin, settings: Settings, unique: str) -> Callable[..., str]:
    """Factory: create a topic named after this test and return its name."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, partitions: int = 1, **config: str) -> str:
        from streams.topics import TopicSpec

        topic = name or f"{settings.topic_prefix}.topic{next(counter)}"
        admin.ensure_topics([TopicSpec(topic, partitions, config)])
        return topic

    return make


@pytest.fixture
def make_producer(settings: Settings) -> Iterator[Callable[..., Producer]]:
    """Factory: a confluent-kafka producer on the test broker (flushed at teardown)."""
    made: list[Producer] = []

    def make(**config: Any) -> Producer:
        producer = Producer(producer_config(settings, "test-producer", **config))
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.flush(10)


@pytest.fixture
def make_consumer(settings: Settings, unique: str) -> Iterator[Callable[..., Consumer]]:
    """Factory: a consumer in a consumer group unique to this test (closed at teardown)."""
    made: list[Consumer] = []

    def make(*topics: str, group: str | None = None, **config: Any) -> Consumer:
        consumer = Consumer(
            consumer_config(settings, "test-consumer", group or f"g-{unique}-{len(made)}", **config)
        )
        if topics:
            consumer.subscribe(list(topics))
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def consume_n(consumer: Consumer, n: int, timeout: float = 20.0) -> list[Message]:
    """Read until ``n`` messages arrived or ``timeout`` passed; returns what arrived."""
    import time

    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=min(500, n - len(out)), timeout=0.5):
            if msg.error() is None:
                out.append(msg)
    return out
