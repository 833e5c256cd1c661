"""Every rollout's state, followed by a thread of its own, for the evaluator's event loop.

The evaluator's agent and timers run on faust's event loop, which must never block on a
Kafka call; this view catches up and then polls the rollout-state topic in a daemon thread,
and the loop only reads the latest states (``get``) or waits for one without blocking
(``wait_for``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from model_canary.agents.kafka.state_view import StateView
from model_canary.streams.messages import RolloutState
from model_canary.streams.settings import Settings

log = logging.getLogger(__name__)

#: Longest wait of one poll of the rollout states: a new state is applied as soon as it
#: arrives whatever this is; it bounds how long :meth:`FollowedView.stop` waits for the thread
#: and how often an idle thread wakes (each wakeup a few librdkafka and Python calls).
POLL_S = 0.5


class FollowedView:
    """``view.get(model)`` -> the newest :class:`RolloutState` read so far, or None.

    >>> view = FollowedView(Settings())   # view.start() begins following
    >>> view.get("iris") is None
    True
    """

    def __init__(self, settings: Settings, client_id: str = "canary-evaluator-state") -> None:
        self._view = StateView(settings, client_id=client_id)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-states", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._view.catch_up(timeout=30)
                    break
                except Exception as exc:  # the broker may not be up yet: try again
                    log.warning("rollout states not readable yet: %s", exc)
                    self._stop.wait(2.0)
            self.ready.set()
            while not self._stop.is_set():
                self._view.poll(POLL_S)
        except Exception:
            log.exception("following the rollout states failed")
        finally:
            self._view.close()

    def get(self, model: str) -> RolloutState | None:
        return self._view.states.get(model)

    def models(self) -> list[str]:
        return list(self._view.states)

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ready.is_set()

    async def wait_for(self, model: str, rollout_id: str, timeout: float) -> RolloutState | None:
        """The model's state once it is rollout ``rollout_id`` (None after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.get(model)
            if state is not None and state.rollout_id == rollout_id:
                return state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
