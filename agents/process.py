"""Stopping a child process the way every agent expects: SIGTERM first (an agent commits its
open transaction and leaves its consumer group), SIGKILL only if it does not exit in time."""

from __future__ import annotations

import signal
import subprocess


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
