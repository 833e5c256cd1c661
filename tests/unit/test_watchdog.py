"""The loops' watchdog: what is overdue, that a call that hangs is reported once, and that its
thread ends when it is closed."""

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
    dog.close()


def test_a_call_that_hangs_is_reported_once_and_close_ends_the_thread() -> None:
    fired: list[str] = []
    reported = threading.Event()

    def on_stuck(what: str) -> None:
        fired.append(what)
        reported.set()

    dog = Watchdog(0.05, on_stuck, interval_s=0.01)
    with dog.watching("commit"):
        # Stands for librdkafka blocking past its timeout: still blocked after the report.
        assert reported.wait(60)
        thread = dog._thread
        assert thread is not None
        # Reported once, the thread ends by itself (a watchdog that went on checking would
        # report the same hang again every interval while the call is still blocked).
        thread.join(5)
        assert fired == ["commit"]
    dog.close()
    assert not thread.is_alive()
    assert fired == ["commit"]


def test_close_ends_the_thread_of_a_watchdog_that_never_fired() -> None:
    dog = Watchdog(45.0, lambda _what: None, interval_s=0.01)
    with dog.watching("commit"):
        pass
    thread = dog._thread
    assert thread is not None and thread.is_alive()
    dog.close()
    assert not thread.is_alive()
    with dog.watching("abort"):  # watching again starts a new thread
        assert dog._thread is not None and dog._thread.is_alive()
    dog.close()
