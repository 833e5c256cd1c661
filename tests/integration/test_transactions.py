"""Transactions work on the single-node broker: read_committed sees exactly what committed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from tests.integration.conftest import consume_n

pytestmark = pytest.mark.integration


def test_read_committed_sees_only_committed_messages(
    make_topic: Callable[..., str],
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
    unique: str,
) -> None:
    topic = make_topic(partitions=2)
    producer = make_producer(transactional_id=f"tx-{unique}")
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(50):
        producer.produce(topic, key=str(i).encode(), value=f"committed-{i}".encode())
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i in range(30):
        producer.produce(topic, key=str(i).encode(), value=f"aborted-{i}".encode())
    producer.flush(10)
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"last", value=b"committed-last")
    producer.commit_transaction(30)

    committed = make_consumer(topic, **{"isolation.level": "read_committed"})
    seen = [m.value() or b"" for m in consume_n(committed, 51, timeout=30)]
    assert sorted(seen) == sorted(
        [f"committed-{i}".encode() for i in range(50)] + [b"committed-last"]
    )
    # Nothing else arrives: the aborted batch stays invisible.
    assert consume_n(committed, 1, timeout=2) == []

    uncommitted = make_consumer(topic, **{"isolation.level": "read_uncommitted"})
    everything = [m.value() or b"" for m in consume_n(uncommitted, 81, timeout=30)]
    assert sum(v.startswith(b"aborted-") for v in everything) == 30
