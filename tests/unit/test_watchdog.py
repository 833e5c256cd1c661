"""The loops' watchdog: what is overdue, and that a call that hangs is reported once."""

from __future__ import annotations

import threading

from model_canary.agents.kafka.watchdog import Watchdog


def test_only_a_call_being_watched_past_its_deadline_is_overdue() -> None:
    dog = Watchdog(45.0, lambda _what: None)
    assert dog.overdue(now=10**9) is None
    with dog.watching("send offsets"):
        assert dog.overdue(now=dog.deadline - 0.001) is None
        assert dog.overdue(now=dog.deadline) == "send offsets"
    assert dog.overdue(now=10**9) is None  # returned: no longer watched
    with dog.watching("commit"):
        assert dog.overdue(now=dog.deadline + 1) == "commit"  # each call its own deadline


def test_a_call_that_hangs_is_reported_once() -> None:
    fired: list[str] = []
    reported = threading.Event()

    def on_stuck(what: str) -> None:
        fired.append(what)
        reported.set()

    dog = Watchdog(0.05, on_stuck, interval_s=0.01)
    with dog.watching("commit"):
        # Stands for librdkafka blocking past its timeout: returns once reported.
        assert reported.wait(60)
    assert dog._thread is not None
    dog._thread.join(60)  # it stops once it has reported
    assert fired == ["commit"]
