"""One error root: every exception the project raises on purpose is a ``CanaryError``, so a
caller can catch the whole family at once (``RecordValidationError`` is also a ``ValueError``
for code that validates records with ``except ValueError``)."""

from __future__ import annotations

import argparse
import ast
import importlib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from model_canary.agents.client.control import action_named
from model_canary.streams.errors import (
    CanaryError,
    CommandRejectedError,
    ConfigError,
    RecordTypeError,
    RecordValidationError,
)
from model_canary.streams.messages import EPOCH, Action, ControlCommand, Feedback
from model_canary.streams.rollout import apply_command

ROOT = Path(__file__).resolve().parents[2]
# Rewritten by issue #12 (statistics); their argument checks still raise ValueError.
PENDING: tuple[str, ...] = ()


def _raised(tree: ast.AST) -> Iterator[tuple[ast.Raise, bool]]:
    """Every ``raise`` with whether it stands under ``if __name__ == "__main__"``."""

    def walk(node: ast.AST, main: bool) -> Iterator[tuple[ast.Raise, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Raise):
                yield child, main
            is_main = isinstance(child, ast.If) and "__main__" in ast.unparse(child.test)
            yield from walk(child, main or is_main)

    yield from walk(tree, False)


def _resolve(module: Any, func: ast.expr) -> Any:
    if isinstance(func, ast.Name):
        return (
            getattr(module, func.id, None)
            or getattr(__builtins__, func.id, None)
            or (__builtins__.get(func.id) if isinstance(__builtins__, dict) else None)
        )
    if isinstance(func, ast.Attribute):
        owner = _resolve(module, func.value)
        return getattr(owner, func.attr, None) if owner is not None else None
    return None


def _raised_type(module: Any, node: ast.Raise) -> type | str | None:
    """The class a ``raise X(...)`` raises; ``None`` for a re-raise of a variable; a string
    when the call cannot be resolved from the module (a method on ``self``)."""
    exc = node.exc
    if exc is None or not isinstance(exc, ast.Call):
        return None
    target = _resolve(module, exc.func)
    if isinstance(target, type):
        return target
    if callable(target):  # a factory such as wrap(): trust its return annotation
        returned = typing.get_type_hints(target).get("return")
        return returned if isinstance(returned, type) else ast.unparse(exc.func)
    return ast.unparse(exc.func)


def test_every_raised_exception_is_a_canary_error() -> None:
    offenders, unresolved, checked = [], [], 0
    for folder in ("agents", "streams", "schemas"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(PENDING):
                continue
            dotted = "model_canary." + rel.removesuffix(".py").replace("/", ".")
            module = importlib.import_module(dotted.removesuffix(".__init__"))
            for node, under_main in _raised(ast.parse(path.read_text())):
                raised = _raised_type(module, node)
                if raised is None:
                    continue
                if isinstance(raised, str):
                    unresolved.append(f"{rel}:{node.lineno} {raised}")
                    continue
                checked += 1
                if under_main and raised is SystemExit:
                    continue  # raise SystemExit(main()) of a runnable module
                if raised is argparse.ArgumentTypeError:
                    continue  # argparse's protocol for a bad option value (a usage error)
                if rel == "agents/testing.py" and raised is KafkaException:
                    continue  # the in-memory Kafka fails as confluent-kafka's clients do
                if not issubclass(raised, CanaryError):
                    offenders.append(f"{rel}:{node.lineno} raises {raised.__name__}")
    assert checked > 200
    assert offenders == []
    # Factories called on self: each checked by hand to build a CanaryError.
    assert {u.split(" ", 1)[1] for u in unresolved} <= {"self._timed_out", "self._sync._timed_out"}


def test_record_checks_are_canary_errors_and_value_errors() -> None:
    with pytest.raises(RecordValidationError, match="request_id must not be empty") as info:
        Feedback(request_id="", model="iris", label="1", observed_at=EPOCH)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CanaryError)
    assert issubclass(RecordTypeError, TypeError)


def test_a_rejected_command_has_one_name_in_the_machine_and_the_client() -> None:
    command = ControlCommand(command_id="c1", model="iris", action=Action.PAUSE, issued_at=EPOCH)
    with pytest.raises(CommandRejectedError) as info:
        apply_command(None, command, EPOCH)
    assert info.value.reason == "unknown-model" and info.value.event is None
    # The client raises the same class (with the controller's event): see test_client.py.


def test_action_names_as_the_cli_spells_them() -> None:
    assert action_named("set-weight").value == "set_weight"
    assert action_named("promote").value == "advance"
    with pytest.raises(ConfigError, match="unknown action 'jump'; one of register, start"):
        action_named("jump")
