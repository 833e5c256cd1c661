"""Outcome metrics end to end in pure code: a plan declares them, the joiner's judgement of
each joined feedback becomes labelled evidence with a column per metric, the evidence state's
tally counts them, and the decision rule compares them like accuracy and names them."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from model_canary.schemas import schema_dir
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Outcome as Verdict
from model_canary.streams.errors import ConfigError
from model_canary.streams.evaluation import step_snapshot
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.join import LabelJoin, Waiting
from model_canary.streams.evidence.state import CLOSE_MS, RolloutEvidence
from model_canary.streams.messages import (
    Evidence,
    OffsetRange,
    OutcomeUnits,
    Phase,
    RolloutState,
    utc_now,
)
from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.outcomes.metrics import condition
from model_canary.streams.plan import (
    PlanError,
    RolloutPlan,
    labelled_metrics,
    outcome_metrics,
    parse_plan,
)
from model_canary.streams.stats import decide, policy, tally_for
from model_canary.streams.stats.layout import arm_ranges
from model_canary.streams.stats.tally import Tally, TallyRows
from tests.unit.record_strategies import avro_message

NOW = utc_now()
DOC: dict[str, Any] = {
    "model": "chat",
    "canary": "v2",
    "steps": [20, 100],
    "control": False,
    "step": {"warmup": "0s", "min_duration": "1m", "min_canary_requests": 5},
    "metrics": {
        "errors": {},
        "thumbs_down": {"from": "feedback", "bad_when": "label == 'down'"},
        "abs_error": {"bad_when": "abs(value - prediction) > 5", "min_label_coverage": 0.1},
    },
}
PLAN = parse_plan(DOC)


def test_a_plan_declares_outcome_metrics_and_stores_them() -> None:
    assert outcome_metrics(PLAN) == {
        "thumbs_down": "label == 'down'",
        "abs_error": "abs(value - prediction) > 5",
    }
    assert labelled_metrics(PLAN) == ("thumbs_down", "abs_error")
    assert RolloutPlan.from_json(PLAN.to_json()) == PLAN
    rule = policy(PLAN)
    assert rule.min_label_coverage == {"thumbs_down": 0.0, "abs_error": 0.1}
    # Built-in metrics keep their stored form (no bad_when written).
    assert "bad_when" not in json.loads(PLAN.to_json())["metrics"]["errors"]


@pytest.mark.parametrize(
    ("metric", "words"),
    [
        ({"down": {"bad_when": "label = 'down'"}}, "metrics.down.bad_when: position 6: '='"),
        ({"down": {"bad_when": "__import__('os')"}}, "unknown function '__import__'"),
        ({"down": {"from": "feedback"}}, "metrics.down.bad_when: required"),
        ({"down": {"bad_when": "label == 'x'", "from": "logs"}}, "metrics.down.from: must be"),
        ({"accuracy": {"bad_when": "label == 'x'"}}, "'accuracy' is a built-in metric"),
        ({"down": {"bad_when": "label == 'x'", "speed": 1}}, "metrics.down: unknown field"),
        ({"down": {"bad_when": "score"}}, "must be true or false"),
        ({"thumbs": {"tolerance": 0.1}}, "declare an outcome metric"),
    ],
)
def test_bad_declarations_are_refused_with_the_field_named(
    metric: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_plan({**DOC, "metrics": metric})
    assert words in str(exc.value)


def test_a_stored_plan_with_a_condition_that_does_not_compile_is_refused() -> None:
    stored = json.loads(PLAN.to_json())
    stored["metrics"]["thumbs_down"]["bad_when"] = "label = 'down'"
    with pytest.raises(PlanError, match="not a stored plan"):
        RolloutPlan.from_json(json.dumps(stored))


class Rollout:
    """One rollout at 20%: routed, served and labelled evidence as the agents write it, the
    labels judged through the label join as the joiner judges them."""

    def __init__(self) -> None:
        self.evidence = RolloutEvidence.new("chat", "r1", tally_for(PLAN))
        self.offset = 0
        self.conditions = {n: condition(t) for n, t in outcome_metrics(PLAN).items()}

    def _range(self) -> tuple[OffsetRange, ...]:
        self.offset += 1
        return (OffsetRange(topic="in", partition=0, first=self.offset, last=self.offset),)

    def second(self, t: int, feedback: dict[str, list[Outcome]], prediction: str = "4") -> None:
        join = LabelJoin()
        labelled = EvidenceBuilder("labelled", source="joiner")
        for arm, said in feedback.items():
            lo, hi = arm_ranges(2000, control=False)[arm]
            # Each request its own user (bucket), as independent requests are.
            buckets = [lo + (t * len(said) + i) % (hi - lo) for i in range(len(said))]
            version = "v2" if arm == "canary" else "v1"
            cell = Cell("chat", "r1", version, arm, True, 2000, t)
            routed = EvidenceBuilder("routed", source=f"router-{arm}")
            routed.add_routed(Cell("chat", "r1", "", arm, True, 2000, t), buckets)
            served = EvidenceBuilder("served", source=f"worker-{arm}")
            n = len(said)
            served.add_batch(
                [cell] * n,
                buckets=buckets,
                errors=[False] * n,
                latencies_ms=[5.0] * n,
                batch_latency_ms=5.0,
            )
            for ev in routed.build(self._range()) + served.build(self._range()):
                assert self.evidence.apply(ev)
            for i, fb in enumerate(said):
                if fb == Outcome():
                    continue  # a request without feedback
                rid = f"{arm}-{t}-{i}"
                w = Waiting(
                    "chat", "r1", version, arm, True, 2000, t, buckets[i], 1, prediction, t + 99
                )
                join.add_prediction(rid, w, now_s=t)
                for j in join.add_label(rid, fb, now_s=t):
                    correct, outcomes = j.judge(self.conditions)
                    labelled.add_label(cell, buckets[i], correct, outcomes)
        for ev in labelled.build(self._range()):
            assert self.evidence.apply(ev)
        self.evidence.settle((t + 1) * 1000 + CLOSE_MS)


def state() -> RolloutState:
    return RolloutState(
        model="chat",
        rollout_id="r1",
        stable_version="v1",
        baseline_version="v1",
        canary_version="v2",
        phase=Phase.PROGRESSING,
        steps_bp=(2000, 10000),
        weight_bp=2000,
        step_started_at=NOW - timedelta(minutes=5),
        updated_at=NOW,
        plan_json=PLAN.to_json(),
    )


def thumbs(n: int, down: int) -> list[Outcome]:
    return [Outcome(label="down" if i < down else "up") for i in range(n)]


def test_more_thumbs_down_on_the_canary_rolls_back_naming_the_metric() -> None:
    r = Rollout()
    t0 = int(NOW.timestamp()) - 200
    for t in range(t0, t0 + 100):  # canary 40% down, baseline 5%, both always rated
        r.second(t, {"canary": thumbs(10, 4), "baseline": thumbs(40, 2)})
    tally = r.evidence.tally
    down = tally.index("thumbs_down:bad")
    assert int(tally.totals[0, :, 0, down].sum()) == 400
    assert int(tally.totals[0, :, 2, down].sum()) == 200
    # No value: abs_error says nothing about thumbs, so counts nothing.
    assert int(tally.totals[0, :, :, tally.index("abs_error:counted")].sum()) == 0
    rule = policy(PLAN)
    v = decide(step_snapshot(r.evidence, state(), rule, NOW), rule)
    assert (v.outcome, v.code) == (Verdict.ROLLBACK, "harm")
    assert v.reason.startswith("thumbs_down: canary 40.00% (400/1000) vs baseline 5.00%")
    assert {e.metric for e in v.evidence} == {"errors", "thumbs_down", "abs_error"}


def test_a_numeric_value_metric_rolls_back_a_worse_regression() -> None:
    r = Rollout()
    t0 = int(NOW.timestamp()) - 200
    for t in range(t0, t0 + 100):
        # The prediction is 4; the canary's true values are off by more than 5 for 30%.
        canary = [Outcome(value=20.0 if i < 3 else 5.0) for i in range(10)]
        baseline = [Outcome(value=20.0 if i < 2 else 5.0) for i in range(40)]
        r.second(t, {"canary": canary, "baseline": baseline})
    rule = policy(PLAN)
    v = decide(step_snapshot(r.evidence, state(), rule, NOW), rule)
    assert (v.outcome, v.code) == (Verdict.ROLLBACK, "harm")
    assert v.reason.startswith("abs_error: canary 30.00% (300/1000) vs baseline 5.00%")


def test_equal_outcomes_are_not_harm_and_feedback_coverage_is_required() -> None:
    r = Rollout()
    t0 = int(NOW.timestamp()) - 200
    for t in range(t0, t0 + 100):
        r.second(t, {"canary": thumbs(10, 1), "baseline": thumbs(40, 4)})
    rule = policy(PLAN)
    v = decide(step_snapshot(r.evidence, state(), rule, NOW), rule)
    assert v.outcome is Verdict.HOLD and v.code == "labels-missing"
    assert "abs_error feedback for 0% of requests, need 10%" in v.reason


def test_feedback_arriving_unevenly_holds_and_leaves_the_metric_out() -> None:
    r = Rollout()
    t0 = int(NOW.timestamp()) - 200
    for t in range(t0, t0 + 100):
        # Every canary request is rated, a quarter of the baseline's; as many down per rating.
        r.second(t, {"canary": thumbs(10, 5), "baseline": thumbs(10, 5) + [Outcome()] * 30})
    rule = policy(PLAN)
    snap = step_snapshot(r.evidence, state(), rule, NOW)
    v = decide(snap, rule)
    assert (v.outcome, v.code) == (Verdict.HOLD, "sample-ratio-mismatch")
    assert "feedback for thumbs_down arrives for 100.00%" in v.reason


def test_tally_rows_keep_the_outcome_columns_and_old_rows_read() -> None:
    r = Rollout()
    t0 = int(NOW.timestamp()) - 200
    r.second(t0, {"canary": thumbs(3, 1), "baseline": thumbs(3, 0)})
    restored = RolloutEvidence.from_bytes(r.evidence.to_bytes())
    assert restored.tally.fields == r.evidence.tally.fields
    assert np.array_equal(restored.tally.totals, r.evidence.tally.totals)
    plain = Tally(1, control=False, warmup_s=0)
    doc = {f.name: getattr(plain.to_rows(), f.name) for f in dataclasses.fields(TallyRows)}
    del doc["outcomes"]  # rows written before outcome metrics existed
    assert Tally.from_rows(TallyRows(**doc)).fields == plain.fields


def test_labelled_evidence_written_before_outcome_columns_still_reads() -> None:
    v1 = json.loads((schema_dir() / "history" / "evidence.v1.avsc").read_text(encoding="utf-8"))
    datum = {
        "schema_version": 1, "kind": "labelled", "model": "chat", "rollout_id": "r1",
        "version": "v2", "arm": "canary", "served": True, "weight_bp": 2000, "second": 5,
        "source": "j", "offsets": [], "labelled": 2, "incorrect": 1,
    }  # fmt: skip
    for f in v1["fields"]:
        default = f.get("default")
        datum.setdefault(f["name"], b"" if f["type"] == "bytes" else default)
    old = codec_for(Evidence).decode(avro_message(v1, datum))
    assert old.outcomes == () and (old.labelled, old.incorrect) == (2, 1)
    # And the new record carries them.
    ev = dataclasses.replace(old, outcomes=(OutcomeUnits(metric="x", counted=1, bad=1),))
    assert codec_for(Evidence).decode(codec_for(Evidence).encode(ev)) == ev


def test_plan_check_forecasts_outcome_metrics_with_their_feedback_coverage() -> None:
    from model_canary.streams.stats.planning import Traffic, check

    doc = {**DOC, "steps": [1, 20, 50, 100], "step": {}}
    plan = parse_plan(doc)

    def minutes(coverage: float) -> float | None:
        traffic = Traffic(600, {"thumbs_down": 0.05}, label_coverage=coverage)
        [d] = [
            d
            for d in check(plan, traffic).detections
            if d.metric == "thumbs_down" and d.ratio == 2.0
        ]
        return d.minutes

    fewer, more = minutes(0.1), minutes(0.5)
    # Less feedback, slower detection: the metric counts only requests with feedback.
    assert more is not None and (fewer is None or fewer > more)
