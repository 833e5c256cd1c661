"""The evaluator's state keeps what the statistics need, not what the traffic was: fed minutes
of routed, served and labelled evidence as the router, workers and label joiner write it,
the entries it retains (transactions remembered for deduplication, pending seconds, open
seconds, queued per-bucket rows, the snapshot) stay the same size from the third minute to
the fifth (issue 11: evaluator RSS flat from 1 to 5 million labelled requests)."""

from __future__ import annotations

import numpy as np

from model_canary.streams.evidence.builder import Cell, EvidenceBuilder
from model_canary.streams.evidence.state import RolloutEvidence
from model_canary.streams.messages import Evidence, OffsetRange
from model_canary.streams.stats.tally import Tally

T0 = 1_800_000_000
PER_SECOND = 400  # requests routed per second, each labelled
PARTITIONS = 3  # of the predictions and feedback topics the joiner reads


def _span(topic: str, partition: int, first: int, n: int) -> OffsetRange:
    return OffsetRange(topic=topic, partition=partition, first=first, last=first + n - 1)


class Traffic:
    """One rollout at 50% (canary and control), a second of traffic per :meth:`second`:
    the router's transaction, one per worker, and the joiner's labels for the second
    before (a label comes after its answer)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)
        self.routed = EvidenceBuilder("routed", source="router")
        self.served = {a: EvidenceBuilder("served", source=f"worker-{a}") for a in ARMS}
        self.joiner = EvidenceBuilder("labelled", source="joiner")
        self.next = {"router": 0, "canary": 0, "control": 0, "joiner": 0}
        self.last: dict[str, np.ndarray] = {}

    def second(self, second: int) -> list[Evidence]:
        buckets = self.rng.integers(0, 10_000, PER_SECOND)
        by_arm = {"canary": buckets[buckets < 5000], "control": buckets[buckets >= 5000]}
        for arm, b in by_arm.items():
            self.routed.add_routed(Cell("m", "ro", "", arm, True, 5000, second), b.tolist())
        out = self.routed.build((self._take("router", "requests", PER_SECOND),))
        for arm, b in by_arm.items():
            cell = Cell("m", "ro", ARMS[arm], arm, True, 5000, second)
            self.served[arm].add_batch(
                [cell] * b.size,
                buckets=b.tolist(),
                errors=(self.rng.random(b.size) < 0.05).tolist(),
                latencies_ms=[3.0] * b.size,
                batch_latency_ms=3.0,
            )
            out += self.served[arm].build((self._take(arm, f"requests.{arm}", b.size),))
        for arm, b in self.last.items():
            cell = Cell("m", "ro", ARMS[arm], arm, True, 5000, second - 1)
            for i, bucket in enumerate(b.tolist()):
                self.joiner.add_label(cell, bucket, i % 7 != 0)
        if self.joiner:
            n = PER_SECOND // PARTITIONS
            first = self.next["joiner"]
            self.next["joiner"] += n + 1
            spans = tuple(
                _span(topic, p, first, n)
                for p in range(PARTITIONS)
                for topic in ("predictions", "feedback")
            )
            out += self.joiner.build(spans)
        self.last = by_arm
        return out

    def _take(self, who: str, topic: str, n: int) -> OffsetRange:
        first = self.next[who]
        self.next[who] += n + 1  # and the transaction's commit marker
        return _span(topic, 0, first, n)


ARMS = {"canary": "v2", "control": "v1"}


def retained(state: RolloutEvidence) -> dict[str, int]:
    """What the state holds that could grow with traffic."""
    tally = state.tally
    return {
        "applied_inputs": len(state.applied),
        "applied_cells": sum(len(a.cells) for a in state.applied.values()),
        "pending_seconds": len(tally.pending_seconds()),
        "open_seconds": len(state.seconds),
        "evidence_partitions": len(state.evidence_offsets),
        "routers": len(state.routers),
        "slots": len(tally.slots),
        "queued_rows_bound": int(tally._queued_rows <= tally._compact_at),
        "compact_at": tally._compact_at,
    }


def test_what_the_state_retains_does_not_grow_with_labelled_requests() -> None:
    state = RolloutEvidence.new("m", "ro", Tally(1, control=True, warmup_s=0))
    traffic = Traffic()
    marks: dict[int, dict[str, int]] = {}
    sizes: dict[int, int] = {}
    applied = 0
    for i in range(300):
        second = T0 + i
        for ev in traffic.second(second):
            applied += state.apply(ev)
        # The evaluator settles as it applies and on its clock (1 s later, in the next second).
        state.settle(now_ms=(second + 3) * 1000)
        if i in (179, 299):  # the same point of the tally's 30 s refresh cycle
            marks[i] = retained(state)
            sizes[i] = len(state.to_bytes())
    assert applied > 5 * 300, "every record counted"
    labelled = state.totals()["canary"]["labelled"] + state.totals()["control"]["labelled"]
    assert labelled == 299 * PER_SECOND
    assert state.watermark >= T0 + 295, "the seconds were released"
    assert marks[299] == marks[179], "retained entries grew with traffic"
    assert marks[299]["pending_seconds"] <= 3 and marks[299]["open_seconds"] <= 3
    # The snapshot holds per-bucket arrays (10,000 buckets), not per-request or per-second rows:
    # it grows only as the counts in them do (a few percent a minute, compressed).
    assert sizes[299] < 1.25 * sizes[179], sizes
