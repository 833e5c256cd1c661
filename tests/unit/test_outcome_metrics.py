"""Outcome metric declarations in plans: names, ``from``, ``bad_when``; judging feedback."""

from __future__ import annotations

import pytest

from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.outcomes.metrics import (
    OutcomeMetricError,
    condition,
    is_outcome,
    judge,
    outcome_spec,
)


def test_a_declaration_is_checked_and_its_settings_kept_for_the_plan() -> None:
    spec = outcome_spec(
        "abs_error", {"from": "feedback", "bad_when": "abs(value-prediction)>5", "tolerance": 0.1}
    )
    assert spec.bad_when == "abs(value - prediction) > 5"
    assert spec.source == "feedback" and dict(spec.settings) == {"tolerance": 0.1}
    assert spec.condition(Outcome(value=10.0, prediction="1")) is True
    assert outcome_spec("judge", {"bad_when": "score < 0.7"}).source == "feedback"


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("Thumbs", {"bad_when": "label == 'down'"}, "metrics.Thumbs: an outcome metric's name"),
        ("accuracy", {"bad_when": "label == 'down'"}, "'accuracy' is a built-in metric"),
        ("t", {"from": "metrics", "bad_when": "true"}, "metrics.t.from: must be one of"),
        ("t", {"from": "feedback"}, "metrics.t.bad_when: required"),
        ("t", {"bad_when": 5}, "metrics.t.bad_when: must be text"),
        ("t", {"bad_when": "label = 'down'"}, "metrics.t.bad_when: position 6: '=' is not"),
    ],
)
def test_invalid_declarations_name_the_field(
    name: str, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(OutcomeMetricError, match=message.replace("(", r"\(")):
        outcome_spec(name, spec)


def test_is_outcome() -> None:
    assert (
        is_outcome({"from": "feedback"}) and not is_outcome({"tolerance": 1}) and not is_outcome(3)
    )


def test_judge_leaves_out_metrics_the_feedback_says_nothing_about() -> None:
    rules = {
        "thumbs_down": condition("label == 'down'"),
        "abs_error": condition("abs(value - prediction) > 5"),
        "complaints": condition("coalesce(attributes.complaint, 'no') == 'yes'"),
    }
    assert judge(rules, Outcome(label="down", prediction="3")) == {
        "thumbs_down": True,
        "complaints": False,
    }
    assert judge(rules, Outcome(value=20.0, prediction="3")) == {
        "abs_error": True,
        "complaints": False,
    }
    assert condition("score < 0.7") is condition("score < 0.7")  # compiled once
