"""The topic catalogue on a real broker: idempotent creation and the right configurations."""

from __future__ import annotations

import pytest
from confluent_kafka.admin._config import ConfigResource

from model_canary.agents.client.tail import open_tail
from model_canary.agents.kafka.admin import Admin
from model_canary.streams.errors import KafkaOperationError
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

pytestmark = pytest.mark.integration


def test_ensure_topics_is_idempotent_and_compacts_rollout_state(
    admin: Admin, catalogue: TopicCatalogue
) -> None:
    specs = catalogue.core_specs() + catalogue.version_specs("iris", "v1", "v2")
    created = admin.ensure_topics(specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert admin.ensure_topics(specs) == []

    topics = admin.list_topics()
    assert topics[catalogue.requests] == catalogue.partitions
    assert topics[catalogue.version_requests("iris", "v2")] == catalogue.partitions
    assert topics[catalogue.control] == 1

    resource = ConfigResource(ConfigResource.Type.TOPIC, catalogue.rollout_state)
    configs = admin.client.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
    resource = ConfigResource(ConfigResource.Type.TOPIC, catalogue.requests)
    configs = admin.client.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "delete"


def test_delete_topics_returns_once_no_listing_shows_them(
    admin: Admin, catalogue: TopicCatalogue, settings: Settings
) -> None:
    specs = catalogue.core_specs()
    names = [s.name for s in specs]
    admin.ensure_topics(specs)
    admin.delete_topics([*names, f"{names[0]}-never-created"])
    # A fresh client, as a user's next command would be: none of them is listed any more.
    assert set(names).isdisjoint(Admin(settings).list_topics())
    admin.delete_topics(names)  # already gone: nothing to do, no error


def test_a_tail_opens_a_topic_created_a_moment_ago_and_names_a_missing_one(
    admin: Admin, catalogue: TopicCatalogue, settings: Settings
) -> None:
    specs = catalogue.core_specs()
    admin.ensure_topics(specs)
    open_tail(settings, catalogue.results, "t-fresh").close()
    with pytest.raises(KafkaOperationError, match="no such topic"):
        open_tail(settings, f"{catalogue.results}-never-created", "t-missing")
