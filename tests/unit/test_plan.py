from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_canary.streams.plan import PlanError, RolloutPlan, duration, load_plan, parse_plan

BASE: dict[str, Any] = {"model": "iris", "baseline": "v1", "canary": "v2"}


def test_defaults() -> None:
    plan = parse_plan({"model": "iris", "canary": "v2"})
    assert plan.baseline is None and plan.mode == "canary"
    assert plan.steps_bp == (100, 2000, 5000, 10000)
    assert (plan.min_step_seconds, plan.max_step_seconds, plan.warmup_seconds) == (300, 7200, 30)
    assert set(plan.metrics) == {"errors", "latency_p95", "latency_p99"}
    assert plan.alpha == 0.05


def test_yaml_and_json_files_give_the_same_plan(tmp_path: Path) -> None:
    doc = {
        **BASE,
        "steps": [0.5, 10, 100],
        "step": {"min_duration": "90s", "min_canary_requests": 500, "warmup": "1m"},
        "metrics": {"errors": {"tolerance": 0.1}, "accuracy": {"min_label_coverage": 0.3}},
        "alpha": 0.01,
    }
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    import yaml

    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(doc))
    a, b = load_plan(tmp_path / "plan.json"), load_plan(tmp_path / "plan.yaml")
    assert a == b
    assert a.steps_bp == (50, 1000, 10000)
    assert a.min_step_seconds == 90 and a.warmup_seconds == 60
    assert a.metrics["accuracy"].tolerance == 0.02
    assert a.metrics["accuracy"].min_label_coverage == 0.3
    assert RolloutPlan.from_json(a.to_json()) == a


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": None}, "model: required"),
        ({"canary": "v1"}, "canary: must differ"),
        ({"canary": "v 2"}, "canary: version name"),
        ({"mode": "blue-green"}, "mode: must be"),
        ({"steps": [1, 150]}, r"steps\[1\]: must be a percentage"),
        ({"steps": [20, 1, 100]}, "increase strictly"),
        ({"steps": [1, 50]}, "last step must be 100"),
        ({"steps": "1,20"}, "non-empty list"),
        ({"step": {"min_duration": "soon"}}, "step.min_duration: expected a duration"),
        ({"step": {"min_duration": "3h"}}, "max_duration: must be at least"),
        ({"step": {"min_canary_requests": -1}}, "min_canary_requests"),
        ({"step": {"tempo": 1}}, r"step: unknown field\(s\) \['tempo'\]"),
        ({"alpha": 0.9}, "alpha: must be"),
        ({"metrics": {"cpu": {}}}, "metrics.cpu: unknown metric"),
        ({"metrics": {"errors": {"tolerance": "lots"}}}, "metrics.errors.tolerance"),
        (
            {"metrics": {"errors": {"rollback_tolerance": -0.1}}},
            "metrics.errors.rollback_tolerance: must be",
        ),
        ({"metrics": {"errors": {"min_label_coverage": 0.5}}}, "metrics.errors: unknown"),
        ({"metrics": {"accuracy": {"min_label_coverage": 2}}}, "min_label_coverage: must be"),
        ({"surprise": 1}, r"unknown field\(s\) \['surprise'\]"),
        ({"metrics": {"errors": {"alarm_ratios": [0.9]}}}, "metrics.errors.alarm_ratios"),
        ({"metrics": {"errors": {"alarm_ratios": []}}}, "metrics.errors.alarm_ratios"),
    ],
)
def test_invalid_plans_name_the_field(change: dict[str, Any], message: str) -> None:
    doc = {**BASE, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(PlanError, match=message):
        parse_plan(doc)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(PlanError, match="a plan is a mapping"):
        load_plan(tmp_path / "list.json")


def test_durations() -> None:
    assert duration("250ms", "x") == 0.25
    assert duration("1.5h", "x") == 5400
    assert duration(42, "x") == 42
    with pytest.raises(PlanError):
        duration(-1, "x")


def test_rollback_tolerance_is_optional_and_old_plan_states_still_load() -> None:
    plan = parse_plan({**BASE, "metrics": {"errors": {"tolerance": 0.3}, "latency_p99": {}}})
    assert plan.metrics["errors"].rollback_tolerance == 0.0
    assert plan.metrics["errors"].tolerance == 0.3
    custom = parse_plan({**BASE, "metrics": {"errors": {"rollback_tolerance": 0.05}}})
    assert custom.metrics["errors"].rollback_tolerance == 0.05
    assert custom.metrics["errors"].tolerance == 0.2
    assert RolloutPlan.from_json(custom.to_json()) == custom
    # A plan serialised before the field existed (in a running rollout's state) reads as 0.
    doc = json.loads(plan.to_json())
    for spec in doc["metrics"].values():
        del spec["rollback_tolerance"]
    assert RolloutPlan.from_json(json.dumps(doc)) == plan


def test_alarm_ratios_are_read_from_the_plan_and_wrong_answers_have_their_own() -> None:
    plan = parse_plan({**BASE, "metrics": {"errors": {"alarm_ratios": [1.3, 2]}, "accuracy": {}}})
    assert plan.metrics["errors"].alarm_ratios == (1.3, 2.0)
    # Wrong predictions are common, so the harms worth finding are small ratios.
    assert plan.metrics["accuracy"].alarm_ratios == (1.2, 1.35, 1.6)
    assert RolloutPlan.from_json(plan.to_json()) == plan
    # A plan stored before the field existed reads as it was decided (the old grid).
    doc = json.loads(plan.to_json())
    for spec in doc["metrics"].values():
        del spec["alarm_ratios"]
    assert RolloutPlan.from_json(json.dumps(doc)).metrics["accuracy"].alarm_ratios == (
        1.6,
        2.2,
        3.2,
    )
