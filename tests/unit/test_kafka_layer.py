"""One Kafka client layer: only agents/kafka makes clients and handles a full producer queue."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSTRUCTORS = {"Producer", "Consumer", "AdminClient", "AIOKafkaProducer", "AIOKafkaConsumer"}
# The benchmark's reference is a plain confluent-kafka loop on purpose (it is what the router
# is measured against), and the router's hot path tries the producer's own produce first and
# falls back to the transaction's (which waits for room) on BufferError.
REFERENCE = "agents/bench/passthrough.py"
BUFFER_FALLBACK = {REFERENCE, "agents/router/agent.py"}


def _sources() -> list[Path]:
    return [
        p
        for folder in ("agents", "streams")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if not p.relative_to(ROOT).as_posix().startswith("agents/kafka/")
    ]


def test_only_agents_kafka_builds_kafka_clients() -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                name = node.func.attr if isinstance(node.func, ast.Attribute) else name
                if name in CONSTRUCTORS and rel != REFERENCE:
                    offenders.append(f"{rel}:{node.lineno} {name}(...)")
    assert offenders == []


def test_only_agents_kafka_waits_out_a_full_producer_queue() -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        handlers = [
            n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ExceptHandler)
        ]
        for node in handlers:
            caught = ast.unparse(node.type) if node.type is not None else ""
            if "BufferError" in caught and rel not in BUFFER_FALLBACK:
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
