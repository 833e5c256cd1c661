"""The benchmark's report: a table, the targets, and one JSON line (printed last).

>>> from model_canary.streams.sim.runner import run
>>> lines = render(run(["aa"], replications=10, seed=3), json_only=False)
>>> lines[-1].startswith('{"replications": 10')
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from model_canary.streams.sim.ours import ALPHA
from model_canary.streams.sim.runner import MethodResult, ScenarioResult, SimResult

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
    #: The oracle reference misses it too: no valid test at this schedule can meet it.
    beyond_limit: bool = False


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
        oracle_rate = sr.methods["oracle"].rollback_rate
        out.append(
            Target(
                f"{name}: caught before 100% >= {CATCH_TARGET:.0%}",
                f"{ours.rollback_rate:.1%} (oracle {oracle_rate:.1%})",
                ours.rollback_rate >= CATCH_TARGET,
                oracle_rate < CATCH_TARGET,
            )
        )
        if name in MEDIAN_TARGETS:
            goal = MEDIAN_TARGETS[name]
            med = ours.median_requests
            oracle = sr.methods["oracle"].median_requests
            limits = f" (oracle {_num(oracle)}, small-share formula {_num(sr.info_limit)})"
            out.append(
                Target(
                    f"{name}: median canary requests <= {goal}",
                    _num(med) + limits,
                    med is not None and med <= goal,
                    oracle is None or oracle > goal,
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
                oracle = sr.methods["oracle"].median_requests
                out.append(
                    Target(
                        f"{name}: ours <= {share:g} x Kayenta-style median",
                        f"{mine / theirs:.2f} x ({_num(mine)} / {_num(theirs)}; oracle "
                        f"{_ratio(oracle, theirs)} x)",
                        mine <= share * theirs,
                        oracle is None or oracle > share * theirs,
                    )
                )
    return out


def table(result: SimResult) -> list[str]:
    head = f"{'scenario':<14} {'method':<10} {'rollback':>9} {'median req':>11} "
    head += f"{'p90 req':>9} {'median min':>11} {'promote-ready':>14}"
    lines = [head, "-" * len(head)]
    for sr in result.scenarios:
        for method, m in sr.methods.items():
            label = method + ("*" if method == "oracle" else "")
            lines.append(
                f"{sr.scenario.name:<14} {label:<10} {m.rollback_rate:>9.2%} "
                f"{_num(m.median_requests):>11} {_num(m.p90_requests):>9} "
                f"{_num(m.median_minute):>11} "
                f"{'' if m.promote_ready is None else format(m.promote_ready, '.1%'):>14}"
            )
    lines.append(
        "* oracle: a reference, not a method - the SPRT that knows the true ratio, on the same "
        "evidence, alpha share and evaluation cadence as ours: the information limit."
    )
    return lines


def median_ratios(result: SimResult) -> dict[str, dict[str, float | None]]:
    """Per harmful scenario: ours / oracle, ours / Kayenta-style and oracle / Kayenta-style
    median canary requests to the rollback."""
    out = {}
    for sr in result.scenarios:
        if not sr.scenario.harmful:
            continue
        med = {name: m.median_requests for name, m in sr.methods.items()}
        out[sr.scenario.name] = {
            "ours/oracle": _div(med["ours"], med["oracle"]),
            "ours/kayenta": _div(med["ours"], med["kayenta"]),
            "oracle/kayenta": _div(med["oracle"], med["kayenta"]),
        }
    return out


def summary(result: SimResult) -> dict[str, Any]:
    """The JSON line's content."""
    return {
        "replications": result.replications,
        "seed": result.seed,
        "seconds": round(result.seconds, 1),
        "scenarios": {sr.scenario.name: _scenario_json(sr) for sr in result.scenarios},
        "median_ratios": median_ratios(result),
        "targets": [
            {"target": t.text, "value": t.value, "met": t.met, "beyond_limit": t.beyond_limit}
            for t in targets(result)
        ],
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
            limit = " - beyond the information limit (the oracle misses it too)"
            lines.append(f"  [{mark:^7}] {t.text}: {t.value}{limit if t.beyond_limit else ''}")
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


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def _ratio(a: float | None, b: float | None) -> str:
    r = _div(a, b)
    return "-" if r is None else f"{r:.2f}"


def _round(x: float | None) -> int | None:
    return None if x is None else round(x)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
