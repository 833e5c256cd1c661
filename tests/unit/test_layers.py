"""Layers are folders: nothing under streams/ talks to Kafka or reaches into agents/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("confluent_kafka", "aiokafka", "faust", "mode", "agents")


def test_the_pure_layer_imports_no_kafka_client_and_no_agent() -> None:
    offenders = []
    files = sorted((ROOT / "streams").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert offenders == []
