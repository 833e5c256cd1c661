"""Layers are folders: nothing under streams/ talks to Kafka or reaches into agents/; and every
module is imported under the one installed namespace, ``model_canary``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_CLIENTS = ("confluent_kafka", "aiokafka", "faust", "mode")
LAYERS = ("agents", "streams", "schemas")


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_the_pure_layer_imports_no_kafka_client_and_no_agent() -> None:
    offenders = []
    files = _python_files("streams")
    assert len(files) > 20
    for path in files:
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] in KAFKA_CLIENTS or parts[:2] == ["model_canary", "agents"]:
                offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert offenders == []


def test_every_module_is_imported_through_the_model_canary_namespace() -> None:
    # A top-level "agents" import would load a second copy of a module (its Prometheus
    # metrics registered twice), or OpenAI's Agents SDK where that is installed.
    offenders = []
    files = _python_files(*LAYERS, "tests")
    assert len(files) > 150
    for path in files:
        for name in _imports(path):
            if name.split(".")[0] in LAYERS:
                offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert offenders == []
