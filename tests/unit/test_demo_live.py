"""The demo's live view and progress lines render what the rollout is doing."""

from __future__ import annotations

import pytest
from rich.console import Console

from model_canary.agents.demo.events import DecisionRow
from model_canary.agents.demo.live import LineView, RichView, Status
from model_canary.agents.demo.summary import Sample, version_views
from model_canary.streams.messages import MetricEvidence


def _status(decisions: list[DecisionRow]) -> Status:
    samples = [
        Sample(1.0, f"r{i}", "v1" if i % 4 else "v2", "baseline", True, i % 10 == 0, 2.0, "1", True)
        for i in range(200)
    ]
    return Status(
        scenario="good",
        elapsed_s=42.0,
        phase="Progressing",
        weight_percent=20.0,
        steps=(1.0, 20.0, 50.0, 100.0),
        steps_done=1,
        sent=200,
        versions=version_views(samples),
        roles={"v1": "baseline", "v2": "canary"},
        decisions=decisions,
        waiting="too-short: step ran 3s of 20s",
        evidence=(
            MetricEvidence(
                metric="errors",
                canary_n=50,
                baseline_n=150,
                canary_bad=5,
                baseline_bad=15,
                lower=0.4,
                upper=None,
            ),
        ),
    )


def test_rich_view_shows_phase_arms_evidence_and_decisions() -> None:
    console = Console(record=True, width=140)
    decision = DecisionRow(30.0, "ADVANCE", 0, 1.0, "ok: no harm detected")
    console.print(RichView.render(_status([decision])))
    text = console.export_text()
    assert "Progressing" in text and "canary weight 20%" in text and "step 2/4" in text
    assert "v2" in text and "canary" in text and "accuracy" in text
    assert "ratio in [0.4, inf]" in text
    assert "ADVANCE  at 1% (step 0): ok: no harm detected" in text
    assert "waiting: too-short" in text


def test_line_view_prints_each_decision_once(capsys: pytest.CaptureFixture[str]) -> None:
    view = LineView(every_s=3600)
    first = DecisionRow(30.0, "ADVANCE", 0, 1.0, "ok")
    view.update(_status([first]))
    view.update(_status([first, DecisionRow(50.0, "ROLLBACK", 1, 20.0, "harm")]))
    err = capsys.readouterr().err
    assert err.count("decision ") == 2 and err.count("ADVANCE") == 1
    assert err.count("Progressing") == 1, "status lines only on change or now and then"
