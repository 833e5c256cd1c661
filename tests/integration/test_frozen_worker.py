"""A worker frozen (SIGSTOP) past its transaction timeout: the broker aborts its transaction
and fences it; on SIGCONT it exits saying that is what happened (not that another instance
took its transactional id), and once restarted every request is answered exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from model_canary.agents.client.control import ControlClient
from model_canary.agents.client.inference import CanaryClient
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


def _wait_exit(agent: Agent, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while agent.alive and time.monotonic() < deadline:
        time.sleep(0.2)
    code = agent.returncode
    assert code is not None, f"the worker did not exit after SIGCONT:\n{agent.log()[-3000:]}"
    return code


def test_a_worker_frozen_past_its_transaction_timeout_says_so_and_loses_nothing(
    settings: Settings,
    topics: TopicCatalogue,
    spawn: Callable[..., Agent],
    start_worker: Callable[..., Agent],
) -> None:
    spawn("router", "--instance", "r1")
    ControlClient(settings).send("iris", "register", baseline_version="v1", wait=60)
    # Long transactions (5 s, half the transaction timeout): whenever the freeze comes, the
    # worker has written into a transaction it has not committed yet.
    worker = start_worker("v1", "--commit-interval-ms", "5000")
    stop, sent = threading.Event(), list[str]()
    feeder = threading.Thread(target=_feed, args=(settings, stop, sent), daemon=True)
    feeder.start()
    try:
        assert len(read_topic(settings, topics.results, 20, timeout=60, settle=0)) >= 20
        worker.pause()
        time.sleep(FROZEN_S)
        worker.resume()
        code = _wait_exit(worker, 90)
        log = worker.log()
        assert code != 0
        assert "did not run for" in log and "longer than its transaction timeout" in log, log
        assert "another instance uses transactional id" not in log
        assert "Traceback" not in log, log
        start_worker("v1")  # the same instance, as a supervisor would restart it
    finally:
        stop.set()
        feeder.join(60)

    codec = codec_for(InferenceResult)
    results = read_topic(settings, TopicCatalogue(settings.topic_prefix).results, len(sent))
    answered = Counter(codec.decode(m.value() or b"").request_id for m in results)
    assert set(answered) == set(sent), f"{len(set(sent) - set(answered))} requests lost"
    assert max(answered.values()) == 1, "a request was answered twice"
