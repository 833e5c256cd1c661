"""Start the demo's agents as separate processes and stop every one of them at the end."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from model_canary.agents.process import AgentProcess
from model_canary.streams.errors import CanaryError
from model_canary.streams.settings import Settings


class DemoError(CanaryError):
    """An agent the demo started failed or exited; the message ends with its log's tail."""


class Interrupts:
    """Ctrl-C and SIGTERM raise :class:`KeyboardInterrupt`, except inside :meth:`shielded`,
    where they wait for the block to end: a process being started is always recorded, so it
    is always stopped. Install from the main thread.

    >>> with Interrupts().shielded():
    ...     pass
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def ignore(self) -> None:
        """Ignore both while cleaning up: a second Ctrl-C must not leave agents running."""
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._pending:
                self._pending = False
                raise KeyboardInterrupt

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt


class ProcessGroup:
    """Agents started as ``canary ARGS...`` child processes, logs in ``log_dir``.

    Each agent runs in ``cwd`` (the evaluator keeps its local table data there) and in a
    session of its own, so a Ctrl-C at the terminal reaches only the demo, which then stops
    the agents in order.

    >>> group = ProcessGroup(Settings(), Path("/tmp/demo-logs"))  # nothing started yet
    """

    def __init__(self, settings: Settings, log_dir: Path, cwd: Path | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.cwd = cwd
        self.interrupts = Interrupts()
        self.procs: list[AgentProcess] = []

    def start(self, name: str, *args: str) -> AgentProcess:
        """Start ``canary ARGS...`` in the background, output to ``LOG_DIR/NAME.log``."""
        agent = AgentProcess.canary(
            name, args, self.settings, self.log_dir / f"{name}.log", cwd=self.cwd, own_session=True
        )
        with self.interrupts.shielded():
            self.procs.append(agent.start())
        return agent

    def run(self, name: str, *args: str, timeout: float = 120.0) -> None:
        """Run ``canary ARGS...`` to completion; raise with its log if it fails."""
        agent = self.start(name, *args)
        code = agent.wait(timeout)
        self.procs.remove(agent)
        if code != 0:
            if code is None:
                agent.kill()
            raise DemoError(f"canary {' '.join(args[:2])} failed ({code}):\n{agent.log_tail(2000)}")

    def check(self) -> None:
        """Raise if an agent died."""
        for agent in self.procs:
            if not agent.alive:
                raise DemoError(
                    f"{agent.name} exited with code {agent.returncode}:\n{agent.log_tail(2000)}"
                )

    def stop(self) -> None:
        """SIGTERM every agent (they commit and exit), SIGKILL any still running after 20 s."""
        for agent in self.procs:
            agent.send_signal(signal.SIGTERM)
        for agent in self.procs:
            agent.stop(20)
        self.procs.clear()
