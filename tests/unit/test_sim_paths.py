"""The simulator's path and the evaluator's path agree.

``canary sim`` feeds many rollouts at once: completeness
(:class:`~model_canary.streams.stats.watermark.Completeness`) and the tally take per-replica
rows, arms' answers arrive after their lag, and the watermark is asked once a second. The
evaluator applies evidence records one by one through
:class:`~model_canary.streams.evidence.state.RolloutEvidence`, which runs the same
completeness and tally code over one rollout. Fed the same traffic, both must give the same
watermarks, tallies, snapshots and decisions, second by second, feedback included (an outcome
metric's labelled evidence, arriving late, some of it after its second was released).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.evidence.builder import Cell, EvidenceBuilder, Thresholds
from model_canary.streams.evidence.columns import unpack_units
from model_canary.streams.evidence.state import CLOSE_MS, RolloutEvidence
from model_canary.streams.messages import Evidence, OffsetRange
from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.outcomes.metrics import condition, judge
from model_canary.streams.plan import parse_plan
from model_canary.streams.stats import decide_many, policy, take_snapshot, tally_for
from model_canary.streams.stats.layout import ARMS, BATCH_FIELDS, PRODUCED
from model_canary.streams.stats.snapshot import Progress
from model_canary.streams.stats.tally import TRASH
from model_canary.streams.stats.watermark import Completeness

T0 = 1_700_000_000
WEIGHT = 5000
PLAN = parse_plan(
    {
        "model": "m",
        "canary": "v2",
        "steps": [50, 100],
        "step": {"min_duration": "5s", "min_canary_requests": 20, "warmup": "2s"},
        "metrics": {
            "errors": {},
            "latency_p95": {},
            "thumbs_down": {"bad_when": "label == 'down'", "min_label_coverage": 0.2},
        },
    }
)
DOWN = condition("label == 'down'")


@dataclass
class Second:
    """One replica's traffic in one routed second: per arm, the answered items' buckets and
    error flags, and the evidence records the router and workers publish for it (an arm's
    answers in two worker transactions, of two input partitions: the first batch and the
    rest)."""

    buckets: dict[str, list[int]]
    errors: dict[str, list[bool]]
    routed: list[Evidence]
    served: dict[str, list[Evidence | None]]
    #: per arm, the label joiner's record of the users' ratings of its answers (None: none)
    labelled: dict[str, Evidence | None]


def traffic(seed: int, replicas: int, seconds: int) -> list[list[Second]]:
    """Per replica and second: requests routed by bucket, answered with errors and
    latencies against fixed thresholds, and the evidence records that say so."""
    rng = random.Random(seed)
    ranges = tally_for(PLAN).ranges(WEIGHT)
    arms = [a for a in ARMS if ranges[a][1] > ranges[a][0]]
    out: list[list[Second]] = []
    for r in range(replicas):
        router = EvidenceBuilder("routed", source=f"router-{r}")
        workers = {a: EvidenceBuilder("served", source=f"w-{a}-{r}") for a in arms}
        joiner = EvidenceBuilder("labelled", source=f"joiner-{r}")
        offset = 0
        rows = []
        for s in range(seconds):
            sec = Second({}, {}, [], {}, {})
            for arm in arms:
                lo, hi = ranges[arm]
                sec.buckets[arm] = [rng.randrange(lo, hi) for _ in range(rng.randint(0, 12))]
                sec.errors[arm] = [rng.random() < 0.15 for _ in sec.buckets[arm]]
                router.add_routed(Cell("m", "ro", "", arm, True, WEIGHT, T0 + s), sec.buckets[arm])
            n = sum(len(b) for b in sec.buckets.values())
            sec.routed = router.build((OffsetRange(topic="req", partition=0, first=offset,
                                                   last=offset + max(n, 1) - 1),))  # fmt: skip
            offset += max(n, 1) + 1
            for arm in arms:
                if not sec.buckets[arm]:
                    continue
                cell = Cell("m", "ro", "v2" if arm == "canary" else "v1", arm, True, WEIGHT, T0 + s)
                cut = rng.randint(1, len(sec.buckets[arm]))
                sec.served[arm] = []
                for part in (slice(0, cut), slice(cut, None)):
                    buckets = sec.buckets[arm][part]
                    if not buckets:
                        sec.served[arm].append(None)
                        continue
                    lat = [rng.uniform(1, 12) for _ in buckets]
                    workers[arm].add_batch(
                        [cell] * len(lat),
                        buckets=buckets,
                        errors=sec.errors[arm][part],
                        latencies_ms=lat,
                        batch_latency_ms=max(lat),
                        thresholds=[Thresholds(1, 8.0, 11.0)] * len(lat),
                    )
                    rest = int(part.start > 0)  # from another input partition (in order)
                    [ev] = workers[arm].build(
                        (OffsetRange(topic=f"req.{arm}", partition=rest, first=s, last=s),)
                    )
                    sec.served[arm].append(ev)
                # Users rate some answers; the canary's draw more thumbs-down.
                down = 0.3 if arm == "canary" else 0.15
                for b in sec.buckets[arm]:
                    if rng.random() < 0.5:
                        said = Outcome(label="down" if rng.random() < down else "up")
                        joiner.add_label(cell, b, None, judge({"thumbs_down": DOWN}, said))
                built = joiner.build((OffsetRange(topic="fb", partition=0, first=s, last=s),))
                sec.labelled[arm] = built[0] if built else None
            rows.append(sec)
        out.append(rows)
    return out


def _rows(records: list[Evidence | None]) -> dict[str, npt.NDArray[Any]]:
    """Served records of many replicas as the simulator's per-replica rows ``(R, K)`` (padded
    with the trash bucket) and batch moments ``(R, 8)``."""
    units = [unpack_units("served", ev.units) if ev else None for ev in records]
    k = max([1, *(u.size for u in units if u is not None)])
    out: dict[str, npt.NDArray[Any]] = {
        c: np.zeros((len(records), k), dtype=np.int64) for c in ("n", "errors", "o95", "o99")
    }
    out["buckets"] = np.full((len(records), k), TRASH, dtype=np.int64)
    out["batch"] = np.zeros((len(records), PRODUCED))
    for i, (ev, u) in enumerate(zip(records, units, strict=True)):
        if ev is None or u is None:
            continue
        out["buckets"][i, : u.size] = u["bucket"]
        for col, name in (
            ("n", "n"),
            ("errors", "errors"),
            ("o95", "over_p95"),
            ("o99", "over_p99"),
        ):
            out[col][i, : u.size] = u[name]
        fields = {
            "m2": ev.batch_m2, "e2_errors": ev.batch_e2_errors, "em_errors": ev.batch_em_errors,
            "m2_timed": ev.batch_m2, "e2_over_p95": ev.batch_e2_over_p95,
            "em_over_p95": ev.batch_em_over_p95, "e2_over_p99": ev.batch_e2_over_p99,
            "em_over_p99": ev.batch_em_over_p99, "batches_timed": ev.batches_timed,
            "batches_over_p95": ev.batches_over_p95, "batches_over_p99": ev.batches_over_p99,
            "batch_unit_timed": 0,
        }  # fmt: skip
        out["batch"][i] = [fields[name] for name in BATCH_FIELDS[:PRODUCED]]
    return out


def _label_rows(records: list[Evidence | None]) -> dict[str, npt.NDArray[Any]]:
    """Labelled records of many replicas as the simulator's rows ``(R, K)``: buckets (padded
    with the trash bucket), labelled, incorrect, and the outcome metric's counted and bad."""
    units = [unpack_units("labelled", ev.units) if ev else None for ev in records]
    k = max([1, *(u.size for u in units if u is not None)])
    cols = ("labelled", "incorrect", "counted", "bad")
    out = {c: np.zeros((len(records), k), dtype=np.int64) for c in cols}
    out["buckets"] = np.full((len(records), k), TRASH, dtype=np.int64)
    for i, (ev, u) in enumerate(zip(records, units, strict=True)):
        if ev is None or u is None:
            continue
        out["buckets"][i, : u.size] = u["bucket"]
        out["labelled"][i, : u.size] = u["labelled"]
        out["incorrect"][i, : u.size] = u["incorrect"]
        for o in ev.outcomes:
            rows = unpack_units("outcome", o.units)
            at = np.searchsorted(u["bucket"], rows["bucket"])
            out["counted"][i, at] = rows["counted"]
            out["bad"][i, at] = rows["bad"]
    return out


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    replicas=st.integers(1, 3),
    lags=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    rest_later=st.integers(0, 3),
    label_lag=st.integers(0, 6),
)
def test_the_simulators_path_and_records_applied_one_by_one_agree(
    seed: int, replicas: int, lags: tuple[int, int, int], rest_later: int, label_lag: int
) -> None:
    seconds = 14
    data = traffic(seed, replicas, seconds)
    lag = dict(zip(ARMS, lags, strict=True))
    rule = policy(PLAN)
    # The simulator's path: every replica at once, answers delivered after their arm's lag.
    tally = tally_for(PLAN, replicas)
    complete = Completeness(replicas, origin=T0)
    everyone = np.arange(replicas)
    # The evaluator's path: one state per replica, records applied one by one.
    states = [RolloutEvidence.new("m", "ro", tally_for(PLAN)) for _ in range(replicas)]
    for t in range(seconds + max(lags) + rest_later + label_lag + 2):
        now = T0 + t
        if t < seconds:
            routed = np.zeros(replicas, dtype=np.int64)
            for arm in ARMS:
                counts = [len(data[r][t].buckets.get(arm, [])) for r in range(replicas)]
                complete.add_routed(now, arm, counts, everyone)
                routed += counts
            # As the simulator: only replicas with requests routed in the second.
            tally.add_routed(now, WEIGHT, replicas=everyone[routed > 0])
            for r in range(replicas):
                for ev in data[r][t].routed:
                    assert states[r].apply(ev)
        for arm, part in ((a, p) for a in ARMS for p in (0, 1)):
            sent = t - lag[arm] - part * rest_later
            if not 0 <= sent < seconds:
                continue
            records = [
                (data[r][sent].served.get(arm) or [None, None])[part] for r in range(replicas)
            ]
            rows = _rows(records)
            complete.add_done(T0 + sent, arm, rows["n"].sum(axis=1), everyone)
            tally.add_served(
                T0 + sent, WEIGHT, arm, rows["buckets"], rows["n"], rows["errors"],
                rows["o95"], rows["o99"], rows["batch"], True, replicas=everyone,
            )  # fmt: skip
            for r, answered in enumerate(records):
                if answered is not None:
                    assert states[r].apply(answered)
        # The ratings of second t - label_lag arrive (as the simulator: one row per bucket).
        rated = t - label_lag
        for arm in ARMS if 0 <= rated < seconds else ():
            ratings = [data[r][rated].labelled.get(arm) for r in range(replicas)]
            if all(ev is None for ev in ratings):
                continue
            rows = _label_rows(ratings)
            tally.add_labelled(
                T0 + rated, WEIGHT, arm, rows["buckets"], rows["labelled"], rows["incorrect"],
                outcomes={"thumbs_down": (rows["counted"], rows["bad"])}, replicas=everyone,
            )  # fmt: skip
            for r, rating in enumerate(ratings):
                if rating is not None:
                    assert states[r].apply(rating)
        # Second t is over: the router has moved past it (the clock closes it in the state).
        marks = complete.watermark(now + 1)
        tally.release(marks)
        now_ms = (now + 1) * 1000 + CLOSE_MS
        for r, state in enumerate(states):
            assert state.settle(now_ms) == max(int(marks[r]), -1) or (
                state.watermark == -1 and marks[r] < T0
            )
        progress = Progress(
            weight_bp=np.full(replicas, WEIGHT),
            step_index=np.zeros(replicas, dtype=np.int64),
            step_started_s=np.full(replicas, float(T0)),
            steps_bp=PLAN.steps_bp,
        )
        snap = take_snapshot(tally, progress, rule, float(now + 1))
        ours = decide_many(snap, rule)
        for r, state in enumerate(states):
            one = Progress(
                weight_bp=np.array([WEIGHT]),
                step_index=np.array([0]),
                step_started_s=np.array([float(T0)]),
                steps_bp=PLAN.steps_bp,
            )
            alone = take_snapshot(state.tally, one, rule, float(now + 1))
            theirs = decide_many(alone, rule)
            assert (int(ours.outcome[r]), int(ours.code[r])) == (
                int(theirs.outcome[0]),
                int(theirs.code[0]),
            )
            assert int(snap.canary_requests[r]) == int(alone.canary_requests[0])
            assert float(snap.label_coverage["thumbs_down"][r]) == float(
                alone.label_coverage["thumbs_down"][0]
            )
            np.testing.assert_array_equal(tally.totals[r], state.tally.totals[0])
