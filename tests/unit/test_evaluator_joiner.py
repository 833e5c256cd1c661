"""The evaluator's label joiner child: a stop the evaluator asked for is not a failure, even
when the joiner, still starting, dies of the SIGTERM (-15); a joiner ending on its own is, and
the evaluator then exits 1 (faust's worker itself exits 0 after a SIGTERM)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import pytest

from model_canary.agents.cli.evaluator_cmd import JoinerChild, serve

_SIGTERM = -signal.SIGTERM


class _FakeJoiner:
    """A joiner process in this process: it ends when stopped (with ``code_on_stop``, as a
    joiner still starting dies of the SIGTERM) or when :meth:`crash` says so."""

    def __init__(self, code_on_stop: int = _SIGTERM) -> None:
        self.code_on_stop = code_on_stop
        self.started = 0
        self.stops = 0
        self._ended = threading.Event()
        self._code: int | None = None

    def start(self) -> _FakeJoiner:
        self.started += 1
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        self.stops += 1
        self._end(self.code_on_stop)
        return self._code

    def crash(self, code: int) -> None:
        self._end(code)

    def wait(self, timeout: float | None) -> int | None:
        self._ended.wait(timeout)
        return self._code

    def _end(self, code: int) -> None:
        if not self._ended.is_set():
            self._code = code
            self._ended.set()


class _Evaluator:
    """The joiner child of an evaluator, with its own stop recorded instead of a SIGTERM."""

    def __init__(self, fake: _FakeJoiner) -> None:
        self.fake = fake
        self.stopped = 0
        self.child = JoinerChild(lambda: fake, stop_evaluator=self._stop)

    def _stop(self) -> None:
        self.stopped += 1

    def watcher_done(self) -> None:
        watcher = self.child.watcher
        assert watcher is not None
        watcher.join(60)
        assert not watcher.is_alive()


@pytest.mark.parametrize("code", [_SIGTERM, 0, 1])
def test_a_joiner_the_evaluator_stops_is_not_a_failure_whatever_its_exit_code(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    ev = _Evaluator(_FakeJoiner(code_on_stop=code))
    ev.child.start()
    with caplog.at_level(logging.INFO):
        ev.child.stop()
        ev.watcher_done()
    assert not ev.child.failed.is_set()
    assert ev.stopped == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "the label joiner stopped" in caplog.text


def test_a_joiner_that_crashes_stops_the_evaluator_once_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ev = _Evaluator(_FakeJoiner())
    ev.child.start()
    with caplog.at_level(logging.INFO):
        ev.fake.crash(1)
        ev.watcher_done()
    assert ev.child.failed.is_set()
    assert ev.stopped == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["the label joiner exited with code 1: stopping"]
    # The evaluator's shutdown then stops the joiner (already gone): still a failure.
    ev.child.stop()
    assert ev.child.failed.is_set()


def test_a_joiner_that_exits_0_on_its_own_is_no_failure() -> None:
    ev = _Evaluator(_FakeJoiner())
    ev.child.start()
    ev.fake.crash(0)
    ev.watcher_done()
    assert not ev.child.failed.is_set()
    assert ev.stopped == 0


def test_start_is_once_and_never_after_a_stop() -> None:
    ev = _Evaluator(_FakeJoiner())
    ev.child.start()
    ev.child.start()
    assert ev.fake.started == 1
    ev.child.stop()
    ev.child.stop()
    ev.watcher_done()
    assert ev.fake.stops == 2

    late = _Evaluator(_FakeJoiner())
    late.child.stop()
    late.child.start()
    assert late.fake.started == 0
    assert late.child.process is None


def test_no_joiner_starts_nothing() -> None:
    child = JoinerChild(None)
    child.start()
    child.stop()
    assert child.process is None and child.watcher is None
    assert not child.failed.is_set()


class _FaustWorker:
    """Stands for faust's worker: runs ``during`` (the evaluator at work), then exits as
    faust's does after a SIGTERM, with ``code``."""

    def __init__(self, during: Callable[[], None], code: object = 0) -> None:
        self.during = during
        self.code = code

    def execute_from_commandline(self) -> None:
        self.during()
        raise SystemExit(self.code)


def test_the_evaluator_exits_1_when_its_joiner_crashed() -> None:
    ev = _Evaluator(_FakeJoiner())
    ev.child.start()

    def crash() -> None:
        ev.fake.crash(-signal.SIGKILL)
        ev.watcher_done()

    assert serve(_FaustWorker(crash), ev.child) == 1
    assert ev.stopped == 1


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (3, 3), ("boom", 1)])
def test_the_evaluator_exits_as_faust_did_when_it_stopped_its_joiner(
    code: object, expected: int
) -> None:
    ev = _Evaluator(_FakeJoiner())
    ev.child.start()
    assert serve(_FaustWorker(lambda: None, code), ev.child) == expected
    ev.watcher_done()
    assert ev.fake.stops == 1
    assert not ev.child.failed.is_set()
