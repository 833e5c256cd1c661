"""The label join: one label reaches every arm's prediction of a request, exactly once."""

from __future__ import annotations

from typing import Any

from model_canary.agents.evaluator.labels import add_label, add_prediction


def entry(canary: bool, prediction: str = "1") -> list[Any]:
    return ["ro", canary, 5000, prediction, 0]


def test_label_first_joins_each_shadow_arm_as_it_arrives() -> None:
    table: dict[str, Any] = {}
    assert add_label(table, "r", "1") == []
    assert add_prediction(table, "r", "baseline", entry(False)) == [(entry(False), "1")]
    assert add_prediction(table, "r", "canary", entry(True, "2")) == [(entry(True, "2"), "1")]


def test_label_between_the_two_arms_of_a_pair() -> None:
    table: dict[str, Any] = {}
    add_prediction(table, "r", "baseline", entry(False))
    assert add_label(table, "r", "1") == [(entry(False), "1")]
    assert add_prediction(table, "r", "canary", entry(True)) == [(entry(True), "1")]


def test_redelivered_predictions_and_labels_join_nothing_twice() -> None:
    table: dict[str, Any] = {}
    add_prediction(table, "r", "canary", entry(True))
    assert add_prediction(table, "r", "canary", entry(True)) == []
    assert len(add_label(table, "r", "1")) == 1
    assert add_label(table, "r", "1") == []
    assert add_prediction(table, "r", "canary", entry(True)) == []


def test_rows_in_the_earlier_format_still_join() -> None:
    table: dict[str, Any] = {"a": entry(True), "b": {"label": "2"}, "c": {"done": True}}
    assert add_label(table, "a", "1") == [(entry(True), "1")]
    assert add_prediction(table, "b", "baseline", entry(False)) == [(entry(False), "2")]
    assert add_label(table, "c", "1") == []
    assert add_prediction(table, "c", "canary", entry(True)) == []
