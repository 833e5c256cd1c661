"""What the demo shows while it runs: a live ``rich`` view on a terminal, progress lines on
stderr otherwise (``--json`` or output not a TTY).

>>> view = LineView(every_s=10)  # prints nothing until update()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from model_canary.agents.demo.events import DecisionRow, describe_evidence
from model_canary.agents.demo.summary import VersionView
from model_canary.streams.messages import MetricEvidence


@dataclass(frozen=True, slots=True)
class Status:
    """One moment of the demo. ``steps_done``: plan steps completed (all when finalized)."""

    scenario: str
    elapsed_s: float
    phase: str
    weight_percent: float
    steps: tuple[float, ...]
    steps_done: int
    sent: int
    versions: Mapping[str, VersionView]
    roles: Mapping[str, str]
    decisions: list[DecisionRow] = field(default_factory=list)
    waiting: str = ""
    evidence: tuple[MetricEvidence, ...] = ()


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def accuracy_text(v: VersionView) -> str:
    """``"94.1% [92.0, 95.7]"`` (95% interval), or ``"-"`` before the first label."""
    if v.accuracy is None or v.accuracy_low is None or v.accuracy_high is None:
        return "-"
    return f"{v.accuracy:.1%} [{v.accuracy_low:.1%}, {v.accuracy_high:.1%}]"


def headline(s: Status) -> str:
    """The one-line status: time, phase, weight, step, requests."""
    return (
        f"{s.elapsed_s:5.0f}s  {s.phase:<11} canary weight {s.weight_percent:g}%  "
        f"step {min(s.steps_done + 1, len(s.steps))}/{len(s.steps)}  {s.sent} requests sent"
    )


def decision_text(d: DecisionRow) -> str:
    return f"{d.t:5.0f}s  {d.outcome:<8} at {d.weight_percent:g}% (step {d.step}): {d.reason}"


class RichView:
    """A live panel redrawn a few times a second."""

    def __init__(self, console: Console | None = None) -> None:
        self._live = Live(console=console or Console(), refresh_per_second=4, transient=False)
        self._live.start()

    def update(self, s: Status) -> None:
        self._live.update(self.render(s))

    def close(self) -> None:
        self._live.stop()

    @staticmethod
    def render(s: Status) -> Panel:
        arms = Table(expand=True, box=None)
        for column in ("version", "role", "requests", "errors", "p50 ms", "p99 ms"):
            arms.add_column(column, justify="left" if column in ("version", "role") else "right")
        arms.add_column("accuracy [95% interval]", justify="right")
        for version, v in s.versions.items():
            rate = f"{v.error_rate:.1%}" if v.error_rate is not None else "-"
            arms.add_row(
                version,
                s.roles.get(version, ""),
                str(v.requests),
                f"{v.errors} ({rate})",
                _ms(v.p50_ms),
                _ms(v.p99_ms),
                accuracy_text(v),
            )
        bar = ProgressBar(total=len(s.steps), completed=s.steps_done, width=40)
        steps = "  ".join(
            f"[bold]{w:g}%[/]" if i == s.steps_done else f"{w:g}%" for i, w in enumerate(s.steps)
        )
        parts: list[object] = [Text(headline(s), style="bold"), Group(bar, Text.from_markup(steps))]
        parts += [arms]
        if s.evidence:
            parts.append(Text("evaluator evidence (canary/baseline bad-event ratio):"))
            parts += [Text("  " + describe_evidence(e)) for e in s.evidence]
        if s.waiting:
            parts.append(Text(f"waiting: {s.waiting}", style="dim"))
        parts.append(Text("decisions:"))
        parts += [Text("  " + decision_text(d)) for d in s.decisions[-8:]] or [Text("  none yet")]
        return Panel(Group(*parts), title=f"canary demo: scenario {s.scenario}")  # type: ignore[arg-type]


class LineView:
    """Progress lines on stderr: every decision and phase change, a status line now and then."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._shown = 0
        self._phase = ""
        self._last = 0.0

    def update(self, s: Status) -> None:
        for d in s.decisions[self._shown :]:
            self._say("decision " + decision_text(d))
        self._shown = len(s.decisions)
        now = time.monotonic()
        if s.phase != self._phase or now - self._last >= self.every_s:
            self._phase, self._last = s.phase, now
            per_version = ", ".join(
                f"{ver} {v.requests} req {v.errors} err acc {accuracy_text(v)}"
                for ver, v in s.versions.items()
            )
            self._say(f"{headline(s)} | {per_version}")

    def close(self) -> None:
        pass

    @staticmethod
    def _say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)
