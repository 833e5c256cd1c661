"""Evidence as a router and one worker per arm write it, for driving an evaluator without
running them: each simulated producer aggregates its transactions with the product's
:class:`~model_canary.streams.evidence.builder.EvidenceBuilder` and commits them with a
transactional producer of its own, citing input offsets that advance as real ones would.

* :meth:`SimulatedServing.tick` routes ``n`` requests (uniform cohort buckets: hashed keys),
  commits the router's transaction, then each arm's worker answers them in micro-batches of
  64 (log-normal latencies, an error rate) and commits its transaction; with
  ``predictions`` the workers also publish each answer's prediction, keyed by request id, in
  their transaction, and :meth:`SimulatedServing.labels_due` sends the labels later.
* :meth:`SimulatedServing.backlog` writes many seconds of traffic fast, re-using a few
  simulated transactions' records with their seconds and offsets moved on (the evaluator's
  cost depends on records, not on their content).

>>> # serving = SimulatedServing(settings, state, seed=1); serving.tick(1000, time.time())
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaException

from model_canary.agents.kafka.clients import LazyProducer, new_producer, produce
from model_canary.agents.kafka.errors import wrap
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.enums import Arm, Mode
from model_canary.streams.evaluation import plan_of
from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.wire import encode_evidence
from model_canary.streams.messages import (
    Evidence,
    Feedback,
    OffsetRange,
    Prediction,
    RolloutState,
    from_epoch_ms,
)
from model_canary.streams.settings import Settings
from model_canary.streams.stats.layout import arm_ranges
from model_canary.streams.topics import TopicCatalogue

BATCH = 64
LABELS = ("a", "b", "c")


@dataclass
class TickResult:
    """One tick: requests routed (and answered), evidence records and predictions written."""

    requests: int
    records: int
    predictions: int


class _Txn:
    """A simulated producer: transactional id, the input it pretends to consume."""

    def __init__(self, settings: Settings, tid: str, topic: str) -> None:
        self.producer = new_producer(
            settings,
            "canary-bench-evidence",
            transactional_id=tid,
            **{"queue.buffering.max.messages": 1_000_000},
        )
        try:
            self.producer.init_transactions(60)
        except KafkaException as exc:
            raise wrap(f"init transactions ({tid})", exc) from None
        self.tid = tid
        self.topic = topic
        self.next_offset = 0

    def span(self, n: int) -> OffsetRange:
        """The input range of a transaction of ``n`` messages (plus its commit marker)."""
        first = self.next_offset
        self.next_offset += n + 1
        return OffsetRange(topic=self.topic, partition=0, first=first, last=first + n - 1)

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        produce(self.producer, topic, value, key)

    def commit(self) -> None:
        self.producer.commit_transaction(60)


class SimulatedServing:
    """One model's rollout served by a simulated router and workers (see the module)."""

    def __init__(
        self,
        settings: Settings,
        state: RolloutState,
        *,
        seed: int = 1,
        error_rate: float = 0.01,
        latency_ms: float = 5.0,
        predictions: bool = False,
        label_delay_s: float = 2.0,
        instance: str = "sim",
    ) -> None:
        assert state.canary_version is not None
        self.settings = settings
        self.state = state
        self.catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
        self.rng = np.random.default_rng(seed)
        self.error_rate = error_rate
        self.latency_ms = latency_ms
        self.predictions = predictions
        self.label_delay_s = label_delay_s
        self.weight = 5000 if state.mode is Mode.SHADOW else state.weight_bp
        prefix = f"{settings.topic_prefix}.bench-{instance}"
        model = state.model
        # Cohort buckets per arm as the router splits them (a control arm when the plan routes
        # one: the baseline version, its own workers).
        self.ranges = {
            arm: span
            for arm, span in arm_ranges(self.weight, plan_of(state).control).items()
            if span[1] > span[0]
        }
        baseline = state.baseline_version
        self.versions = {"baseline": baseline, "control": baseline, "canary": state.canary_version}
        self.router = _Txn(settings, f"{prefix}.router", self.catalogue.requests)
        self.workers = {
            arm: _Txn(
                settings,
                f"{prefix}.worker.{arm}",
                self.catalogue.version_requests(model, self.versions[arm]),
            )
            for arm in self.ranges
        }
        self.routed = EvidenceBuilder("routed", source=self.router.tid)
        self.served = {
            arm: EvidenceBuilder("served", source=txn.tid) for arm, txn in self.workers.items()
        }
        self._sets = settings.evidence_sets  # CANARY_EVIDENCE_FORMAT, as the producers
        self._prediction = codec_for(Prediction)
        self._feedback = codec_for(Feedback)
        self._labels: collections.deque[tuple[float, str, str]] = collections.deque()
        self._label_producer: LazyProducer | None = None
        self._seq = 0
        self._py = random.Random(seed)

    def _split(self, buckets: np.ndarray) -> dict[str, np.ndarray]:
        """The buckets of each arm, as the router routes them."""
        return {
            arm: buckets[(buckets >= lo) & (buckets < hi)] for arm, (lo, hi) in self.ranges.items()
        }

    # -- live traffic ----------------------------------------------------------------------
    def tick(self, n: int, now: float) -> TickResult:
        """Route ``n`` requests at ``now`` (epoch s) and answer them, each producer in a
        transaction of its own."""
        s = self.state
        second = int(now)
        buckets = self.rng.integers(0, 10_000, n)
        by_arm = {
            arm: buckets[(buckets >= lo) & (buckets < hi)] for arm, (lo, hi) in self.ranges.items()
        }
        self.router.producer.begin_transaction()
        records = 0
        for arm, b in by_arm.items():
            cell = Cell(s.model, s.rollout_id, "", arm, True, self.weight, second)
            self.routed.add_routed(cell, b.tolist())
        routed = self.routed.build((self.router.span(n),))
        for key, value in encode_evidence(routed, sets=self._sets):
            self.router.produce(self.catalogue.evidence, value, key)
        records += len(routed)
        self.router.commit()
        preds = 0
        for arm, b in by_arm.items():
            if not b.size:
                continue
            worker = self.workers[arm]
            worker.producer.begin_transaction()
            self._answer(arm, b, second)
            if self.predictions:
                preds += self._predict(arm, b, second, now, worker)
            served = self.served[arm].build((worker.span(int(b.size)),))
            for key, value in encode_evidence(served, sets=self._sets):
                worker.produce(self.catalogue.evidence, value, key)
            records += len(served)
            worker.commit()
        return TickResult(n, records, preds)

    def _answer(self, arm: str, buckets: np.ndarray, second: int) -> None:
        s = self.state
        cell = Cell(s.model, s.rollout_id, self.versions[arm], arm, True, self.weight, second)
        errors = self.rng.random(buckets.size) < self.error_rate
        latencies = self.rng.lognormal(np.log(self.latency_ms), 0.5, buckets.size)
        b_list, e_list, l_list = buckets.tolist(), errors.tolist(), latencies.tolist()
        for start in range(0, buckets.size, BATCH):
            stop = min(start + BATCH, buckets.size)
            self.served[arm].add_batch(
                [cell] * (stop - start),
                buckets=b_list[start:stop],
                errors=e_list[start:stop],
                latencies_ms=l_list[start:stop],
                batch_latency_ms=max(l_list[start:stop]),
            )

    def _predict(self, arm: str, buckets: np.ndarray, second: int, now: float, worker: _Txn) -> int:
        s = self.state
        for bucket in buckets.tolist():
            self._seq += 1
            rid = f"{s.rollout_id[:8]}-{self._seq}"
            label = LABELS[self._seq % 3]
            guess = label if self._py.random() < 0.9 else LABELS[(self._seq + 1) % 3]
            p = Prediction(
                request_id=rid,
                model=s.model,
                version=self.versions[arm],
                rollout_id=s.rollout_id,
                arm=Arm(arm),
                weight_bp=self.weight,
                second=second,
                bucket=bucket,
                prediction=guess,
            )
            worker.produce(self.catalogue.predictions, self._prediction.encode(p), rid.encode())
            self._labels.append((now + self.label_delay_s, rid, label))
        return int(buckets.size)

    def labels_due(self, now: float) -> int:
        """Send the labels whose delay has passed (as clients do: keyed by request id, not
        transactional); returns how many."""
        if self._label_producer is None:
            self._label_producer = LazyProducer(
                self.settings, "canary-bench-labels", **{"queue.buffering.max.messages": 2_000_000}
            )
        producer = self._label_producer
        n = 0
        at = from_epoch_ms(int(min(now, time.time()) * 1000))
        while self._labels and self._labels[0][0] <= now:
            _due, rid, label = self._labels.popleft()
            fb = Feedback(request_id=rid, model=self.state.model, label=label, observed_at=at)
            value = self._feedback.encode(fb)
            produce(producer.producer, self.catalogue.feedback, value, rid.encode())
            n += 1
        if n:
            producer.producer.poll(0)
        return n

    def flush(self, timeout: float = 60.0) -> None:
        if self._label_producer is not None:
            self._label_producer.flush(timeout)

    # -- backlog ---------------------------------------------------------------------------
    def backlog(self, rate: float, seconds: float, *, templates: int = 20) -> TickResult:
        """``seconds`` of traffic at ``rate`` requests/s, ending a few seconds ago, written as
        fast as possible: ``templates`` simulated ticks of 100 ms, their records re-used with
        seconds and offsets moved on."""
        per_tick = max(1, int(rate / 10))
        samples: list[tuple[list[Evidence], dict[str, int]]] = []
        for i in range(templates):
            samples.append(self._template(per_tick, seed_second=i))
        ticks = int(seconds * 10)
        start = time.time() - seconds - 5
        total = TickResult(0, 0, 0)
        for t in range(ticks):
            records, sizes = samples[t % templates]
            second = int(start + t / 10)
            spans = {
                "router": self.router.span(sizes["router"]),
                **{arm: self.workers[arm].span(sizes[arm]) for arm in self.workers if sizes[arm]},
            }
            by_producer: dict[str, list[Evidence]] = collections.defaultdict(list)
            for ev in records:
                who = "router" if ev.kind == "routed" else ev.arm.value
                by_producer[who].append(
                    dataclasses.replace(ev, second=second, offsets=(spans[who],))
                )
            for who, evs in by_producer.items():
                txn = self.router if who == "router" else self.workers[who]
                txn.producer.begin_transaction()
                for key, value in encode_evidence(evs, sets=self._sets):
                    txn.produce(self.catalogue.evidence, value, key)
                txn.commit()
                total.records += len(evs)
            total.requests += sizes["router"]
        return total

    def _template(self, n: int, seed_second: int) -> tuple[list[Evidence], dict[str, int]]:
        s = self.state
        buckets = self.rng.integers(0, 10_000, n)
        by_arm = self._split(buckets)
        builder = EvidenceBuilder("routed", source=self.router.tid)
        for arm, b in by_arm.items():
            builder.add_routed(
                Cell(s.model, s.rollout_id, "", arm, True, self.weight, seed_second), b.tolist()
            )
        records = builder.build(())
        for arm, b in by_arm.items():
            if b.size:
                self._answer(arm, b, seed_second)
                records += self.served[arm].build(())
        sizes = {"router": n, **{arm: int(b.size) for arm, b in by_arm.items()}}
        return records, sizes
