"""Batches for promotion, answers for roll-back: the decision rule's two sides of the latency
test when workers time answers per micro-batch.

The promotion test (is the canary shown no worse?) counts batches, so identical canaries whose
slow answers come in clumps are promoted; the roll-back test (is the canary shown worse?)
keeps counting answers, with the batches' clumping in its design effect, as it always did. A
canary whose batches differ from the control's in size (sticky skewed keys put unequal load on
equal-share arms) may then hold, never roll back, on batch counts alone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.plan import parse_plan
from model_canary.streams.stats.compare import compare
from model_canary.streams.stats.decide import ADVANCE, HOLD, NOT_YET, ROLLBACK, decide_many
from model_canary.streams.stats.snapshot import Progress, policy, take_snapshot
from model_canary.streams.stats.tally import Tally
from model_canary.streams.stats.verdicts import verdict
from tests.unit.test_stats_batch_unit import serve_batches

T0 = 1_700_000_000
W = 5000  #: the default plan's last weight before 100%
STEPS = (100, 2000, 5000, 10000)
RULE = policy(parse_plan({"model": "m", "canary": "v", "step": {"min_duration": "10s"}}))


def clumped(rng: np.random.Generator, rate: float) -> tuple[list[int], list[bool]]:
    """40 batches, most of 1-3 answers, one in ten of 30; each slow with chance ``rate``."""
    sizes = np.where(rng.random(40) < 0.1, 30, rng.integers(1, 4, 40))
    return sizes.tolist(), (rng.random(40) < rate).tolist()


def final_step(t: Tally, seconds: int) -> tuple[Progress, float]:
    """The rollout at the default plan's 50% step (the last before 100%), ``seconds`` in."""
    t.release(np.array([T0 + seconds - 1]))
    t.refresh()
    progress = Progress(
        weight_bp=np.array([W]),
        step_index=np.array([2]),
        step_started_s=np.array([float(T0)]),
        steps_bp=STEPS,
    )
    return progress, float(T0 + seconds)


def tally() -> Tally:
    return Tally(1, control=True, warmup_s=0, weights=STEPS[:-1])


def test_an_identical_canary_with_clumped_slow_answers_is_promoted() -> None:
    """The real pipeline's A/A (sessions 18-20): slow answers come a batch at a time, the
    per-answer promotion evidence stays far below its threshold and identical canaries hold
    at 50% until ``max_duration``. Counted per batch they are promoted, and the roll-back side
    still counts answers (fails on bf7afba: batch-unit counts did not exist, the cells were
    refused; with 8 moments only it held ``not-yet-harmless``)."""
    t = tally()
    rng = np.random.default_rng(3)
    for s in range(600):
        for arm in ("canary", "control"):
            serve_batches(t, rng, T0 + s, arm, *clumped(rng, 0.02))
    progress, now = final_step(t, 600)
    snap = take_snapshot(t, progress, RULE, now)
    assert snap.comparisons["latency_p99"].unit == ("item",)
    assert snap.promotions["latency_p99"].unit == ("batch",)
    d = decide_many(snap, RULE)
    assert (int(d.outcome[0]), int(d.code[0])) == (ADVANCE, 0)
    # Without the batch counts, the same rule on the same answers holds.
    items_only = decide_many(dataclasses.replace(snap, promotions={}), RULE)
    assert (int(items_only.outcome[0]), int(items_only.code[0])) == (HOLD, NOT_YET)
    for name in d.rollback:
        assert np.array_equal(d.rollback[name], items_only.rollback[name])


def test_batch_counts_never_roll_back_a_canary_whose_answers_are_no_slower() -> None:
    """Equal shares of slow answers, but the canary's come one per batch and the control's
    four to a batch (its batches are bigger: more load on its arm). Per batch the canary looks
    about 4x slower; per answer it is not. The session-20 batch-unit design counted batches for
    roll-back too and rolled an identical canary back on the real pipeline (90 of 1,581 canary
    batches slow against 24 of 1,301); counted per answer this canary is not rolled back, and
    per batch it is not promoted either: it holds (fails on 60db135, which rolled it back)."""
    t = tally()
    rng = np.random.default_rng(8)
    for s in range(300):
        k = int(rng.poisson(4))
        # Canary: k slow single-answer batches among 36 fast batches of 5 (plus filler).
        serve_batches(t, rng, T0 + s, "canary", [1] * k + [5] * 36, [True] * k + [False] * 36)
        # Control: the same k slow answers as k // 4 (+1) batches of 4, then fast batches.
        whole, rest = divmod(k, 4)
        sizes = [4] * whole + ([rest] if rest else []) + [5] * 36
        slow = [True] * (whole + (1 if rest else 0)) + [False] * 36
        serve_batches(t, rng, T0 + s, "control", sizes, slow)
    progress, now = final_step(t, 300)
    snap = take_snapshot(t, progress, RULE, now)
    per_batch = snap.promotions["latency_p99"]
    assert per_batch.unit == ("batch",)
    c, n_c = per_batch.canary_bad[0, -1], per_batch.canary_n[0, -1]
    b, n_b = per_batch.other_bad[0, -1], per_batch.other_n[0, -1]
    assert (c / n_c) / (b / n_b) > 2.5, "per batch the canary looks slower"
    d = decide_many(snap, RULE)
    assert int(d.outcome[0]) != ROLLBACK
    assert (int(d.outcome[0]), int(d.code[0])) == (HOLD, NOT_YET)
    # The hold's reason counts what the promotion test counted.
    reason = verdict(snap, d, RULE).reason
    assert "latency_p99 not yet shown below 1.2x control + 0.005" in reason
    assert "batches with an answer slower than the p99 threshold" in reason
    # Had the roll-back test counted batches, the alarm would have been raised.
    as_batches = dataclasses.replace(snap, comparisons={**snap.comparisons, **snap.promotions})
    assert int(decide_many(as_batches, RULE).outcome[0]) == ROLLBACK


def test_only_the_last_step_before_full_traffic_counts_batches() -> None:
    """Earlier steps cannot promote: their snapshot carries no batch-unit evidence, and the
    roll-back test there is the per-answer test it always was."""
    t = tally()
    rng = np.random.default_rng(4)
    for s in range(60):
        for arm in ("canary", "control"):
            serve_batches(t, rng, T0 + s, arm, *clumped(rng, 0.02))
    t.release(np.array([T0 + 59]))
    progress = Progress(
        weight_bp=np.array([W]),
        step_index=np.array([1]),
        step_started_s=np.array([float(T0)]),
        steps_bp=STEPS,
    )
    snap = take_snapshot(t, progress, RULE, float(T0 + 60))
    assert snap.promotions == {}
    assert compare(t, "latency_p95", "control", RULE.starts).unit == ("item",)


@st.composite
def traffic(draw: st.DrawFn) -> tuple[int, int, float, float, bool, bool, list[int]]:
    seconds = draw(st.integers(15, 90))
    seed = draw(st.integers(0, 2**31 - 1))
    rate_c = draw(st.sampled_from([0.0, 0.01, 0.03, 0.1, 0.3]))
    rate_b = draw(st.sampled_from([0.0, 0.01, 0.03, 0.1]))
    units_c, units_b = draw(st.booleans()), draw(st.booleans())
    stalls = draw(st.lists(st.integers(0, seconds - 1), max_size=4))
    return seconds, seed, rate_c, rate_b, units_c, units_b, stalls


@settings(max_examples=30, deadline=None)
@given(traffic())
def test_roll_back_is_per_answer_and_non_batched_decisions_are_unchanged(
    case: tuple[int, int, float, float, bool, bool, list[int]],
) -> None:
    """Whatever the traffic: the roll-back e-values and the alarm are those of the per-answer
    evidence (the rule without batch-unit evidence, as on bf7afba), and the verdicts differ
    from that rule's only where the batch-counted promotion decides otherwise at the last step
    (ADVANCE against HOLD ``not-yet-harmless``). Where either arm's cells carry no batch counts
    (an adapter timing answers one by one, an older worker, records of schema version 1) every
    figure and verdict is the per-answer rule's."""
    seconds, seed, rate_c, rate_b, units_c, units_b, stalls = case
    t = tally()
    rng = np.random.default_rng(seed)
    for s in range(seconds):
        stalled = s in stalls
        for arm, rate, units in (("canary", rate_c, units_c), ("control", rate_b, units_b)):
            sizes, slow = clumped(rng, 1.0 if stalled and arm == "canary" else rate)
            serve_batches(t, rng, T0 + s, arm, sizes, slow, units=units)
    progress, now = final_step(t, seconds)
    snap = take_snapshot(t, progress, RULE, now)
    new = decide_many(snap, RULE)
    old = decide_many(dataclasses.replace(snap, promotions={}), RULE)
    assert new.rollback.keys() == old.rollback.keys()
    for name in new.rollback:
        assert np.array_equal(new.rollback[name], old.rollback[name])
    assert np.array_equal(new.alarm_log_e, old.alarm_log_e)
    assert (int(new.outcome[0]) == ROLLBACK) == (int(old.outcome[0]) == ROLLBACK)
    if not (units_c and units_b):
        assert all(p.unit == ("item",) for p in snap.promotions.values())
        assert np.array_equal(new.outcome, old.outcome)
        assert np.array_equal(new.code, old.code)
        for name in new.promotion:
            assert np.array_equal(new.promotion[name], old.promotion[name])
        assert verdict(snap, new, RULE) == verdict(
            dataclasses.replace(snap, promotions={}), old, RULE
        )
    elif (int(new.outcome[0]), int(new.code[0])) != (int(old.outcome[0]), int(old.code[0])):
        pair = {(int(new.outcome[0]), int(new.code[0])), (int(old.outcome[0]), int(old.code[0]))}
        assert pair == {(ADVANCE, 0), (HOLD, NOT_YET)}
    assert math.isfinite(float(new.threshold))
