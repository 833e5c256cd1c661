"""Benchmark contenders run as child processes; their resident memory is sampled from
``/proc/PID/status`` (``VmRSS``) while they run.

>>> args = ["python", "-m", "model_canary.agents.bench.passthrough"]
>>> child = Child("passthrough", args, {}, Path("x.log"))
>>> # child.start(); ...; child.stop(); child.rss.peak_mb()
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from model_canary.agents.bench import BenchError
from model_canary.agents.process import AgentProcess

MB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def read_rss(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (``VmRSS``), or ``None`` once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_cpu_s(pid: int) -> float | None:
    """CPU time (user + system, every thread) ``pid`` has used, in seconds, or ``None`` once
    it has exited: on a shared machine, CPU per message is steadier than wall-clock rates.

    >>> import os
    >>> (read_cpu_s(os.getpid()) or 0.0) > 0.0
    True
    """
    return _stat_cpu_s(f"/proc/{pid}/stat")


def _stat_cpu_s(path: str) -> float | None:
    """utime + stime of a ``/proc/.../stat`` file, in seconds (``None``: unreadable)."""
    try:
        with open(path, encoding="ascii", errors="replace") as stat:
            # Fields after the command name (which may hold spaces) in parentheses; utime
            # and stime are the 14th and 15th fields, the 12th and 13th after it.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def read_thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) each live thread of ``pid`` has used, in seconds, with its
    name: ``{tid: (name, seconds)}`` from ``/proc/PID/task/TID/stat`` and ``.../comm``;
    empty once the process has exited. The name is :func:`thread_kind`'s.

    >>> import os
    >>> mine = read_thread_cpu_s(os.getpid())
    >>> mine[os.getpid()][0]
    'main'
    """
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return {}
    main_comm = _comm(pid, pid)
    out = {}
    for tid in tids:
        cpu = _stat_cpu_s(f"/proc/{pid}/task/{tid}/stat")
        comm = _comm(pid, tid)
        if cpu is not None and comm is not None:
            out[tid] = (thread_kind(comm, main=tid == pid, main_comm=main_comm), cpu)
    return out


def thread_kind(comm: str, *, main: bool, main_comm: str | None) -> str:
    """What a thread is, from its name (``comm``): ``main`` (the interpreter's main thread,
    where a Python agent's loop runs), ``python`` (another Python thread: they keep the
    process's name), or the name without its number (librdkafka's ``rdk:main``,
    ``rdk:broker1`` and ``rdk:broker-1`` become ``rdk:main``, ``rdk:broker``; the consumer's
    and the producer's threads share these names).

    >>> thread_kind("rdk:broker-1", main=False, main_comm="canary")
    'rdk:broker'
    >>> thread_kind("canary", main=False, main_comm="canary")
    'python'
    """
    if main:
        return "main"
    if comm == main_comm:
        return "python"
    return re.sub(r"-?\d+$", "", comm) or comm


def _comm(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def thread_cpu_delta(
    first: dict[int, tuple[str, float]], last: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds used between two :func:`read_thread_cpu_s` readings, summed per thread
    name: a thread started in between counts from zero; one that ended in between is left
    out (its time since ``first`` is unknown).

    >>> thread_cpu_delta({1: ("main", 1.0)}, {1: ("main", 1.5), 2: ("rdk:main", 0.25)})
    {'main': 0.5, 'rdk:main': 0.25}
    """
    out: dict[str, float] = {}
    for tid, (name, cpu) in last.items():
        before = first.get(tid)
        out[name] = out.get(name, 0.0) + cpu - (before[1] if before is not None else 0.0)
    return out


class RssSampler:
    """Samples a process's RSS every ``interval_s`` seconds in a daemon thread.

    >>> sampler = RssSampler(1, interval_s=0.1)   # ``sampler.start()`` begins sampling
    >>> sampler.peak_mb() is None
    True
    """

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (time.monotonic(), bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = read_rss(self.pid)
            if rss is None:
                return
            self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval_s)

    def sample_now(self) -> int | None:
        """Take (and record) one sample at once."""
        rss = read_rss(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic(), rss))
        return rss

    def at_mb(self, when: float) -> float | None:
        """RSS of the first sample taken at or after ``when`` (a ``time.monotonic()``)."""
        for t, rss in self.samples:
            if t >= when:
                return rss / MB
        return self.samples[-1][1] / MB if self.samples else None

    def peak_mb(self) -> float | None:
        return max(rss for _t, rss in self.samples) / MB if self.samples else None

    def last_mb(self) -> float | None:
        return self.samples[-1][1] / MB if self.samples else None


class Child(AgentProcess):
    """One contender process (an :class:`AgentProcess`) whose resident memory is sampled while
    it runs: ``argv`` with ``env``, output appended to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(name, argv, env, log_path)
        self.rss: RssSampler | None = None  # of the current (or last) run
        self.runs: list[RssSampler] = []  # one per start

    def start(self) -> Child:
        """Start the process (and its RSS sampler) unless it is running."""
        if self.alive:
            return self
        super().start()
        assert self.pid is not None
        self.rss = RssSampler(self.pid)
        self.rss.start()
        self.runs.append(self.rss)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop commits the open transaction) and wait; SIGKILL after
        ``timeout`` seconds. Returns the exit code, ``None`` if it never ran."""
        if self.proc is None:
            return None
        if self.rss is not None:
            self.rss.sample_now()
        code = super().stop(timeout)
        if self.rss is not None:
            self.rss.stop()
        return code

    def peak_mb(self) -> float | None:
        """Highest RSS over every run of this contender."""
        peaks = [p for p in (r.peak_mb() for r in self.runs) if p is not None]
        return max(peaks) if peaks else None

    def check_alive(self) -> None:
        """Raise with the end of the log when the process has exited."""
        if self.proc is not None and not self.alive:
            raise BenchError(f"{self.name} exited with code {self.returncode}:\n{self.log_tail()}")
