"""A single-node Apache Kafka broker for development, tests and CI, run from Kafka's own Maven
artifacts (no Docker)."""

from model_canary.agents.broker.local import KAFKA_VERSION, LocalBroker
from model_canary.agents.broker.security import BrokerSecurity

__all__ = ["KAFKA_VERSION", "BrokerSecurity", "LocalBroker"]
