"""The label join: every prediction joins its label once, in any arrival order; nothing joined
or expired stays in memory; the changelog rebuilds the same state."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.evidence.join import (
    EARLY_LABEL_S,
    LabelJoin,
    Waiting,
    dump_chunks,
    dump_ops,
    load_chunks,
    load_ops,
)
from model_canary.streams.outcomes.expr import Outcome
from model_canary.streams.outcomes.metrics import condition

WINDOW = 3600


def waiting(arm: str, answers: int = 1, second: int = 1000, prediction: str = "a") -> Waiting:
    return Waiting(
        "iris",
        "ro1",
        "v2" if arm == "canary" else "v1",
        arm,
        arm != "canary" or answers == 1,
        5000,
        second,
        42,
        answers,
        prediction,
        second + WINDOW,
    )


def state_of(join: LabelJoin) -> tuple[object, ...]:
    return (
        {k: sorted(v) for k, v in join.predictions.items()},
        dict(join.labels),
    )


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), n=st.integers(1, 60))
def test_any_arrival_order_joins_every_prediction_once(seed: int, n: int) -> None:
    rng = random.Random(seed)
    events: list[tuple[str, str, object]] = []
    expected: dict[tuple[str, str], bool] = {}
    for i in range(n):
        rid = f"r{i}"
        pair = rng.random() < 0.3
        label = rng.choice("ab")
        for arm in ("baseline", "canary") if pair else (rng.choice(["baseline", "canary"]),):
            w = waiting(arm, 2 if pair else 1, prediction=rng.choice("ab"))
            events.append(("p", rid, w))
            expected[(rid, arm)] = w.prediction == label
        events.append(("l", rid, label))
        if rng.random() < 0.2:
            events.append(("l", rid, label))  # a label sent twice
    rng.shuffle(events)
    join = LabelJoin()
    mirror = LabelJoin()
    joined: dict[tuple[str, str], bool | None] = {}
    for i, (kind, rid, what) in enumerate(events):
        if kind == "p":
            assert isinstance(what, Waiting)
            got = join.add_prediction(rid, what, now_s=1001)
        else:
            assert isinstance(what, str)
            got = join.add_label(rid, what, now_s=1001)
        for j in got:
            key = (rid, j.waiting.arm)
            assert key not in joined, "joined twice"
            joined[key] = j.correct
        if i % 5 == 0:
            mirror.apply_changes(join.take_changes())
    assert joined == expected
    mirror.apply_changes(join.take_changes())
    assert state_of(mirror) == state_of(join)
    # Nothing joined waits: only labels kept for a prediction that may still come.
    assert join.predictions == {}
    kept = len(join.labels)
    # Expiry forgets those too.
    assert join.expire(1000 + EARLY_LABEL_S) == 0
    assert join.expire(1001 + EARLY_LABEL_S) == kept
    assert len(join) == 0 and join._due_by_minute == {}


def test_predictions_expire_after_their_label_window() -> None:
    join = LabelJoin()
    for i in range(100):
        join.add_prediction(f"r{i}", waiting("canary", second=1000 + i), now_s=1000 + i)
    assert len(join) == 100
    assert join.expire(1000 + WINDOW + 49) == 50
    assert len(join) == 50
    assert join.add_label("r10", "a", now_s=1000 + WINDOW + 49, keep=False) == []
    assert len(join) == 50, "an expired prediction never joins, a label not kept adds nothing"
    assert join.expire(10**9) == 50 and join._due_by_minute == {}
    # A prediction whose window has passed already is not kept at all.
    assert join.add_prediction("late", waiting("canary", second=1), now_s=10**6) == []
    assert len(join) == 0


def test_a_snapshot_and_the_changes_since_rebuild_the_state() -> None:
    join = LabelJoin()
    for i in range(50):
        join.add_prediction(f"r{i}", waiting("baseline", 2), now_s=1000)
    join.add_label("r3", "a", now_s=1000)  # half a shadow pair: the label waits for the other
    join.add_label("x1", "b", now_s=1000)  # a label before its prediction
    chunks = dump_chunks(join, max_ops=7)
    assert len(chunks) == 8
    join.take_changes()
    join.add_label("r4", "a", now_s=1001)
    join.add_prediction("r3", waiting("canary", 2), now_s=1001)
    restored = load_chunks(chunks)
    restored.apply_changes(load_ops(dump_ops(join.take_changes())))
    assert state_of(restored) == state_of(join)
    assert "r3" not in restored.labels and "r3" not in restored.predictions


def test_feedback_with_a_value_and_attributes_survives_the_changelog() -> None:
    join = LabelJoin()
    said = Outcome("", 7.5, {"complaint": "yes"})
    join.add_label("early", said, now_s=1000)  # feedback before its prediction: kept
    restored = LabelJoin()
    restored.apply_changes(load_ops(dump_ops(join.take_changes())))
    assert restored.labels["early"].label == said
    [j] = restored.add_prediction("early", waiting("canary", prediction="2.5"), now_s=1001)
    rules = {"off": condition("abs(value - prediction) > 5"), "down": condition("label == 'x'")}
    assert j.judge(rules) == (None, {"off": False})  # no label: not accuracy, not "down"


def test_label_operations_written_before_feedback_had_values_still_read() -> None:
    restored = LabelJoin()
    restored.apply_changes([["l", "r1", "setosa", 2000, []]])  # the first version's form
    assert restored.labels["r1"].label == Outcome(label="setosa")
    [j] = restored.add_prediction("r1", waiting("canary", prediction="setosa"), now_s=1000)
    assert j.correct is True
