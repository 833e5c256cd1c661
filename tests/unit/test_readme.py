"""The README's examples stay true to the code."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import yaml

from model_canary.streams.plan import METRIC_DEFAULTS, parse_plan

ROOT = Path(__file__).resolve().parents[2]


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_the_readme_plan_is_the_default_plan_but_for_the_lines_it_marks() -> None:
    (block,) = [b for b in _yaml_blocks((ROOT / "README.md").read_text()) if "steps:" in b]
    marked = [line for line in block.splitlines() if "# not a default" in line]
    assert [line.split(":")[0].strip() for line in marked] == ["latency_p99", "accuracy"]
    example = parse_plan(yaml.safe_load(block))
    default = parse_plan({"model": example.model, "canary": example.canary})
    differs = {
        name: getattr(example, name)
        for name in example.__dataclass_fields__
        if getattr(example, name) != getattr(default, name)
    }
    # The baseline is named in the example (the default is the stable version); the metrics
    # differ exactly by the marked lines.
    assert set(differs) == {"baseline", "metrics"}
    metrics = dict(example.metrics)
    p99 = METRIC_DEFAULTS["latency_p99"]
    assert metrics.pop("latency_p99") == replace(p99, rollback_tolerance=0.05)
    assert "accuracy" in metrics and "accuracy" not in default.metrics
    del metrics["accuracy"]
    assert metrics == {k: v for k, v in default.metrics.items() if k != "latency_p99"}
    assert default.metrics["latency_p99"] == p99
