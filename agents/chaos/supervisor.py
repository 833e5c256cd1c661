"""A supervisor of named agent processes that can SIGKILL, restart, SIGSTOP and SIGCONT them.

Each agent is ``python -m model_canary.agents.cli.main ARGS...`` with its log appended to
``log_dir/NAME.log`` across restarts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from model_canary.agents.process import terminate
from model_canary.streams.errors import CanaryError
from model_canary.streams.settings import Settings


class ChaosError(CanaryError):
    """The chaos run could not set up or drive its agents."""


class Supervisor:
    """Named agent processes.

    >>> sup = Supervisor(Settings(), Path("/tmp/chaos-logs"))  # nothing started yet
    >>> # sup.start("router", "router", "--instance", "r1"); sup.kill("router")
    >>> # sup.restart("router")
    """

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.args: dict[str, tuple[str, ...]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_starts: dict[str, int] = {}  # characters of each log before the last start
        self.env = {
            **os.environ,
            "CANARY_BOOTSTRAP": settings.bootstrap_servers,
            "CANARY_TOPIC_PREFIX": settings.topic_prefix,
            "CANARY_PARTITIONS": str(settings.partitions),
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in settings.extra_config.items():
            self.env[f"CANARY_KAFKA_{key.upper().replace('.', '_')}"] = value

    def start(self, name: str, *args: str) -> None:
        """Start ``canary ARGS...`` as ``name`` (in ``log_dir``: faust keeps its data there)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.args[name] = args
        path = self.log_dir / f"{name}.log"
        self.log_starts[name] = len(path.read_text(errors="replace")) if path.exists() else 0
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "model_canary.agents.cli.main", *args],
                env=self.env,
                cwd=self.log_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def restart(self, name: str) -> None:
        """Start ``name`` again with the arguments it had (its instance name included)."""
        self.start(name, *self.args[name])

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to commit, abort or leave the group."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM (the agent commits and leaves its group), SIGKILL after ``timeout``."""
        terminate(self.procs.pop(name), timeout)

    def wait_for_log(self, name: str, text: str, timeout: float = 120.0) -> None:
        """Wait until ``name`` logged ``text`` since it was (re)started."""
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in path.read_text(errors="replace")[self.log_starts[name] :]:
                return
            time.sleep(0.2)
        raise ChaosError(f"{name} did not log {text!r} within {timeout:g}s")

    def exited(self) -> list[str]:
        """Agents that exited on their own (killed ones are no longer supervised)."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
