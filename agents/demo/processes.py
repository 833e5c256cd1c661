"""Start the demo's agents as separate processes and stop every one of them at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings


class ProcessGroup:
    """Agents started with ``python -m agents.cli.main ...``, logs in ``log_dir``.

    >>> group = ProcessGroup(Settings(), Path("/tmp/demo-logs"))  # nothing started yet
    """

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
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
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agents.cli.main", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        """Raise if an agent died."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

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
