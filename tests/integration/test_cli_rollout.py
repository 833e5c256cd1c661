"""The operator's command line on a real broker: plans, status, watch, history, rejections."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue
from tests.integration.conftest import Agent

pytestmark = pytest.mark.integration


def test_plan_status_watch_rollback_and_history(
    settings: Settings, topics: TopicCatalogue, spawn: Callable[..., Agent], tmp_path: Path
) -> None:
    router = spawn("router", "--instance", "r1")
    conn = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]

    def canary(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "model_canary.agents.cli.main", *args, *conn],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "model: iris\nbaseline: v1\ncanary: v2\nsteps: [5, 50, 100]\n"
        "step: {min_duration: 1m, min_canary_requests: 100}\n"
        "metrics: {errors: {tolerance: 0.1}}\n"
    )
    router.ready()
    started = canary("rollout", "start", "--plan", str(plan))
    assert started.returncode == 0, started.stderr
    assert "applied" in started.stdout and "5%" in started.stdout

    status = canary("status", "iris", "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert (state["phase"], state["weight_percent"], state["steps_percent"]) == (
        "Progressing",
        5,
        [5, 50, 100],
    )

    bad = canary("set-weight", "iris", "150")
    assert bad.returncode == 2 and "outside 0..100" in bad.stderr
    forbidden = canary("resume", "iris")
    assert forbidden.returncode == 2 and "not paused" in forbidden.stderr
    no_reason = canary("rollback", "iris")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text('{"model": "iris", "canary": "v2", "steps": [1, 50]}')
    invalid = canary("rollout", "start", "--plan", str(bad_plan))
    assert invalid.returncode == 2 and "last step must be 100" in invalid.stderr

    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_canary.agents.cli.main",
            "status",
            "iris",
            "--watch",
            "--json",
            "--timeout",
            "60",
            *conn,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert canary("promote", "iris").returncode == 0
    assert canary("rollback", "iris", "--reason", "p99 too high").returncode == 0
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 3, err
    phases = [json.loads(line)["phase"] for line in out.splitlines()]
    assert phases[-1] == "RolledBack"
    assert canary("status", "iris").returncode == 3

    history = canary("history", "iris", "--json")
    assert history.returncode == 0, history.stderr
    events = [json.loads(line) for line in history.stdout.splitlines()]
    summary = [(e["action"], e["outcome"]) for e in events]
    assert summary == [
        ("start", "applied"),
        ("resume", "rejected"),
        ("advance", "applied"),
        ("rollback", "applied"),
    ]
    assert events[-1]["detail"] == "phase RolledBack"
    text = canary("history", "iris").stdout
    assert "p99 too high" in canary("status", "iris").stdout
    assert "rejected (forbidden-transition)" in text
