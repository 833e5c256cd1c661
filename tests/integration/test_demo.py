"""The README's main job, sped up: ``canary demo`` on the test broker, each scenario ending
as it should with every request answered exactly once, and every process stopped.

The scenarios run one after the other, each under its own topic prefix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from model_canary.streams.settings import Settings

# The scenarios run for minutes on a busy machine; no assertion is about time.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

KEYS = {
    "scenario",
    "final_phase",
    "decisions",
    "requests_per_arm",
    "requests",
    "answered",
    "lost",
    "duplicates",
    "audit",
    "report",
}
SCENARIOS = {
    "good": ("--scenario", "good"),
    "bad": ("--scenario", "bad", "--regression", "latency"),
    "shadow": ("--scenario", "shadow"),
    "preflight": ("--scenario", "preflight"),
}
# The CI suite must stay under 15 minutes, so it leaves two scenarios to CANARY_TEST_LONG=1:
# preflight (about a minute more than the others; its machinery is tested by
# tests/integration/test_preflight.py) and shadow (about 40 s; shadow routing, serving and
# mirroring are tested by tests/integration/test_rollback_and_shadow.py, the demo's shadow
# summary by tests/unit/test_demo_summary.py).
LONG = bool(os.environ.get("CANARY_TEST_LONG"))
if not LONG:
    del SCENARIOS["preflight"], SCENARIOS["shadow"]


@dataclass(frozen=True)
class Run:
    prefix: str
    report: Path
    code: int
    stdout: str
    stderr: str


def _command(bootstrap: str, prefix: str, report: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "model_canary.agents.cli.main",
        "demo",
        "--json",
        "--speed",
        "5",
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--report",
        str(report),
        *args,
    ]


@pytest.fixture(scope="module")
def runs(broker_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Run every scenario once for the module, one after the other: three demos at once (nine
    agents on two cores) slow the workers so unevenly that latency evidence stops settling."""
    done = {}
    for name, args in SCENARIOS.items():
        prefix = f"t{uuid.uuid4().hex[:10]}"
        report = tmp_path_factory.mktemp(name) / "report.html"
        cmd = _command(broker_settings.bootstrap_servers, prefix, report, *args)
        proc = subprocess.run(
            [*cmd, "--timeout", "300"], capture_output=True, text=True, timeout=420, check=False
        )
        done[name] = Run(prefix, report, proc.returncode, proc.stdout, proc.stderr)
    return done


def _summary(run: Run) -> dict[str, Any]:
    assert run.code == 0, run.stdout[-2000:] + run.stderr[-3000:]
    summary: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(summary) >= KEYS, summary
    assert summary["requests"] > 0 and summary["answered"] == summary["requests"]
    assert (summary["lost"], summary["duplicates"]) == (0, 0)
    audit = summary["audit"]
    assert audit["ok"] and audit["requests"] >= summary["requests"], audit
    assert Path(summary["report"]) == run.report.resolve()
    html = run.report.read_text(encoding="utf-8")
    assert html.count("<svg") == 4 and "Canary weight" in html and "<script" not in html
    assert _agents_of(run.prefix) == {}, "every agent stopped"
    return summary


def _agents_of(prefix: str) -> dict[int, bytes]:
    """Processes whose environment names this topic prefix (the demo's agents), with their
    command lines."""
    found = {}
    needle = f"CANARY_TOPIC_PREFIX={prefix}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
    return found


def test_good_candidate_is_promoted_step_by_step_and_finalized(runs: dict[str, Run]) -> None:
    summary = _summary(runs["good"])
    assert summary["final_phase"] == "Succeeded"
    moves = [(d["action"], d["weight_percent"]) for d in summary["decisions"]]
    assert moves == [("ADVANCE", 1), ("ADVANCE", 20), ("ADVANCE", 50), ("FINALIZE", 100)]
    assert summary["requests_per_arm"]["canary"] > 0


def test_slow_candidate_is_rolled_back_by_the_evaluator(runs: dict[str, Run]) -> None:
    summary = _summary(runs["bad"])
    assert summary["final_phase"] == "RolledBack"
    assert summary["decisions"][-1]["action"] == "ROLLBACK"
    assert "latency" in summary["decisions"][-1]["reason"]


@pytest.mark.skipif(not LONG, reason="the demo's shadow scenario runs with CANARY_TEST_LONG=1")
def test_shadow_serves_everything_from_the_baseline(runs: dict[str, Run]) -> None:
    summary = _summary(runs["shadow"])
    arms = summary["requests_per_arm"]
    assert "canary" not in arms and arms["shadow"] > 0
    assert arms.get("stable", 0) + arms["baseline"] == summary["requests"]
    shadow = summary["shadow"]
    assert shadow["pairs"] > 0 and 0 < shadow["agreement"] < 1, "v1 and v2 differ sometimes"


@pytest.mark.skipif(
    not LONG, reason="the demo's preflight scenario takes a minute more: CANARY_TEST_LONG=1"
)
def test_a_bad_candidate_is_stopped_by_its_preflight_and_a_good_one_goes_live(
    runs: dict[str, Run],
) -> None:
    summary = _summary(runs["preflight"])
    verdicts = {p["candidate"]: p for p in summary["preflights"]}
    assert verdicts["v3"]["status"] == "failed" and "accuracy" in verdicts["v3"]["reason"]
    assert verdicts["v2"]["status"] == "passed" and verdicts["v2"]["labelled"] > 0
    assert all("<svg" in Path(p["report"]).read_text() for p in verdicts.values())
    assert summary["final_phase"] == "Progressing"
    assert [(d["action"], d["weight_percent"]) for d in summary["decisions"]][:1] == [
        ("ADVANCE", 1)
    ]
    assert summary["requests_per_arm"]["canary"] > 0, "the good candidate served its 1% step"


def test_sigterm_stops_every_process_the_demo_started(settings: Settings, tmp_path: Path) -> None:
    cmd = _command(
        settings.bootstrap_servers, settings.topic_prefix, tmp_path / "report.html", "--json"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if "starting the rollout" in line or time.monotonic() > deadline:
            break
    assert _agents_of(settings.topic_prefix), "the agents are running"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert _agents_of(settings.topic_prefix) == {}
