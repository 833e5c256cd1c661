"""Agents as child processes: the one launcher the demo, the chaos suite, the benchmarks and
the tests share.

An :class:`AgentProcess` is ``python -m model_canary.agents.cli.main ARGS...`` (or any other
command) started with the environment :meth:`Settings.child_env` makes from the launcher's
settings, its output appended to a log file across restarts. Stopping is the way every agent
expects: SIGTERM first (an agent commits its open transaction and leaves its consumer group),
SIGKILL only if it does not exit in time.

>>> agent = AgentProcess.canary("router", ["router", "--instance", "r1"], Settings(),
...                             Path("/tmp/router.log"))
>>> agent.argv[1:5], agent.alive
(['-P', '-m', 'model_canary.agents.cli.main', 'router'], False)
>>> # agent.start(); ...; agent.stop()
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from model_canary.streams.settings import Settings

CLI_MODULE = "model_canary.agents.cli.main"


def canary_command(*args: str) -> list[str]:
    """The command line of ``canary ARGS...`` run by this Python.

    ``-P``: the working directory is not put first on the child's ``sys.path``, so a child
    started from a source checkout runs the package this Python has installed, not the
    checkout's (a benchmark that compares two installs would otherwise run one of them twice).
    A worker's ``python:`` adapter still finds modules in the working directory: it adds the
    folder itself (:meth:`PythonCallableAdapter.from_reference`).
    """
    return [sys.executable, "-P", "-m", CLI_MODULE, *args]


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> None:
    """Stop ``proc``: SIGCONT (a stopped process cannot handle SIGTERM), SIGTERM, and SIGKILL
    after ``timeout`` seconds.

    >>> proc = subprocess.Popen(["sleep", "30"])
    >>> terminate(proc, 5.0); proc.returncode == -signal.SIGTERM
    True
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class AgentProcess:
    """One child process, started (and restarted) with the same command line and environment.

    ``own_session`` puts it in a session of its own, so a Ctrl-C at the terminal reaches only
    the launcher, which then stops its agents in order. Without a ``log_path`` its output goes
    where the launcher's does.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None,
        *,
        cwd: Path | None = None,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0  # characters of the log before the last start

    @classmethod
    def canary(
        cls,
        name: str,
        args: Sequence[str],
        settings: Settings,
        log_path: Path | None,
        *,
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = False,
    ) -> AgentProcess:
        """``canary ARGS...`` on ``settings`` (its cluster, topic prefix, Kafka settings and
        keys), with ``extra_env`` on top."""
        env = settings.child_env(extra_env)
        return cls(name, canary_command(*args), env, log_path, cwd=cwd, own_session=own_session)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def start(self) -> AgentProcess:
        """Start the process (again, after it ended); output appended to the log."""
        if self.alive:
            return self
        if self.log_path is None:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=self.own_session,
            )
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = len(self.log()) if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.own_session,
            )
        return self

    def send_signal(self, signum: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no chance to commit, abort or leave the group."""
        if self.proc is not None:
            self.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def pause(self) -> None:
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout``; the exit code (``None`` if it never ran)."""
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        return self.proc.returncode

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` seconds (``None``: until it ends) for the process to end; its
        exit code or ``None``."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self, *, since_start: bool = False) -> str:
        """The log's text (only what the current run wrote, with ``since_start``)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[self.log_start :] if since_start else text

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]
