"""End-to-end accounting over Kafka: ``audit(settings, since)`` -> :class:`AuditReport`."""

from model_canary.agents.audit.run import AuditReport, audit

__all__ = ["AuditReport", "audit"]
