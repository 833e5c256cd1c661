"""The benchmark's report: a table, the targets, and one JSON line (printed last).

>>> from streams.sim.runner import run
>>> lines = render(run(["aa"], replications=10, seed=3), json_only=False)
>>> lines[-1].startswith('{"replications": 10')
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.sim.ours import ALPHA
from streams.sim.runner import MethodResult, ScenarioResult, SimResult

#: Median canary requests to detect, per scenario (the product's stated goals).
MEDIAN_TARGETS = {"errors": 1100, "latency-tail": 200, "accuracy-d0": 2900}
#: Ours must need at most this share of the Kayenta-style judge's median.
RELATIVE_TARGETS = {
    "errors": 0.2,
    "latency-scale": 0.2,
    "latency-tail": 0.2,
    "accuracy-d0": 0.5,
    "accuracy-d10": 0.5,
    "accuracy-d60": 0.5,
}
CATCH_TARGET = 0.95


@dataclass(frozen=True, slots=True)
class Target:
    text: str
    value: str
    met: bool | None  #: None: cannot be judged (a method never rolled back)


def targets(result: SimResult) -> list[Target]:
    out: list[Target] = []
    for sr in result.scenarios:
        name, ours = sr.scenario.name, sr.methods["ours"]
        if not sr.scenario.harmful:
            out.append(
                Target(
                    f"{name}: false rollback <= {ALPHA:g}",
                    f"{ours.rollback_rate:.2%}",
                    ours.rollback_rate <= ALPHA,
                )
            )
            continue
        out.append(
            Target(
                f"{name}: caught before 100% >= {CATCH_TARGET:.0%}",
                f"{ours.rollback_rate:.1%}",
                ours.rollback_rate >= CATCH_TARGET,
            )
        )
        if name in MEDIAN_TARGETS:
            goal = MEDIAN_TARGETS[name]
            med = ours.median_requests
            limits = f" (limit {_num(sr.info_limit)}, vs tolerance {_num(sr.info_limit_tolerance)})"
            out.append(
                Target(
                    f"{name}: median canary requests <= {goal}",
                    _num(med) + limits,
                    med is not None and med <= goal,
                )
            )
        if name in RELATIVE_TARGETS:
            share = RELATIVE_TARGETS[name]
            theirs = sr.methods["kayenta"].median_requests
            mine = ours.median_requests
            caught = min(ours.rollback_rate, sr.methods["kayenta"].rollback_rate)
            if theirs is None or mine is None or caught < 0.5:
                # A median over the few runs that happened to roll back compares nothing.
                out.append(
                    Target(
                        f"{name}: ours <= {share:g} x Kayenta-style median",
                        f"ours {_num(mine)}, kayenta {_num(theirs)} (under half caught)",
                        None,
                    )
                )
            else:
                out.append(
                    Target(
                        f"{name}: ours <= {share:g} x Kayenta-style median",
                        f"{mine / theirs:.2f} x ({_num(mine)} / {_num(theirs)})",
                        mine <= share * theirs,
                    )
                )
    return out


def table(result: SimResult) -> list[str]:
    head = f"{'scenario':<14} {'method':<10} {'rollback':>9} {'median req':>11} "
    head += f"{'p90 req':>9} {'median min':>11} {'promote-ready':>14}"
    lines = [head, "-" * len(head)]
    for sr in result.scenarios:
        for method, m in sr.methods.items():
            lines.append(
                f"{sr.scenario.name:<14} {method:<10} {m.rollback_rate:>9.2%} "
                f"{_num(m.median_requests):>11} {_num(m.p90_requests):>9} "
                f"{_num(m.median_minute):>11} "
                f"{'' if m.promote_ready is None else format(m.promote_ready, '.1%'):>14}"
            )
    return lines


def summary(result: SimResult) -> dict[str, Any]:
    """The JSON line's content."""
    return {
        "replications": result.replications,
        "seed": result.seed,
        "seconds": round(result.seconds, 1),
        "scenarios": {sr.scenario.name: _scenario_json(sr) for sr in result.scenarios},
        "targets": [{"target": t.text, "value": t.value, "met": t.met} for t in targets(result)],
    }


def render(result: SimResult, json_only: bool) -> list[str]:
    lines: list[str] = []
    if not json_only:
        lines.append(
            f"canary sim: {result.replications} replications, seed {result.seed}, "
            f"{result.seconds:.1f}s"
        )
        lines.extend(table(result))
        lines.append("")
        lines.append("targets:")
        for t in targets(result):
            mark = {True: "met", False: "NOT met", None: "n/a"}[t.met]
            lines.append(f"  [{mark:^7}] {t.text}: {t.value}")
    lines.append(json.dumps(summary(result)))
    return lines


def _scenario_json(sr: ScenarioResult) -> dict[str, Any]:
    return {method: _method_json(m) for method, m in sr.methods.items()}


def _method_json(m: MethodResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rollback_rate": round(m.rollback_rate, 4),
        "median_canary_requests": _round(m.median_requests),
        "p90_canary_requests": _round(m.p90_requests),
    }
    if m.promote_ready is not None:
        out["promote_ready"] = round(m.promote_ready, 4)
    return out


def _round(x: float | None) -> int | None:
    return None if x is None else round(x)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
