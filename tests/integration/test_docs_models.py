"""docs/models.md, run as a newcomer would: every file block written, every ``sh`` block and
every unnamed ``python`` block run in order in one shell, in a fresh folder, against the test
broker (``canary broker start`` is left out: the session's broker is used). ``shell`` blocks
are illustrations (a model server the test does not have) and are not run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model_canary.agents.client import ControlClient
from model_canary.streams.messages import Phase
from model_canary.streams.settings import Settings
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

PAGE = ROOT / "docs" / "models.md"
BLOCK = re.compile(r"^```(\w+)(?: (\S+))?\n(.*?)^```$", re.S | re.M)


def page_script(text: str) -> str:
    """The page as one bash script (files written with here-documents)."""
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for language, name, body in BLOCK.findall(text):
        if name:
            lines += [f"cat > {name} <<'PAGE_EOF'", body.rstrip("\n"), "PAGE_EOF"]
        elif language == "sh":
            for line in body.splitlines():
                skip = line.startswith("canary broker start")
                lines.append(f": {line}" if skip else line)
        elif language == "python":
            lines += ["python - <<'PAGE_EOF'", body.rstrip("\n"), "PAGE_EOF"]
    return "\n".join(lines) + "\n"


def test_the_writing_your_own_model_page_runs_as_written(
    settings: Settings, tmp_path: Path
) -> None:
    script = page_script(PAGE.read_text())
    assert "canary worker --model spam --version v2" in script and "train_iris.py" in script
    env = settings.child_env({"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    spam, iris = answers
    assert (spam["model"], spam["version"], spam["outputs"]) == ("spam", "v1", "ham")
    assert (iris["model"], iris["version"], iris["served"]) == ("iris", "v1", True)
    assert iris["outputs"]["outputs"][0]["name"] == "predict"
    assert "v1 b'\"ham\"'" in done.stdout  # the Python client's example printed its answer
    assert "phase     Succeeded" in done.stdout
    state = ControlClient(settings).state("spam")
    assert state is not None and (state.phase, state.stable_version) == (Phase.SUCCEEDED, "v2")
