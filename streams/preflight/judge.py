"""A pre-flight's verdict, from the answers it collected, through the evaluator's own path.

Every replayed request is answered by both arms (a shadow pair: weight 50%), so the
pre-flight's evidence is fed, request by request in replay order, into the same
:class:`~model_canary.streams.evaluation.Aggregate` a live rollout fills (errors, latency
exceedances of thresholds fixed from the first baseline answers, labels joined with each
arm's prediction), then its snapshot into the same
:func:`~model_canary.streams.stats.decide` with the plan's policy. Nothing is re-implemented:

* the decision says ROLLBACK -> the candidate **would be rolled back** (``failed``);
* fewer answered pairs than required -> ``inconclusive``;
* otherwise -> ``passed`` (no metric shows harm).

A replayed request an arm did not answer within the collection's time counts as that arm's
error (a hang is harm). With the baseline's *recorded* answers instead of a replay, latency is
not compared (recorded under other load) and the verdict says so. When the replayed requests
have recorded labels, accuracy is judged even if the plan does not name it.

>>> a = [Answer(f"r{i}", "v2", False, 5.0, "1", i) for i in range(300)]
>>> b = [Answer(f"r{i}", "v1", False, 5.0, "1", i) for i in range(300)]
>>> seen = Observed.of(candidate=a, baseline=b)
>>> v = judge(seen, parse_plan({"model": "iris", "canary": "v2"}), min_requests=200)
>>> v.status.value, v.answered, v.agreement
('passed', 300, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from model_canary.streams.enums import Arm, Mode, Outcome, Phase, PreflightStatus
from model_canary.streams.evaluation import LATENCY_METRICS, Aggregate, policy
from model_canary.streams.messages import (
    EPOCH,
    MetricEvent,
    MetricEvidence,
    RolloutState,
    from_epoch_ms,
)
from model_canary.streams.outcomes.expr import Outcome as Feedback
from model_canary.streams.plan import MetricPolicy, RolloutPlan, parse_plan
from model_canary.streams.routing import SHADOW_PAIR_BP
from model_canary.streams.stats import decide

__all__ = ["Answer", "Observed", "PreflightVerdict", "judge", "parse_plan"]

#: Far enough in the future that every held-back second is released: the pre-flight judges
#: once every answer is in.
_END_MS = 2**45


@dataclass(frozen=True, slots=True)
class Answer:
    """One arm's answer to a replayed (or recorded) request: error or not, latency, the
    prediction as text, and when it was written (epoch ms)."""

    request_id: str
    version: str
    error: bool
    latency_ms: float
    prediction: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class Observed:
    """What a pre-flight collected: each arm's answers by request id, the recorded feedback
    by request id, the requests replayed in replay order, and those an arm never answered."""

    candidate: Mapping[str, Answer]
    baseline: Mapping[str, Answer]
    feedback: Mapping[str, Feedback] = field(default_factory=dict)
    order: Sequence[str] = ()

    @classmethod
    def of(
        cls,
        *,
        candidate: Iterable[Answer],
        baseline: Iterable[Answer],
        feedback: Mapping[str, Feedback] | None = None,
        order: Sequence[str] | None = None,
    ) -> Observed:
        """From answer lists (the order: the candidate's answers in the order given)."""
        cand = {a.request_id: a for a in candidate}
        base = {a.request_id: a for a in baseline}
        return cls(cand, base, dict(feedback or {}), list(order) if order is not None else [*cand])


@dataclass(frozen=True, slots=True)
class PreflightVerdict:
    """The verdict: status, the reason in words, the evidence per metric (as a rollout's
    decision carries it), how many pairs were compared, labelled, left unanswered, and the
    share of pairs whose predictions agree."""

    status: PreflightStatus
    reason: str
    evidence: tuple[MetricEvidence, ...]
    answered: int
    labelled: int
    unanswered: int
    agreement: float | None
    plan: RolloutPlan

    @property
    def exit_code(self) -> int:
        """For CI pipelines: 0 passed, 1 would be rolled back, 3 inconclusive (2 is every
        command's exit code for an error)."""
        return {PreflightStatus.PASSED: 0, PreflightStatus.FAILED: 1}.get(self.status, 3)


def judge(
    seen: Observed,
    plan: RolloutPlan,
    *,
    min_requests: int,
    recorded_baseline: bool = False,
    rollout_id: str = "preflight",
) -> PreflightVerdict:
    """The pre-flight's verdict (see the module docstring)."""
    labelled_rids = [rid for rid in seen.order if seen.feedback.get(rid, Feedback()).label]
    plan = judged_plan(plan, recorded_baseline=recorded_baseline, labels=bool(labelled_rids))
    state = _state(plan, rollout_id)
    agg = Aggregate.new(rollout_id)
    pairs = labelled = unanswered = agree = compared = 0
    for rid in seen.order:
        cand, base = seen.candidate.get(rid), seen.baseline.get(rid)
        if base is None and recorded_baseline:
            continue  # no recorded answer of the baseline to compare with
        at = min(a.at_ms for a in (cand, base) if a is not None) if (cand or base) else 0
        if cand is None or base is None:
            unanswered += 1
        cand = cand or _unanswered(rid, plan.canary, at)
        base = base or _unanswered(rid, plan.baseline or "baseline", at)
        pairs += 1
        keep = [
            agg.record(_event(a, arm, rollout_id, plan.model), state, plan)
            for a, arm in ((base, Arm.BASELINE), (cand, Arm.CANARY))
        ]
        if cand.prediction is not None and base.prediction is not None:
            compared += 1
            agree += cand.prediction == base.prediction
        label = seen.feedback.get(rid, Feedback()).label
        if label and "accuracy" in plan.metrics and any(keep):
            labelled += 1
            for a, canary, countable in ((base, False, keep[0]), (cand, True, keep[1])):
                if countable:  # as live: an error answer has no prediction to judge
                    agg.label(
                        weight_bp=SHADOW_PAIR_BP,
                        canary=canary,
                        correct=a.prediction == label,
                        this_step=True,
                    )
    snapshot = agg.snapshot(state, plan, from_epoch_ms(_END_MS))
    verdict = decide(snapshot, replace(policy(plan), min_canary_requests=0, min_duration_s=0.0))
    agreement = agree / compared if compared else None
    notes = []
    if unanswered:
        notes.append(f"{unanswered} replayed requests unanswered by an arm (counted as errors)")
    if recorded_baseline:
        notes.append("baseline: recorded answers (latency not compared)")
    if verdict.outcome is Outcome.ROLLBACK:
        status, reason = PreflightStatus.FAILED, f"would be rolled back: {verdict.reason}"
    elif pairs < min_requests:
        status = PreflightStatus.INCONCLUSIVE
        reason = f"{pairs} replayed requests answered by both arms, {min_requests} required"
    elif verdict.code == "sample-ratio-mismatch":
        status, reason = PreflightStatus.INCONCLUSIVE, verdict.reason
    else:
        status = PreflightStatus.PASSED
        reason = f"would pass: no harm detected on {pairs} replayed requests"
    if notes:
        reason = f"{reason} ({'; '.join(notes)})"
    return PreflightVerdict(
        status, reason, verdict.evidence, pairs, labelled, unanswered, agreement, plan
    )


def judged_plan(plan: RolloutPlan, *, recorded_baseline: bool, labels: bool) -> RolloutPlan:
    """The plan a pre-flight judges by: the rollout's, without latency when the baseline's
    answers are recorded ones, with accuracy (at its defaults) when labels were recorded."""
    metrics: dict[str, MetricPolicy] = dict(plan.metrics)
    if recorded_baseline:
        for name in LATENCY_METRICS:
            metrics.pop(name, None)
    if labels and "accuracy" not in metrics:
        metrics["accuracy"] = MetricPolicy(0.02, 0.0)
    return replace(plan, metrics=MappingProxyType(metrics))


def _state(plan: RolloutPlan, rollout_id: str) -> RolloutState:
    baseline = plan.baseline or "baseline"
    return RolloutState(
        model=plan.model,
        rollout_id=rollout_id,
        stable_version=baseline,
        baseline_version=baseline,
        canary_version=plan.canary,
        mode=Mode.SHADOW,
        phase=Phase.PROGRESSING,
        steps_bp=(10_000,),
        weight_bp=10_000,
        # Every replayed request counts: the step "began" a warm-up before the epoch.
        step_started_at=from_epoch_ms(-round(plan.warmup_seconds * 1000) - 1),
        updated_at=EPOCH,
        plan_json=plan.to_json(),
    )


def _event(answer: Answer, arm: Arm, rollout_id: str, model: str) -> MetricEvent:
    when = from_epoch_ms(answer.at_ms)
    return MetricEvent(
        request_id=answer.request_id,
        model=model,
        version=answer.version,
        arm=arm,
        served=arm is Arm.BASELINE,
        rollout_id=rollout_id,
        weight_bp=SHADOW_PAIR_BP,
        latency_ms=answer.latency_ms,
        error=answer.error,
        prediction=answer.prediction,
        routed_at=when,
        completed_at=when,
    )


def _unanswered(rid: str, version: str, at_ms: int) -> Answer:
    return Answer(rid, version, True, 0.0, None, at_ms)
