"""The shared layer of model-canary: settings, topic catalogue, message contracts, codecs and
the pure logic (cohort hashing, rollout state machine, statistics).

Nothing under ``streams`` imports a Kafka client: it is tested without a broker.
"""

__version__ = "0.1.0"
