"""Thin, typed helpers over confluent-kafka shared by every agent."""
