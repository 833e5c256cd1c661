"""A pre-flight's verdict from collected answers, through the evaluator's own decision path."""

from __future__ import annotations

import random

from model_canary.streams.enums import PreflightStatus
from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.plan import parse_plan
from model_canary.streams.preflight.judge import Answer, Observed, judge

PLAN = parse_plan({"model": "iris", "baseline": "v1", "canary": "v2"})
T0 = 1_800_000_000_000


def answers(
    version: str,
    n: int,
    *,
    error_rate: float = 0.0,
    seed: int,
    wrong_rate: float = 0.0,
    latency: float = 5.0,
) -> list[Answer]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        error = rng.random() < error_rate
        prediction = None if error else ("0" if rng.random() < wrong_rate else "1")
        out.append(
            Answer(
                f"r{i}", version, error, rng.lognormvariate(0, 0.3) * latency, prediction, T0 + i
            )
        )
    return out


def test_an_identical_candidate_passes() -> None:
    seen = Observed.of(candidate=answers("v2", 3000, seed=1), baseline=answers("v1", 3000, seed=2))
    v = judge(seen, PLAN, min_requests=1000)
    assert v.status is PreflightStatus.PASSED and v.exit_code == 0
    assert v.answered == 3000 and v.unanswered == 0 and v.labelled == 0
    assert v.reason == "would pass: no harm detected on 3000 replayed requests"
    assert {e.metric for e in v.evidence} == {"errors", "latency_p95", "latency_p99"}
    assert not any(e.alarmed for e in v.evidence)


def test_a_candidate_with_five_percent_errors_would_be_rolled_back() -> None:
    seen = Observed.of(
        candidate=answers("v2", 3000, error_rate=0.05, seed=3),
        baseline=answers("v1", 3000, seed=4),
    )
    v = judge(seen, PLAN, min_requests=1000)
    assert v.status is PreflightStatus.FAILED and v.exit_code == 1
    assert v.reason.startswith("would be rolled back: errors: canary ")
    errors = next(e for e in v.evidence if e.metric == "errors")
    assert errors.alarmed and errors.canary_bad > 100 and errors.baseline_bad == 0


def test_too_few_answered_requests_are_inconclusive() -> None:
    seen = Observed.of(candidate=answers("v2", 100, seed=1), baseline=answers("v1", 100, seed=2))
    v = judge(seen, PLAN, min_requests=1000)
    assert v.status is PreflightStatus.INCONCLUSIVE and v.exit_code == 3
    assert "100 replayed requests answered by both arms, 1000 required" in v.reason
    assert "latency not compared: the thresholds need 1,000 baseline answers first" in v.reason


def test_recorded_labels_judge_accuracy_and_agreement() -> None:
    feedback = {f"r{i}": Outcome(label="1") for i in range(0, 3000, 2)}
    worse = Observed.of(
        candidate=answers("v2", 3000, seed=5, wrong_rate=0.2),
        baseline=answers("v1", 3000, seed=6, wrong_rate=0.05),
        feedback=feedback,
    )
    v = judge(worse, PLAN, min_requests=1000)
    assert v.status is PreflightStatus.FAILED and "accuracy" in v.reason
    assert v.labelled == 1500 and "accuracy" in v.plan.metrics
    assert v.agreement is not None and 0.7 < v.agreement < 0.85
    same = Observed.of(
        candidate=answers("v2", 3000, seed=7, wrong_rate=0.05),
        baseline=answers("v1", 3000, seed=8, wrong_rate=0.05),
        feedback=feedback,
    )
    assert judge(same, PLAN, min_requests=1000).status is PreflightStatus.PASSED


def test_a_recorded_baseline_is_not_compared_on_latency() -> None:
    seen = Observed.of(
        candidate=answers("v2", 2000, seed=1, latency=50.0),
        baseline=answers("v1", 2000, seed=2, latency=5.0),
    )
    assert judge(seen, PLAN, min_requests=1000).status is PreflightStatus.FAILED  # 10x slower
    v = judge(seen, PLAN, min_requests=1000, recorded_baseline=True)
    assert v.status is PreflightStatus.PASSED
    assert "latency not compared" in v.reason
    assert {e.metric for e in v.evidence} == {"errors"}


def test_unanswered_requests_count_as_errors_of_their_arm() -> None:
    cand = answers("v2", 3000, seed=1)
    seen = Observed.of(
        candidate=cand[:2700],
        baseline=answers("v1", 3000, seed=2),
        order=[a.request_id for a in cand],
    )
    v = judge(seen, PLAN, min_requests=1000)
    assert v.status is PreflightStatus.FAILED and v.unanswered == 300
    assert "300 replayed requests unanswered by an arm (counted as errors)" in v.reason


def test_recorded_numeric_feedback_judges_an_outcome_metric_and_charts_it() -> None:
    from model_canary.agents.preflight.report import outcome_charts, render, samples
    from model_canary.streams.messages import EPOCH, Preflight

    plan = parse_plan(
        {
            "model": "iris",
            "baseline": "v1",
            "canary": "v2",
            "metrics": {"errors": {}, "off": {"bad_when": "abs(value - prediction) > 0.5"}},
        }
    )
    # The true value is 1 for every request; a prediction "0" is off by 1.
    feedback = {f"r{i}": Outcome(value=1.0) for i in range(3000)}
    worse = Observed.of(
        candidate=answers("v2", 3000, seed=5, wrong_rate=0.2),
        baseline=answers("v1", 3000, seed=6, wrong_rate=0.05),
        feedback=feedback,
    )
    v = judge(worse, plan, min_requests=1000)
    assert v.status is PreflightStatus.FAILED and v.reason.startswith("would be rolled back: off:")
    assert v.labelled == 3000 and "accuracy" not in v.plan.metrics  # no labels: no accuracy
    [(title, bad)] = outcome_charts(v, worse)
    assert title.startswith("off: share of bad feedback per version")
    judged = {s.prediction: bad(s) for s in samples(worse)}
    assert judged == {"0": True, "1": False}
    job = Preflight(
        preflight_id="pf-1", model="iris", baseline_version="v1", candidate_version="v2",
        status=PreflightStatus.FAILED, window_start=EPOCH, started_at=EPOCH, updated_at=EPOCH,
    )  # fmt: skip
    assert "off: share of bad feedback per version" in render(job, v, worse)
