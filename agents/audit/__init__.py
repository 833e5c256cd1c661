"""End-to-end accounting over Kafka: ``audit(settings, since)`` -> :class:`AuditReport`."""

from agents.audit.run import AuditReport, audit

__all__ = ["AuditReport", "audit"]
