"""The rollout-state view's consumer waits long for a fetch: the states change a few times per
rollout, and a new one (its transaction's commit included) ends the broker's wait at once."""

from __future__ import annotations

from typing import Any

from model_canary.agents.kafka.state_view import FETCH_WAIT_MS, StateView
from model_canary.agents.testing import FakeConsumer, FakeKafka, using
from model_canary.streams.latency import PROFILES
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue


class Recording(FakeKafka):
    def __init__(self) -> None:
        super().__init__()
        self.made: list[dict[str, Any]] = []

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        self.made.append(dict(config))
        return super().consumer(config)


def test_the_views_fetch_wait_is_its_own_not_the_latency_profiles() -> None:
    settings = Settings(bootstrap="fake:9092", topic_prefix="v", partitions=1)
    kafka = Recording()
    kafka.send(TopicCatalogue("v").rollout_state, b"", key=b"unused")
    with using(kafka):
        StateView(settings, client_id="view-test").poll(0)
    (config,) = kafka.made
    assert config["fetch.wait.max.ms"] == FETCH_WAIT_MS
    assert config["client.id"] == "view-test"
    # Longer than any profile's: a view is not a data path.
    assert max(p.fetch_wait_ms for p in PROFILES.values()) < FETCH_WAIT_MS


def test_a_caught_up_view_catches_up_without_waiting_for_a_poll() -> None:
    settings = Settings(bootstrap="fake:9092", topic_prefix="v", partitions=1)
    kafka = FakeKafka()
    topic = TopicCatalogue("v").rollout_state
    kafka.send(topic, None, key=b"iris")  # a tombstone: a record the view counts as read
    kafka.send(topic, None, key=b"wine")
    with using(kafka):
        view = StateView(settings)
        assert view.catch_up(timeout=5) == 2
        polls: list[float] = []

        def poll(timeout: float = 0.0) -> int:
            polls.append(timeout)
            return 0

        view.poll = poll  # type: ignore[method-assign]
        assert view.catch_up(timeout=5) == 0
    assert polls == []  # at the end already: no poll (each would wait its 0.2 s out)
