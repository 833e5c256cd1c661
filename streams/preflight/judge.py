"""A pre-flight's verdict, from the answers it collected, through the evaluator's own path.

Every replayed request is answered by both arms: the pre-flight is judged as a shadow
rollout of the candidate mirroring every cohort bucket (the pair weight, 50%), with the
rollout's plan. The collected answers become evidence records exactly as the product's
producers build them, and go through the evaluator's own state and decision rule:

* routed evidence (the replayer routed each request to both arms, in the second it was
  replayed), served evidence per worker micro-batch (the batch id each worker stamps on its
  replayed answers; an answer without one is a batch of one) and labelled evidence (each
  arm's prediction joined with the recorded label by the label join) are built with
  :class:`~model_canary.streams.evidence.builder.EvidenceBuilder`;
* they are applied, in the order the answers were written, to a
  :class:`~model_canary.streams.evidence.state.RolloutEvidence` feeding the plan's
  :class:`~model_canary.streams.stats.tally.Tally`; latency thresholds are fixed by
  :func:`~model_canary.streams.evaluation.due_thresholds` from the baseline's first answers
  (the step counts as having run its minimum duration, so 1,000 answers), and only answers
  after that are compared on latency, as live;
* once all are in, the watermark releases everything and
  :func:`~model_canary.streams.evaluation.step_snapshot` and
  :func:`~model_canary.streams.stats.decide` give the verdict, with the plan's policy less
  its minimum duration and requests (the pre-flight has its own ``min_requests``), and no
  warm-up (both arms are replayed side by side under the same load).

Then: the decision says ROLLBACK -> the candidate **would be rolled back** (``failed``);
fewer answered pairs than required, or labels arriving unevenly between the arms ->
``inconclusive``; otherwise -> ``passed`` (no metric shows harm).

A replayed request an arm did not answer within the collection's time counts as that arm's
error (a hang is harm). With the baseline's *recorded* answers instead of a replay, latency is
not compared (recorded under other load) and the verdict says so. When the replayed requests
have recorded labels, accuracy is judged even if the plan does not name it; the plan's outcome
metrics are judged on whatever feedback was recorded, as the label joiner judges it.

>>> a = [Answer(f"r{i}", "v2", False, 5.0, "1", i) for i in range(300)]
>>> b = [Answer(f"r{i}", "v1", False, 5.0, "1", i) for i in range(300)]
>>> seen = Observed.of(candidate=a, baseline=b)
>>> v = judge(seen, parse_plan({"model": "iris", "canary": "v2"}), min_requests=200)
>>> v.status.value, v.answered, v.agreement
('passed', 300, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from types import MappingProxyType

from model_canary.streams import cohort
from model_canary.streams.enums import Arm, Mode, Outcome, Phase, PreflightStatus
from model_canary.streams.evaluation import due_thresholds, step_snapshot
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.join import LabelJoin, Waiting
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import (
    EPOCH,
    MAX_BP,
    MetricEvidence,
    OffsetRange,
    RolloutState,
    from_epoch_ms,
)
from model_canary.streams.outcomes.expr import Outcome as Feedback
from model_canary.streams.outcomes.metrics import condition
from model_canary.streams.plan import (
    MetricPolicy,
    RolloutPlan,
    labelled_metrics,
    outcome_metrics,
    parse_plan,
)
from model_canary.streams.stats import Verdict, decide, policy, tally_for
from model_canary.streams.stats.layout import SHADOW_PAIR_BP
from model_canary.streams.stats.thresholds import MIN_THRESHOLD_ITEMS, QUANTILES

__all__ = ["Answer", "Observed", "PreflightVerdict", "judge", "parse_plan"]

#: Far enough in the future that every routed second is closed: the pre-flight judges once
#: every answer is in.
_END_MS = 2**45
#: The replayer, as the router of the pre-flight's evidence.
_REPLAYER = "preflight-replayer"
#: The answers of each arm written within this long (ms) make one served record per cell, as
#: a worker's transaction (it commits every 100 ms).
TXN_MS = 100


@dataclass(frozen=True, slots=True)
class Answer:
    """One arm's answer to a replayed (or recorded) request: error or not, latency, the
    prediction as text, when it was written (epoch ms), the request's routing key (its cohort
    bucket; None: the request id) and the worker micro-batch it was answered in (empty: a
    batch of its own)."""

    request_id: str
    version: str
    error: bool
    latency_ms: float
    prediction: str | None
    at_ms: int
    key: str | None = None
    batch: str = ""


@dataclass(frozen=True, slots=True)
class Observed:
    """What a pre-flight collected: each arm's answers by request id, the recorded feedback
    by request id, the requests replayed in replay order (and when each was replayed, epoch
    ms: its routed second; default: its first answer's time)."""

    candidate: Mapping[str, Answer]
    baseline: Mapping[str, Answer]
    feedback: Mapping[str, Feedback] = field(default_factory=dict)
    order: Sequence[str] = ()
    replayed_at: Mapping[str, int] = field(default_factory=dict)

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
    run = _Run(plan, state)
    pairs = unanswered = agree = compared = 0
    answers: list[tuple[Arm, Answer, int]] = []  # (arm, answer, routed second)
    for rid in seen.order:
        cand, base = seen.candidate.get(rid), seen.baseline.get(rid)
        if base is None and recorded_baseline:
            continue  # no recorded answer of the baseline to compare with
        known = [a for a in (cand, base) if a is not None]
        at = seen.replayed_at.get(rid, min((a.at_ms for a in known), default=0))
        second = at // 1000
        key = next((a.key for a in known if a.key), None)
        if cand is None or base is None:
            unanswered += 1
        # A hang is harm: counted as the arm's error once every answer that came is in.
        end = max((a.at_ms for a in known), default=at)
        cand = cand or _unanswered(rid, plan.canary, end, key)
        base = base or _unanswered(rid, plan.baseline or "baseline", end, key)
        pairs += 1
        run.routed(rid, key, second)
        answers += [(Arm.BASELINE, base, second), (Arm.CANARY, cand, second)]
        if cand.prediction is not None and base.prediction is not None:
            compared += 1
            agree += cand.prediction == base.prediction
    run.served(answers, separate=recorded_baseline)
    labelled = run.labelled(answers, seen.feedback) if labelled_metrics(plan) else 0
    verdict = run.verdict()
    agreement = agree / compared if compared else None
    notes = []
    if unanswered:
        notes.append(f"{unanswered} replayed requests unanswered by an arm (counted as errors)")
    if recorded_baseline:
        notes.append("baseline: recorded answers (latency not compared)")
    elif set(QUANTILES) & set(plan.metrics) and run.state.latency_thresholds_ms is None:
        notes.append(
            f"latency not compared: the thresholds need {MIN_THRESHOLD_ITEMS:,} baseline "
            "answers first"
        )
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


class _Run:
    """The pre-flight's evidence, built and applied as the product's producers and evaluator
    do (see the module docstring). Each built record cites its own position in the
    pre-flight's sequence of records of its kind (``offsets``), so every record is applied
    once."""

    def __init__(self, plan: RolloutPlan, state: RolloutState) -> None:
        self.plan = plan
        self.state = state
        self.evidence = RolloutEvidence.new(plan.model, state.rollout_id, tally_for(plan))
        self._routed = EvidenceBuilder("routed", source=_REPLAYER)
        self._buckets = cohort.Cohorts(state.rollout_id)
        self._bucket: dict[str, int] = {}
        self._seq = 0

    def _apply(self, builder: EvidenceBuilder, topic: str) -> None:
        self._seq += 1
        span = (OffsetRange(topic=topic, partition=0, first=self._seq, last=self._seq),)
        for ev in builder.build(span):
            self.evidence.apply(ev)

    def _cell(self, arm: Arm, version: str, second: int) -> Cell:
        # As a live shadow pair: the baseline's answer is served, the canary's mirrored.
        served = arm is Arm.BASELINE
        return Cell(
            self.plan.model, self.state.rollout_id, version, arm.value, served, SHADOW_PAIR_BP,
            second,
        )  # fmt: skip

    def routed(self, rid: str, key: str | None, second: int) -> None:
        """The replayer routed request ``rid`` to both arms in ``second``."""
        bucket = self._buckets.bucket((key or rid).encode())
        self._bucket[rid] = bucket
        for arm in (Arm.BASELINE, Arm.CANARY):
            self._routed.add_routed(self._cell(arm, "", second), [bucket])

    def served(self, answers: list[tuple[Arm, Answer, int]], *, separate: bool) -> None:
        """Both arms' answers, per worker micro-batch in the order they were written, each
        arm's batches of every :data:`TXN_MS` in one served record per cell (as a worker's
        transaction); ``separate``: the baseline's answers are recorded ones (no batch
        known: each its own)."""
        self._apply(self._routed, "replayed")

        def batch_of(item: tuple[Arm, Answer, int]) -> str:
            arm, a, _ = item
            if a.batch and not (separate and arm is Arm.BASELINE):
                return f"{arm.value}|{a.batch}"
            return f"{arm.value}|{a.request_id}"

        first_at: dict[str, int] = {}
        for item in answers:
            b = batch_of(item)
            first_at[b] = min(first_at.get(b, item[1].at_ms), item[1].at_ms)
        ordered = sorted(answers, key=lambda it: (first_at[batch_of(it)], batch_of(it)))
        thresholds: Thresholds | None = None
        builders = {
            arm: EvidenceBuilder("served", source=f"preflight-{arm.value}")
            for arm in (Arm.BASELINE, Arm.CANARY)
        }
        window = None
        for b, group in groupby(ordered, key=batch_of):
            items = list(group)
            if first_at[b] // TXN_MS != window:
                window = first_at[b] // TXN_MS
                thresholds = self._commit(builders.values(), thresholds, first_at[b])
            builders[items[0][0]].add_batch(
                [self._cell(arm, a.version, second) for arm, a, second in items],
                buckets=[self._bucket[a.request_id] for _, a, _ in items],
                errors=[a.error for _, a, _ in items],
                latencies_ms=[a.latency_ms for _, a, _ in items],
                batch_latency_ms=max(a.latency_ms for _, a, _ in items),
                thresholds=[thresholds] * len(items),
            )
        self._commit(builders.values(), thresholds, _END_MS)

    def _commit(
        self, builders: Iterable[EvidenceBuilder], thresholds: Thresholds | None, at_ms: int
    ) -> Thresholds | None:
        """Apply the transactions' served records; then, as the evaluator does, fix the
        latency thresholds once they are due (the answers after that are compared)."""
        for builder in builders:
            if builder:
                self._apply(builder, f"answers-{builder.source}")
        if thresholds is not None:
            return thresholds
        fixed = due_thresholds(self.evidence.tally, self.state, self.plan, from_epoch_ms(at_ms))
        if fixed is None:
            return None
        revision = self.state.revision + 1
        self.state = replace(self.state, revision=revision, latency_thresholds_ms=fixed)
        return Thresholds(revision, fixed.get("p95", math.inf), fixed.get("p99", math.inf))

    def labelled(
        self, answers: list[tuple[Arm, Answer, int]], feedback: Mapping[str, Feedback]
    ) -> int:
        """Each arm's prediction joined with the request's recorded feedback (as the label
        joiner does: a shadow pair's feedback joins both predictions), judged for accuracy
        and by the plan's outcome metrics; returns the requests it counted for."""
        join = LabelJoin()
        builder = EvidenceBuilder("labelled", source="preflight-labels")
        with_prediction: dict[str, list[tuple[Arm, Answer, int]]] = {}
        for arm, a, second in answers:
            if not a.error and a.prediction is not None:  # as live: errors predict nothing
                with_prediction.setdefault(a.request_id, []).append((arm, a, second))
        conditions = {n: condition(t) for n, t in outcome_metrics(self.plan).items()}
        labelled = 0
        for rid, preds in with_prediction.items():
            said = feedback.get(rid, Feedback())
            if not said.label and not (conditions and said != Feedback()):
                continue  # nothing for accuracy, and no outcome metric to read the rest
            for arm, a, second in preds:
                c = self._cell(arm, a.version, second)
                waiting = Waiting(
                    c.model, c.rollout_id, c.version, c.arm, c.served, c.weight_bp, c.second,
                    self._bucket[rid], len(preds), a.prediction or "", _END_MS // 1000,
                )  # fmt: skip
                join.add_prediction(rid, waiting, now_s=second)
            joined = join.add_label(rid, said, now_s=preds[0][2])
            counted = False
            for j in joined:
                correct, outcomes = j.judge(conditions)
                if correct is None and not outcomes:
                    continue  # this feedback says nothing about any metric
                w = j.waiting
                cell = Cell(
                    w.model, w.rollout_id, w.version, w.arm, w.served, w.weight_bp, w.second
                )
                builder.add_label(cell, w.bucket, correct, outcomes)
                counted = True
            labelled += counted
        self._apply(builder, "labels")
        return labelled

    def verdict(self) -> Verdict:
        self.evidence.settle(_END_MS)
        now = from_epoch_ms(_END_MS)
        rule = replace(
            policy(self.plan), min_canary_requests=0, min_duration_s=0.0, max_duration_s=math.inf
        )
        return decide(step_snapshot(self.evidence, self.state, rule, now), rule)


def judged_plan(plan: RolloutPlan, *, recorded_baseline: bool, labels: bool) -> RolloutPlan:
    """The plan a pre-flight judges by: the rollout's as a shadow of every request, without
    warm-up, without latency when the baseline's answers are recorded ones, with accuracy (at
    its defaults) when labels were recorded."""
    metrics: dict[str, MetricPolicy] = dict(plan.metrics)
    if recorded_baseline:
        for name in QUANTILES:
            metrics.pop(name, None)
    if labels and "accuracy" not in metrics:
        metrics["accuracy"] = MetricPolicy(0.02, 0.0)
    return replace(
        plan,
        mode="shadow",
        shadow_sample_bp=MAX_BP,
        control=False,
        warmup_seconds=0.0,
        metrics=MappingProxyType(metrics),
    )


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
        steps_bp=plan.steps_bp,
        weight_bp=0,
        shadow_sample_bp=MAX_BP,
        # Judged once every answer is in: the step has run its minimum duration.
        step_started_at=EPOCH,
        updated_at=EPOCH,
        plan_json=plan.to_json(),
    )


def _unanswered(rid: str, version: str, at_ms: int, key: str | None) -> Answer:
    return Answer(rid, version, True, 0.0, None, at_ms, key)
