"""A worker frozen (SIGSTOP) past its transaction timeout and its session timeout loses
nothing, duplicates nothing and goes on serving, whichever of its two legitimate failures it
meets on SIGCONT:

* fenced: the broker aborted its transaction and bumped its epoch, and the worker's first
  transactional call met that. It says it did not run for longer than its transaction timeout
  (not that another instance took its transactional id), replaces its producer (a new one with
  the same transactional id) and handles the aborted batch again.
* its consumer session had expired, so the first call that failed was the offset commit
  (UNKNOWN_MEMBER_ID, abortable). It aborts with a warning, rejoins, and goes on serving: the
  aborted batch is handled again in a new transaction.

Which comes first is not up to the test: both timeouts are 10 s, the session is counted from
the last heartbeat (3 s apart) while the broker finds a timed-out transaction only on its
next check (every 10 s), so no freeze makes either one certain. Before the loop replaced a
fenced producer (50a8d95), the fenced worker exited.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.client.tail import open_tail
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import InferenceResult
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent, read_topic

pytestmark = pytest.mark.integration

# The transaction timeout is 10 s and the broker looks for timed-out transactions every 10 s
# (transaction.abort.timed.out.transaction.cleanup.interval.ms): after 25 s the open
# transaction has been aborted for sure.
FROZEN_S = 25.0


def _feed(settings: Settings, stop: threading.Event, sent: list[str]) -> None:
    client = CanaryClient(settings)
    try:
        i = 0
        while not stop.is_set():
            sent.append(client.send(b'{"inputs":[]}', model="iris", key=f"u{i % 50}",
                                    request_id=f"f{i}", flush=False))  # fmt: skip
            i += 1
            client.flush(0)
            time.sleep(0.02)
        client.flush(30)
    finally:
        client.close()


def _wait_for_a_commit(settings: Settings, topic: str, timeout: float = 30.0) -> None:
    """Wait until new answers become visible to a ``read_committed`` reader: the worker has
    just committed a transaction."""
    consumer = open_tail(settings, topic, "frozen-commit")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(m.error() is None for m in consumer.consume(100, timeout=0.1)):
                return
    finally:
        consumer.close()
    raise AssertionError(f"no commit in {timeout:.0f} s")


def _after_resume(
    worker: Agent, settings: Settings, topic: str, first_after: int, timeout: float
) -> str:
    """``exited`` once the worker exits; ``serving`` once it has committed an answer to a
    request sent after it was resumed (``f{first_after}`` onwards) and is still running: a
    transaction committed after the freeze proves it was not fenced."""
    consumer = open_tail(settings, topic, "frozen-outcome", from_beginning=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not worker.alive:
                return "exited"
            for m in consumer.consume(1000, timeout=0.2):
                key = (m.key() or b"").decode("utf-8", "replace")  # the request id
                if m.error() is None and key[1:].isdigit() and int(key[1:]) >= first_after:
                    return "serving" if worker.alive else "exited"
    finally:
        consumer.close()
    raise AssertionError(f"the worker neither exited nor served after SIGCONT:\n{worker.log()}")


def test_a_worker_frozen_past_its_transaction_timeout_recovers_and_loses_nothing(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    spawn("router", "--instance", "r1").ready()
    ControlClient(settings).send("iris", "register", baseline_version="v1", wait=60)
    # Long transactions (5 s, half the transaction timeout): whenever the freeze comes, the
    # worker has written into a transaction it has not committed yet.
    worker = start_worker("v1", "--commit-interval-ms", "5000")
    stop, sent = threading.Event(), list[str]()
    feeder = threading.Thread(target=_feed, args=(settings, stop, sent), daemon=True)
    feeder.start()
    try:
        assert len(read_topic(settings, topics.results, 20, timeout=60, settle=0)) >= 20
        _wait_for_a_commit(settings, topics.results)
        # Mid-transaction: the next commit is about 3.5 s away and the feed keeps writing into
        # the open transaction, which the broker will time out during the freeze.
        time.sleep(1.5)
        worker.pause()
        time.sleep(FROZEN_S)
        worker.resume()
        outcome = _after_resume(worker, settings, topics.results, len(sent), 90)
        log = worker.log()
        assert outcome == "serving", log
        assert "another instance uses transactional id" not in log, log
        assert "Traceback" not in log, log
        # The failed commit was visible, and the worker goes on serving.
        assert "aborting transaction" in log, log
        if "did not run for" in log:
            assert "longer than its transaction timeout" in log, log
            assert "replacing the producer" in log, log
        time.sleep(2)
        assert worker.alive, f"the worker exited after it recovered:\n{worker.log()}"
    finally:
        stop.set()
        feeder.join(60)

    codec = codec_for(InferenceResult)
    results = read_topic(settings, topics.results, len(sent))
    answered = Counter(codec.decode(m.value() or b"").request_id for m in results)
    assert set(answered) == set(sent), f"{len(set(sent) - set(answered))} requests lost"
    assert max(answered.values()) == 1, "a request was answered twice"
    assert worker.alive, f"the worker exited after it recovered:\n{worker.log()}"
