"""Topic administration: idempotent creation with the catalogue's configurations."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from model_canary.agents.kafka.clients import new_admin
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicSpec


class Admin:
    """Creates and inspects topics. Connects on first use, not in ``__init__``.

    >>> admin = Admin(Settings())          # no network yet
    >>> # admin.ensure_topics(TopicCatalogue().core_specs())
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: AdminClient | None = None

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            self._client = new_admin(self._settings)
        return self._client

    def ensure_topics(self, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
        """Create the topics that do not exist yet; returns the names created.

        A topic that already exists is left as it is (its partition count may be larger:
        users scale out by adding partitions).
        """
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=self._settings.replication_factor,
                config=dict(s.config),
            )
            for s in specs
        ]
        if not new:
            return []
        created: list[str] = []
        futures = self.client.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise wrap(f"create topic {name}", exc) from None
        if created:
            self.wait_for_leaders(created, timeout)
        return created

    def wait_for_leaders(self, topics: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until every partition of ``topics`` has a leader (new topics take a moment)."""
        wanted = set(topics)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                md = self.client.list_topics(timeout=5)
            except KafkaException:
                time.sleep(0.1)
                continue
            ready = {
                name
                for name in wanted
                if name in md.topics
                and md.topics[name].error is None
                and md.topics[name].partitions
                and all(p.leader >= 0 for p in md.topics[name].partitions.values())
            }
            if ready == wanted:
                return
            time.sleep(0.1)

    def delete_topics(self, names: Iterable[str], timeout: float = 60.0) -> None:
        """Delete ``names`` and wait until the cluster's metadata no longer lists them.

        The controller acknowledges a deletion before every broker's metadata has caught
        up, so a listing made just after the acknowledgement may still show the topics;
        this returns only once it does not (or raises after ``timeout`` seconds). A topic
        that is already gone counts as deleted.
        """
        wanted = sorted(set(names))
        if not wanted:
            return
        deadline = time.monotonic() + timeout
        futures = self.client.delete_topics(wanted, operation_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=max(1.0, deadline - time.monotonic()))
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise wrap(f"delete topic {name}", exc) from None
        left = set(wanted)
        while left:
            left &= set(self.list_topics(timeout=max(1.0, deadline - time.monotonic())))
            if not left:
                return
            if time.monotonic() >= deadline:
                raise wrap(
                    "delete topics",
                    TimeoutError(f"still listed after {timeout:.0f} s: {sorted(left)}"),
                )
            time.sleep(0.1)

    def list_topics(self, timeout: float = 10.0) -> dict[str, int]:
        """``{topic: partition count}`` for every topic the cluster reports."""
        try:
            md = self.client.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise wrap("list topics", exc) from None
        return {name: len(t.partitions) for name, t in md.topics.items()}

    def ping(self, timeout: float = 2.0) -> bool:
        """True when a broker answers a metadata request within ``timeout`` seconds."""
        try:
            md = self.client.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(md.brokers)

    def topic_config(self, topic: str, timeout: float = 10.0) -> dict[str, str]:
        """The topic's effective configuration (``{name: value}``, defaults included)."""
        resource = ConfigResource(ResourceType.TOPIC, topic)
        try:
            future = self.client.describe_configs([resource], request_timeout=timeout)[resource]
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            raise wrap(f"describe topic {topic}", exc) from None
        return {name: entry.value for name, entry in entries.items() if entry.value is not None}

    def alter_topic_config(
        self, topic: str, config: Mapping[str, str | None], timeout: float = 10.0
    ) -> None:
        """Set some of a topic's configuration (incrementally: other settings are kept); a
        ``None`` value puts that setting back to its default."""
        entries = [
            ConfigEntry(
                name,
                value,
                incremental_operation=AlterConfigOpType.DELETE
                if value is None
                else AlterConfigOpType.SET,
            )
            for name, value in config.items()
        ]
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        try:
            futures = self.client.incremental_alter_configs([resource], request_timeout=timeout)
            futures[resource].result(timeout=timeout)
        except KafkaException as exc:
            raise wrap(f"alter topic {topic}", exc) from None
