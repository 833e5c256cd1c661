"""Start the demo's agents as separate processes and stop every one of them at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

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
    """Agents started with ``python -m model_canary.agents.cli.main ...``, logs in ``log_dir``.

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
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {
            **os.environ,
            "CANARY_BOOTSTRAP": settings.bootstrap_servers,
            "CANARY_TOPIC_PREFIX": settings.topic_prefix,
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in settings.extra_config.items():
            self.env[f"CANARY_KAFKA_{key.upper().replace('.', '_')}"] = value

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``canary ARGS...`` in the background, output to ``LOG_DIR/NAME.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.interrupts.shielded(), open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "model_canary.agents.cli.main", *args],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.procs.append((name, proc))
        return proc

    def run(self, name: str, *args: str, timeout: float = 120.0) -> None:
        """Run ``canary ARGS...`` to completion; raise with its log if it fails."""
        proc = self.start(name, *args)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.procs.remove((name, proc))
        if code != 0:
            if code is None:
                proc.kill()
                proc.wait(5)
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise DemoError(f"canary {' '.join(args[:2])} failed ({code}):\n{tail}")

    def check(self) -> None:
        """Raise if an agent died."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM every agent (they commit and exit), SIGKILL any still running after 20 s."""
        for _name, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
