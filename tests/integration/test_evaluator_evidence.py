"""The evaluator counts committed evidence only (faust reads uncommitted records unless it runs
exactly-once; the evaluator's transport reads read_committed), written as records alone or as
evidence sets (``CANARY_EVIDENCE_FORMAT=sets``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.kafka.clients import new_producer
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.messages import OffsetRange, RolloutState
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent

pytestmark = pytest.mark.integration
#: A baseline bucket at 50% (the canary's are those below 5000).
BUCKET = 9001


class _Producer:
    """A worker's evidence, written by hand in transactions that commit or abort."""

    def __init__(self, settings: Settings, rollout_id: str, *, sets: bool = False) -> None:
        self.topic = TopicCatalogue(settings.topic_prefix).evidence
        self.rollout_id = rollout_id
        self.producer = new_producer(settings, "test-evidence", transactional_id="test-ev-1")
        self.producer.init_transactions(30)
        self.sets = sets
        self.offset = 0

    def transaction(self, n: int, *, commit: bool, second: int) -> None:
        routed = EvidenceBuilder("routed", source="test-router")
        served = EvidenceBuilder("served", source="test-worker")
        routed.add_routed(
            Cell("iris", self.rollout_id, "", "baseline", True, 5000, second), [BUCKET] * n
        )
        cell = Cell("iris", self.rollout_id, "v1", "baseline", True, 5000, second)
        served.add_batch(
            [cell] * n,
            buckets=[BUCKET] * n,
            errors=[False] * n,
            latencies_ms=[1.0] * n,
            batch_latency_ms=1.0,
        )
        span = OffsetRange(topic="in", partition=0, first=self.offset, last=self.offset + n - 1)
        self.offset += n + 1
        self.producer.begin_transaction()
        records = routed.build((span,)) + served.build((span,))
        for key, value in encode_evidence(records, sets=self.sets):
            self.producer.produce(self.topic, value, key=key)
        if commit:
            self.producer.commit_transaction(30)
        else:
            self.producer.flush(30)  # written to the log, then aborted
            self.producer.abort_transaction(30)


def _counted(port: int) -> float:
    got = scrape(port) or {}
    return total(got, "canary_evaluated_requests", having='metric="errors"')


def _wait_counted(port: int, n: float, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _counted(port) >= n:
            time.sleep(3.0)  # anything more would show now
            return _counted(port)
        time.sleep(0.2)
    raise AssertionError(f"counted {_counted(port)} of {n}")


@pytest.mark.parametrize("sets", [False, True], ids=["records", "sets"])
def test_evidence_of_an_aborted_transaction_never_counts(
    sets: bool,
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_rollout: Callable[..., RolloutState],
) -> None:
    rollout_id = start_rollout("iris", {"errors": {}}, control=False).rollout_id
    port = free_port()
    spawn("evaluator", "--metrics-port", str(port), "--no-joiner")
    writer = _Producer(settings, rollout_id, sets=sets)
    now = int(time.time())
    writer.transaction(100, commit=True, second=now)
    writer.transaction(500, commit=False, second=now)
    writer.transaction(50, commit=True, second=now + 1)
    assert _wait_counted(port, 150) == 150
