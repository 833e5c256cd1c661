"""The evaluator's logic between faust and the pure evidence state and decision rule.

Runs on the event loop and never blocks: it applies evidence records, decides on the clock,
and prepares checkpoints; the app around it does the Kafka calls off the loop.

* Per evidence partition it owns: the offset up to which the last checkpoint covers the
  partition (records below it are skipped outright: they are in the restored snapshots),
  the last offset handled, the models whose state changed since the last checkpoint and the
  dead letters to write with the next one.
* Per model: the current rollout's :class:`~model_canary.streams.evidence.state.RolloutEvidence`.
  A record of a rollout the evaluator has not seen yet starts a new state once the rollout
  state topic confirms that rollout (:class:`NeedsRollout`); a record of an older rollout is
  ignored.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from math import isfinite
from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

from model_canary.agents import metrics
from model_canary.agents.evaluator.decisions import DecisionSink, Emitted
from model_canary.agents.evaluator.store import Checkpoint, DeadLetterOut
from model_canary.agents.evaluator.view import FollowedView
from model_canary.agents.kafka.dead_letters import dead_letter_headers
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Arm, EvidenceKind, Phase
from model_canary.streams.errors import DecodeError
from model_canary.streams.evaluation import due_thresholds, plan_of, step_snapshot
from model_canary.streams.evidence.gather import Gathering, Item
from model_canary.streams.evidence.state import FrozenState, RolloutEvidence
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.messages import Evidence, epoch_ms
from model_canary.streams.stats import policy, tally_for
from model_canary.streams.stats.decide import CODES, OUTCOMES, decide_many
from model_canary.streams.stats.layout import ARMS, METRICS, N, metric_def
from model_canary.streams.stats.verdicts import should_publish
from model_canary.streams.stats.verdicts import verdict as in_words
from model_canary.streams.topics import TopicCatalogue

log = logging.getLogger(__name__)
M = TypeVar("M", bound=MetricWrapperBase)

AGENT = "evaluator"
DECIDING = frozenset({Phase.PROGRESSING, Phase.HOLDING, Phase.PROMOTING})
PENDING_TIMEOUT_S = 30.0


class NeedsRollout:
    """:meth:`Evaluator.on_evidence` met a rollout the view has not shown yet."""

    def __init__(self, model: str, rollout_id: str) -> None:
        self.model = model
        self.rollout_id = rollout_id


@dataclass(frozen=True, slots=True)
class Applied:
    """:meth:`Evaluator.on_evidence` counted a record of ``model``; ``released``: it let
    the model's watermark move (an evaluation is due)."""

    model: str
    released: bool


@dataclass
class Partition:
    """What the evaluator keeps per evidence partition it owns."""

    covered: int = -1  # the last checkpoint covers offsets below this
    processed: int = -1  # the last offset handled
    models: set[str] = field(default_factory=set)
    dirty: set[str] = field(default_factory=set)
    dead: list[DeadLetterOut] = field(default_factory=list)
    checkpointed_at: float = 0.0
    #: Transactions whose records have not all arrived (applied together once they have).
    gathering: Gathering = field(default_factory=Gathering)


@dataclass(frozen=True, slots=True)
class CheckpointData:
    """One partition's checkpoint, copied on the loop, to serialize and write off it."""

    partition: int
    position: int
    frozen: dict[str, FrozenState]
    dead: list[DeadLetterOut]
    models: set[str]

    @property
    def snapshots(self) -> dict[str, bytes]:
        """The models' snapshots, serialized now (the costly part: call it off the loop)."""
        return {model: state.to_bytes() for model, state in self.frozen.items()}


class Evaluator:
    """See the module docstring."""

    def __init__(self, settings_topic_prefix: str, view: FollowedView, sink: DecisionSink) -> None:
        self.catalogue = TopicCatalogue(settings_topic_prefix)
        self.view = view
        self.sink = sink
        self.states: dict[str, RolloutEvidence] = {}
        self.partitions: dict[int, Partition] = {}
        self._codec = codec_for(Evidence)
        self._pending: dict[str, tuple[int, float]] = {}  # model -> (revision, sent at)
        #: model -> (the last verdict that moved nothing, when it was published)
        self._last_said: dict[str, tuple[str, float]] = {}

    # -- partitions ------------------------------------------------------------------------
    def install(self, partition: int, checkpoint: Checkpoint) -> None:
        """Take ``partition`` over from its last checkpoint."""
        part = Partition(covered=checkpoint.position, processed=checkpoint.position - 1)
        for model, data in checkpoint.snapshots.items():
            try:
                state = RolloutEvidence.from_bytes(data)
            except ValueError as exc:
                log.error(
                    "the checkpoint of %s cannot be read (%s): its evidence starts over", model, exc
                )
                continue
            self.states[model] = state
            part.models.add(model)
        self.partitions[partition] = part
        log.info(
            "evidence partition %d: %d rollout(s) restored, resuming at offset %d",
            partition,
            len(part.models),
            max(0, checkpoint.position),
        )

    def revoke(self, partition: int) -> None:
        """Forget ``partition`` (another instance owns it now)."""
        part = self.partitions.pop(partition, None)
        if part is None:
            return
        for model in part.models:
            self.states.pop(model, None)
            self._pending.pop(model, None)
            self._last_said.pop(model, None)

    # -- evidence --------------------------------------------------------------------------
    def on_evidence(
        self,
        value: bytes | None,
        source: tuple[str, int, int],
        key: bytes | None = None,
        headers: object = None,
        now_ms: int = 0,
        left_out: frozenset[tuple[str, str]] = frozenset(),
    ) -> NeedsRollout | Applied | None:
        """Apply the evidence message read at ``source`` (topic, partition, offset): one
        record, or an :class:`~model_canary.streams.messages.EvidenceSet` (a transaction's
        records of one model, applied together). Returns :class:`NeedsRollout` when a
        record's rollout must first be confirmed by the view (nothing is applied then: call
        again after :meth:`FollowedView.wait_for`, with the same arguments and, if the view
        never showed that rollout, ``(model, rollout_id)`` added to ``left_out``: its records
        are an older rollout's late evidence, left out), or :class:`Applied` when it counted
        (``now_ms``: settle the rollout then, so a second it completes is released at once)."""
        _topic, partition, offset = source
        part = self.partitions[partition]
        if offset < part.covered:
            return None  # in the restored snapshots already
        try:
            records, is_set = decode_evidence(value or b"")
        except DecodeError as exc:
            self._dead(part, value, key, headers, source, exc.reason, str(exc))
            part.processed = offset
            return None
        kept: list[Evidence] = []
        for ev in records:
            if ev.arm is Arm.STABLE:
                continue
            if (ev.model, ev.rollout_id) in left_out:
                metrics.EVIDENCE.labels("unknown", "stale").inc()
                continue
            state = self.states.get(ev.model)
            if state is None or state.rollout_id != ev.rollout_id:
                rollout = self.view.get(ev.model)
                if rollout is None or rollout.rollout_id != ev.rollout_id:
                    return NeedsRollout(ev.model, ev.rollout_id)
            kept.append(ev)
        part.processed = offset
        _child(metrics.EVIDENCE_MESSAGES, "set" if is_set else "record").inc()
        if not kept:
            return None
        for ev in kept:  # every rollout is confirmed: start the new ones' states
            state = self.states.get(ev.model)
            if state is None or state.rollout_id != ev.rollout_id:
                rollout = self.view.get(ev.model)
                assert rollout is not None  # confirmed above
                state = RolloutEvidence.new(ev.model, ev.rollout_id, tally_for(plan_of(rollout)))
                self.states[ev.model] = state
                part.models.add(ev.model)
                self._pending.pop(ev.model, None)
                self._last_said.pop(ev.model, None)
        # A transaction's records are applied together, once all have arrived.
        at = _monotonic_ms()
        items = [item for ev in kept for item in part.gathering.offer(ev, offset=offset, now_ms=at)]
        raw = None if is_set else (offset, value, key, headers)
        return self._apply(part, partition, items, now_ms, raw)

    def _apply(
        self,
        part: Partition,
        partition: int,
        items: list[Item],
        now_ms: int,
        raw: tuple[int, bytes | None, bytes | None, object] | None = None,
    ) -> Applied | None:
        """Count ``items`` (records and their offsets) in their rollouts' states; returns
        :class:`Applied` for the last model that counted one (``raw``: the offset, value, key
        and headers of the record just read, for a dead letter)."""
        counted: dict[str, RolloutEvidence] = {}
        outcomes: dict[tuple[EvidenceKind, bool], int] = {}  # counted once per message
        try:
            for ev, offset in items:
                state = self.states.get(ev.model)
                if state is None or state.rollout_id != ev.rollout_id:
                    continue  # the rollout changed while the record was held: late evidence
                try:
                    applied = state.apply(ev, partition=partition, offset=offset)
                except ValueError as exc:
                    if raw is not None and raw[0] == offset:
                        _at, value, key, headers = raw
                    else:  # a record held earlier: its content, encoded again
                        value, key, headers = self._codec.encode(ev), ev.model.encode(), None
                    source = (self.catalogue.evidence, partition, offset)
                    self._dead(part, value, key, headers, source, "invalid-record", str(exc))
                    continue
                outcome = (ev.kind, applied)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if applied:
                    part.dirty.add(ev.model)
                    counted[ev.model] = state
        finally:
            for (kind, applied), n in outcomes.items():
                _child(metrics.EVIDENCE, kind.value, "applied" if applied else "duplicate").inc(n)
        result, released = None, False
        for model, state in counted.items():
            before = state.watermark
            released = (bool(now_ms) and state.settle(now_ms) > before) or released
            result = Applied(model, released)
        return result

    def _dead(
        self,
        part: Partition,
        value: bytes | None,
        key: bytes | None,
        headers: object,
        source: tuple[str, int, int],
        reason: str,
        detail: str,
    ) -> None:
        log.warning("dead letter from %s[%s]@%s: %s: %s", *source, reason, detail)
        out = dead_letter_headers(headers, source, agent=AGENT, reason=reason, detail=detail)
        part.dead.append(DeadLetterOut(value, key, out))

    # -- deciding --------------------------------------------------------------------------
    def decide(self, now: datetime) -> list[tuple[str, int, Emitted]]:
        """Settle every owned rollout's evidence and decide; returns what to publish (call
        :meth:`published` for each once it is out)."""
        out: list[tuple[str, int, Emitted]] = []
        now_ms = epoch_ms(now)
        for partition, part in self.partitions.items():
            if len(part.gathering):
                late = part.gathering.overdue(_monotonic_ms())
                self._apply(part, partition, late, now_ms)
        for model, evidence in list(self.states.items()):
            state = self.view.get(model)
            if state is None or state.rollout_id != evidence.rollout_id:
                continue
            for phase in Phase:
                _child(metrics.PHASE, model, phase.value).set(1 if phase is state.phase else 0)
            before = evidence.watermark
            if evidence.settle(now_ms) != before:
                self._dirty(model)
            _export(model, evidence)
            if state.phase not in DECIDING:
                continue
            pending = self._pending.get(model)
            if (
                pending
                and pending[0] == state.revision
                and time.monotonic() - pending[1] < PENDING_TIMEOUT_S
            ):
                continue  # our command for this revision is not applied yet
            plan = plan_of(state)
            thresholds = due_thresholds(evidence.tally, state, plan, now)
            if thresholds is not None:
                out.append((model, state.revision, self.sink.thresholds(state, thresholds)))
                continue
            rule = policy(plan)
            snapshot = step_snapshot(evidence, state, rule, now)
            decided = decide_many(snapshot, rule)
            _export_decided(model, evidence, now.timestamp())
            for name, log_e in decided.rollback.items():
                value = float(log_e[0])
                _child(metrics.TEST_STATISTIC, model, name).set(value if isfinite(value) else 0.0)
            # A verdict that moves nothing (a HOLD, or a shadow's "no harm" ADVANCE) is
            # published when it changes and again every minute with its newest evidence; one
            # with a command is retried by the pending timeout above. Its words and displayed
            # bounds (most of a decision's cost) are worked out only when it is published.
            outcome, code = OUTCOMES[int(decided.outcome[0])], CODES[int(decided.code[0])]
            said = f"{state.revision}:{outcome.value}:{code}"
            if not should_publish(self._last_said.get(model), said, now.timestamp()):
                continue
            verdict = in_words(snapshot, decided, rule)
            emitted = self.sink.decision(state, verdict, evidence.evidence_offsets)
            out.append((model, state.revision, emitted))
            self._last_said[model] = (said, now.timestamp())
        return out

    def published(self, model: str, state_revision: int, emitted: Emitted) -> None:
        if emitted.decision is not None:
            metrics.DECISIONS.labels(emitted.decision.outcome.value).inc()
        if emitted.command is not None:
            self._pending[model] = (state_revision, time.monotonic())
            self._last_said.pop(model, None)

    def _dirty(self, model: str) -> None:
        for part in self.partitions.values():
            if model in part.models:
                part.dirty.add(model)

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, partition: int) -> CheckpointData | None:
        """The partition's checkpoint if anything changed since the last one (None if not):
        snapshots of the changed models, the dead letters, and the offset they cover (the one
        after the last handled: never further, however far the consumer has fetched, since a
        record fetched is not yet a record counted; nor past a record held for the rest of its
        transaction)."""
        part = self.partitions.get(partition)
        if part is None:
            return None
        covered = part.processed + 1
        held = part.gathering.oldest()
        if held is not None:  # read again after a restart, with the rest of its transaction
            covered = min(covered, held)
        if not part.dirty and not part.dead and covered <= part.covered:
            return None
        models, part.dirty = part.dirty, set()
        dead, part.dead = part.dead, []
        frozen = {m: self.states[m].freeze() for m in models if m in self.states}
        return CheckpointData(partition, covered, frozen, dead, models)

    def checkpointed(self, data: CheckpointData) -> None:
        part = self.partitions.get(data.partition)
        if part is not None:
            part.covered = max(part.covered, data.position)
            part.checkpointed_at = time.monotonic()

    def checkpoint_failed(self, data: CheckpointData) -> None:
        """Put a checkpoint that was not written back, for the next attempt."""
        part = self.partitions.get(data.partition)
        if part is not None:
            part.dirty |= data.models
            part.dead[:0] = data.dead


@functools.lru_cache(maxsize=4096)
def _child(metric: M, *labels: str) -> M:
    """``metric.labels(*labels)``, looked up once: ``labels`` takes a lock and checks its
    arguments every time, and the evaluator counts per message and sets some thirty gauges
    per decision (it never removes a series, so a child once looked up stays the one
    exported)."""
    return metric.labels(*labels)


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def _export_decided(model: str, evidence: RolloutEvidence, at: float) -> None:
    # (slots, arms, fields): released, warm-up left out; summed over slots, as numbers
    totals = evidence.tally.totals[0].sum(axis=0).tolist()
    for a, arm in enumerate(ARMS):
        _child(metrics.DECIDED, model, arm).set(totals[a][N])
    _child(metrics.EVALUATED_AT, model).set(at)


def _export(model: str, evidence: RolloutEvidence) -> None:
    """Per metric (the built-in ones and the rollout's outcome metrics) and arm: items
    compared and bad items (``canary_evaluated_requests``, ``canary_bad_events``)."""
    tally = evidence.tally
    totals = tally.totals[0].sum(axis=0).tolist()  # (arms, fields), over every slot
    for name in (*METRICS, *tally.outcomes):
        mdef = metric_def(name)
        n, bad = tally.index(mdef.exposure), tally.index(mdef.bad)
        for a, arm in enumerate(ARMS):
            _child(metrics.EVALUATED, model, name, arm).set(totals[a][n])
            _child(metrics.BAD_EVENTS, model, name, arm).set(totals[a][bad])
