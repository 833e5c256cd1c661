"""The README's main job, shortened: ``canary demo`` on the test broker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_demo_rolls_out_v2_with_nothing_lost_or_duplicated(settings: Settings) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.cli.main",
            "demo",
            "--json",
            "--bootstrap",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--requests-per-step",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["final_phase"] == "Succeeded"
    assert (summary["requests"], summary["answered"]) == (240, 240)
    assert (summary["lost"], summary["duplicates"]) == (0, 0)
    served = [
        (step.get("baseline", {}).get("served", 0), step.get("canary", {}).get("served", 0))
        for step in summary["steps"]
    ]
    assert served[-1] == (0, 60), "at 100% the canary serves everything"
    assert served[0][0] > served[0][1], "at 1% the baseline serves most"
