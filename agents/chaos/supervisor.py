"""A supervisor of named agent processes that can SIGKILL, restart, SIGSTOP and SIGCONT them.

Each agent is an :class:`~model_canary.agents.process.AgentProcess` (``canary ARGS...`` with
the supervisor's settings), its log appended to ``log_dir/NAME.log`` across restarts.
"""

from __future__ import annotations

import time
from pathlib import Path

from model_canary.agents.process import AgentProcess
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
        self.settings = settings
        self.log_dir = log_dir
        self.agents: dict[str, AgentProcess] = {}  # every agent ever started, by name
        self.procs: dict[str, AgentProcess] = {}  # the supervised ones (not killed or stopped)

    def start(self, name: str, *args: str) -> None:
        """Start ``canary ARGS...`` as ``name`` (in ``log_dir``: faust keeps its data there)."""
        agent = AgentProcess.canary(
            name, args, self.settings, self.log_dir / f"{name}.log", cwd=self.log_dir
        )
        self.agents[name] = agent
        self.procs[name] = agent.start()

    def restart(self, name: str) -> None:
        """Start ``name`` again with the arguments it had (its instance name included)."""
        self.procs[name] = self.agents[name].start()

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to commit, abort or leave the group."""
        self.procs.pop(name).kill()

    def pause(self, name: str) -> None:
        self.procs[name].pause()

    def resume(self, name: str) -> None:
        self.procs[name].resume()

    def stop(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM (the agent commits and leaves its group), SIGKILL after ``timeout``."""
        self.procs.pop(name).stop(timeout)

    def wait_for_log(self, name: str, text: str, timeout: float = 120.0) -> None:
        """Wait until ``name`` logged ``text`` since it was (re)started."""
        agent = self.agents[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in agent.log(since_start=True):
                return
            time.sleep(0.2)
        raise ChaosError(f"{name} did not log {text!r} within {timeout:g}s")

    def exited(self) -> list[str]:
        """Agents that exited on their own (killed ones are no longer supervised)."""
        return [name for name, agent in self.procs.items() if not agent.alive]

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
