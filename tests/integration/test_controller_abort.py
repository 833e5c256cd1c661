"""A controller whose transaction aborts after it applied a command forgets the state it wrote:
the command, read again, applies once to the state before it (issue #10, item 3). Before the
fix, the re-read `start` was applied on top of the uncommitted Progressing state and rejected
as a forbidden transition: the rollout never started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from model_canary.agents.client import ControlClient
from model_canary.agents.router.controller import Controller
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.messages import ControlEvent, Phase, RolloutState
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


class _FailOnce:
    """A producer that fails the first commit satisfying ``when`` with an abortable error."""

    def __init__(self, producer: Producer, when: Callable[[], bool]) -> None:
        self._producer = producer
        self._when = when
        self.failed = 0

    def commit_transaction(self, *args: Any) -> None:
        if not self.failed and self._when():
            self.failed += 1
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "injected", txn_requires_abort=True)
            )
        self._producer.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def test_a_controller_forgets_the_state_an_aborted_transaction_wrote(
    settings: Settings, topics: TopicCatalogue
) -> None:
    controller = Controller(settings, "c-abort")
    loop = controller.loop
    loop._open()

    def progressing() -> bool:
        state = controller.view.get("iris")
        return state is not None and state.phase is Phase.PROGRESSING

    assert loop._producer is not None
    failing = _FailOnce(loop._producer, progressing)
    loop._producer = failing  # type: ignore[assignment]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        control = ControlClient(settings)
        control.send("iris", "register", baseline_version="v1")
        outcome = control.send("iris", "start", canary_version="v2", check=False)
        assert outcome.applied, outcome.event
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not failing.failed:
            time.sleep(0.1)
        assert failing.failed == 1
    finally:
        stop.set()
        thread.join(30)

    states = [
        codec_for(RolloutState).decode(m.value() or b"")
        for m in read_topic(settings, topics.rollout_state, 2)
    ]
    assert [(s.phase, s.revision) for s in states] == [
        (Phase.STABLE, states[0].revision),
        (Phase.PROGRESSING, states[0].revision + 1),
    ]
    events = [
        codec_for(ControlEvent).decode(m.value() or b"")
        for m in read_topic(settings, topics.events, 2)
    ]
    assert [(e.action, e.outcome) for e in events] == [
        ("register", "applied"),
        ("start", "applied"),
    ]
