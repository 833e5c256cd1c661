"""One watchdog thread per loop for calls that may hang: a call that has not returned after
its limit makes ``on_stuck(what)`` run (the exactly-once loop exits the process there).

A thread of its own checks the deadline once per ``interval_s``; watching a call only sets
and clears it (two attribute writes). A timer thread per call, as before, cost two thread
starts per transaction (hundreds a second with a commit as soon as the input drains), each
taking the interpreter lock from the loop.

>>> fired: list[str] = []
>>> dog = Watchdog(45.0, fired.append)
>>> with dog.watching("commit"):
...     dog.overdue(now=dog.deadline + 1.0)
'commit'
>>> dog.overdue(now=10**9) is None  # nothing is being watched
True
>>> dog.close()  # its thread ends
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Watchdog:
    """Runs ``on_stuck(what)`` (once) when a call watched with :meth:`watching` has not
    returned ``limit_s`` after it began."""

    def __init__(
        self, limit_s: float, on_stuck: Callable[[str], None], *, interval_s: float = 1.0
    ) -> None:
        self.limit_s = limit_s
        self.on_stuck = on_stuck
        self.interval_s = interval_s
        self.deadline = 0.0  # of the call being watched (when ``what`` is set)
        self.what: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fired = False

    @contextmanager
    def watching(self, what: str) -> Iterator[None]:
        """Watch the code inside the block."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        self.deadline = time.monotonic() + self.limit_s
        self.what = what
        try:
            yield
        finally:
            self.what = None

    def overdue(self, now: float) -> str | None:
        """What is being watched past its deadline at ``now``, or None."""
        what = self.what
        if what is not None and now >= self.deadline:
            return what
        return None

    def close(self) -> None:
        """End the thread (a later :meth:`watching` starts a new one)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._fired and not self._stop.wait(self.interval_s):
            what = self.overdue(time.monotonic())
            if what is not None:
                self._fired = True
                self.on_stuck(what)
