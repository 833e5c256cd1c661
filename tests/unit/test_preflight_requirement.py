"""A plan's pre-flight requirement and which recorded pre-flight satisfies it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from model_canary.streams.enums import PreflightStatus
from model_canary.streams.messages import EPOCH, Preflight, from_epoch_ms
from model_canary.streams.plan import PlanError, RolloutPlan, parse_plan
from model_canary.streams.preflight.requirement import (
    PreflightRequirement,
    RequirementError,
    choose,
    parse_requirement,
)

NOW = from_epoch_ms(1_800_000_000_000)
PASSED = Preflight(
    preflight_id="pf-a",
    model="iris",
    baseline_version="v1",
    candidate_version="v2",
    status=PreflightStatus.PASSED,
    answered=6000,
    reason="would pass",
    window_start=EPOCH,
    started_at=NOW - timedelta(hours=1),
    updated_at=NOW - timedelta(hours=1),
)
REQ = PreflightRequirement(6 * 3600, 5000)


def pick(*records: Preflight) -> tuple[Preflight | None, list[str]]:
    return choose(records, model="iris", baseline="v1", candidate="v2", requirement=REQ, now=NOW)


def test_the_newest_fitting_passing_preflight_is_chosen() -> None:
    older = replace(PASSED, preflight_id="pf-old", updated_at=NOW - timedelta(hours=2))
    assert pick(older, PASSED)[0] == PASSED


def test_why_none_fits() -> None:
    failed = replace(PASSED, preflight_id="pf-f", status=PreflightStatus.FAILED, reason="errors")
    small = replace(PASSED, preflight_id="pf-s", answered=100)
    stale = replace(PASSED, preflight_id="pf-t", updated_at=NOW - timedelta(hours=7))
    other = replace(PASSED, preflight_id="pf-o", baseline_version="v0")
    running = replace(PASSED, preflight_id="pf-r", status=PreflightStatus.REPLAYING)
    elsewhere = replace(PASSED, preflight_id="pf-x", candidate_version="v3")
    found, reasons = pick(failed, small, stale, other, running, elsewhere)
    assert found is None
    text = "\n".join(reasons)
    assert "pf-f: failed: errors" in text
    assert "pf-s: compared 100 requests, fewer than 5000" in text
    assert "pf-t: finished" in text and "longer ago than 21600s" in text
    assert "pf-o: compared with v0, not v1" in text
    assert "pf-r: not finished (replaying)" in text
    assert "pf-x" not in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("6h", "must be a mapping"),
        ({"since": "soon"}, "preflight.since: expected a duration"),
        ({"since": 0}, "preflight.since: must be longer than 0"),
        ({"min_requests": 0}, "preflight.min_requests: must be a whole number >= 1"),
        ({"min_requests": True}, "preflight.min_requests"),
        ({"window": "6h"}, r"unknown field\(s\) \['window'\]"),
    ],
)
def test_invalid_requirements_name_the_field(value: object, message: str) -> None:
    with pytest.raises(RequirementError, match=message):
        parse_requirement(value)


def test_requirement_forms() -> None:
    assert parse_requirement({"since": "90m"}) == PreflightRequirement(5400.0, 5000)
    assert parse_requirement(False) is None
    assert PreflightRequirement().to_doc() == {"since": 21600.0, "min_requests": 5000}


def test_a_plan_carries_its_requirement_and_the_preflight_it_rests_on() -> None:
    doc = {"model": "iris", "canary": "v2", "preflight": {"since": "30m", "min_requests": 1000}}
    plan = parse_plan(doc)
    assert plan.preflight == PreflightRequirement(1800.0, 1000) and plan.preflight_id is None
    started = replace(plan, preflight_id="pf-a")
    assert RolloutPlan.from_json(started.to_json()) == started
    assert json.loads(started.to_json())["preflight"] == {"since": 1800.0, "min_requests": 1000}
    with pytest.raises(RequirementError, match=r"preflight\.min_requests"):
        parse_plan({**doc, "preflight": {"min_requests": -1}})
    # A plan without a requirement keeps its stored form (no new keys), and reads back.
    plain = parse_plan({"model": "iris", "canary": "v2"})
    assert "preflight" not in plain.to_json() and RolloutPlan.from_json(plain.to_json()) == plain
    with pytest.raises(PlanError, match="preflight_id must be a text"):
        RolloutPlan.from_json(started.to_json().replace('"pf-a"', "7"))
