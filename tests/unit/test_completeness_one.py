"""Completeness's one-rollout path (one replica, a count given as a list of one int: the
evaluator's records, added on numbers) against its array path (the same counts as arrays):
the same records, in any order, with seconds before the origin, trims and questions in
between, leave the same counts, positions and answers."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_canary.streams.stats.layout import ARMS
from model_canary.streams.stats.watermark import Completeness

STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["routed", "done"]),
            st.integers(995, 1010),
            st.sampled_from(ARMS),
            st.integers(0, 6) | st.sampled_from([-1, 2**62]),
        ),
        st.tuples(st.just("trim"), st.integers(990, 1010)),
        st.tuples(st.just("ask"), st.integers(990, 1012)),
    ),
    max_size=30,
)


def _state(c: Completeness) -> list[Any]:
    return [c.origin, c.routed.tolist(), c.done.tolist(), c._next.tolist()]


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, origin=st.sampled_from([None, 0, 1000]))
def test_one_count_path_is_the_array_path(steps: list[tuple[Any, ...]], origin: int | None) -> None:
    one, many = Completeness(1, origin=origin), Completeness(1, origin=origin)
    for step in steps:
        if step[0] in ("routed", "done"):
            kind, second, arm, n = step
            add_one = one.add_routed if kind == "routed" else one.add_done
            add_many = many.add_routed if kind == "routed" else many.add_done
            add_one(second, arm, [n])  # a list of one int: the one-count path
            add_many(second, arm, np.array([n], dtype=np.int64))
        elif step[0] == "trim":
            one.trim(step[1])
            many.trim(step[1])
        else:
            assert one.complete_upto(step[1]).tolist() == many.complete_upto(step[1]).tolist()
            assert one.gaps(step[1]) == many.gaps(step[1])
        assert _state(one) == _state(many)


def test_other_counts_take_the_array_path() -> None:
    """A count the one-count path does not take (a float, two numbers, one beyond int64) is
    converted or refused by the array path, as before."""
    c = Completeness(1)
    c.add_routed(3, "canary", [2.0])
    c.add_done(3, "canary", (1,))
    assert int(c.routed[0, 0, 3]) == 2 and int(c.done[0, 0, 3]) == 1
    try:
        c.add_routed(3, "canary", [2**63])
    except OverflowError:
        pass
    else:
        raise AssertionError("a count beyond int64 was taken")
