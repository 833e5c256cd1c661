"""The benchmark's report: a table, the targets with 95% intervals, and one JSON line (last).

Rates carry Wilson 95% intervals; the ratio of our median canary requests to the oracle's a
paired bootstrap 95% interval (over the runs where both rolled back).

>>> from model_canary.streams.sim.catalogue import BY_NAME
>>> from model_canary.streams.sim.runner import run
>>> from dataclasses import replace
>>> short = replace(BY_NAME["aa"], minutes=3)
>>> lines = render(run([short], replications=4, seed=3), json_only=False)
>>> lines[-1].startswith('{"replications": 4')
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_canary.streams.plan import RolloutPlan
from model_canary.streams.sim.engine import RunResult
from model_canary.streams.sim.runner import SimRun

#: Harmful scenarios whose median canary requests are compared with the oracle's.
ORACLE_TARGETS = ("errors", "latency-scale", "latency-tail", "accuracy")
ORACLE_RATIO = 1.15
CATCH_TARGET = 0.95
PROMOTE_WITHIN_S = 3600.0
PROMOTE_TARGET = 0.90
#: The identical-canary scenario whose time to promote is a target.
PROMOTE_SCENARIO = "aa"


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion ``k / n``.

    >>> [round(x, 4) for x in wilson(5, 100)]
    [0.0215, 0.1118]
    """
    if n == 0:
        return (0.0, 1.0)
    z = 1.959963984540054
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class Target:
    text: str
    value: str
    met: bool | None  #: None: cannot be judged here
    #: The oracle misses it too (its own interval is beyond the target): no valid test can.
    beyond_limit: bool = False


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def scenario_summary(r: RunResult, alpha: float) -> dict[str, Any]:
    """The JSON of one scenario."""
    n = r.rollback_s.size
    rolled = r.rollback_s >= 0
    out: dict[str, Any] = {"title": r.scenario.title, "harmful": r.scenario.harmful, "runs": n}
    if not r.scenario.harmful:
        out["false_rollback"] = _rate(int(rolled.sum()), n)
        fin = r.finalized_s
        within = (fin >= 0) & (fin <= PROMOTE_WITHIN_S)
        out["finalized_within_1h"] = _rate(int(within.sum()), n)
        out["finalized"] = _rate(int((fin >= 0).sum()), n)
        hours = np.where(fin >= 0, fin / 3600.0, np.inf)
        median = float(np.median(hours))
        out["median_hours_to_finalize"] = round(median, 3) if math.isfinite(median) else None
    else:
        caught = rolled & ((r.full_s < 0) | (r.rollback_s <= r.full_s))
        out["caught_before_100"] = _rate(int(caught.sum()), n)
        out["median_canary_requests"] = _median(r.rollback_canary[rolled])
        out["median_minutes"] = _median(r.rollback_s[rolled] / 60.0, 1)
        if r.oracle_defined:
            crossed = r.oracle_s >= 0
            out["oracle_median_canary_requests"] = _median(r.oracle_canary[crossed])
            out["oracle_caught"] = _rate(int(crossed.sum()), n)
            both = rolled & crossed
            out["ours_over_oracle"] = _ratio(r.rollback_canary[both], r.oracle_canary[both])
    codes: dict[str, int] = {}
    for code in r.last_code:
        codes[code] = codes.get(code, 0) + 1
    out["last_codes"] = dict(sorted(codes.items(), key=lambda kv: -kv[1]))
    return out


def _median(x: np.ndarray, digits: int = 0) -> float | None:
    return None if x.size == 0 else round(float(np.median(x)), digits)


def _ratio(ours: np.ndarray, oracle: np.ndarray) -> dict[str, Any] | None:
    if ours.size < 10:
        return None
    point = float(np.median(ours) / np.median(oracle))
    rng = np.random.default_rng(0)
    picks = rng.integers(0, ours.size, (1000, ours.size))
    boot = np.median(ours[picks], axis=1) / np.median(oracle[picks], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"ratio": round(point, 3), "ci95": [round(float(lo), 3), round(float(hi), 3)]}


def targets(summary: dict[str, dict[str, Any]], alpha: float) -> list[Target]:
    out: list[Target] = []
    for name, s in summary.items():
        if not s["harmful"]:
            fr = s["false_rollback"]
            out.append(
                Target(
                    f"{name}: false rollback <= {alpha:g} (95% upper end <= {alpha + 0.01:g})",
                    f"{fr['rate']:.2%} [{fr['ci95'][0]:.2%}, {fr['ci95'][1]:.2%}]",
                    fr["ci95"][1] <= alpha + 0.01,
                )
            )
            if name == PROMOTE_SCENARIO:
                f1 = s["finalized_within_1h"]
                out.append(
                    Target(
                        f"{name}: identical canary finalized within 1 h >= {PROMOTE_TARGET:.0%}",
                        f"{f1['rate']:.1%} [{f1['ci95'][0]:.1%}, {f1['ci95'][1]:.1%}], "
                        f"median {s['median_hours_to_finalize']} h",
                        f1["rate"] >= PROMOTE_TARGET,
                    )
                )
            continue
        caught = s["caught_before_100"]
        oracle = s.get("oracle_caught")
        out.append(
            Target(
                f"{name}: caught before 100% >= {CATCH_TARGET:.0%}",
                f"{caught['rate']:.1%} [{caught['ci95'][0]:.1%}, {caught['ci95'][1]:.1%}]"
                + (f" (oracle {oracle['rate']:.1%})" if oracle else ""),
                caught["rate"] >= CATCH_TARGET,
                bool(oracle and oracle["ci95"][1] < CATCH_TARGET),
            )
        )
        if name in ORACLE_TARGETS:
            ratio = s.get("ours_over_oracle")
            out.append(
                Target(
                    f"{name}: ours <= {ORACLE_RATIO:g} x the oracle's median canary requests",
                    "n/a"
                    if ratio is None
                    else f"{ratio['ratio']:.3f} [{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}] "
                    f"({s['median_canary_requests']:,.0f} vs "
                    f"{s['oracle_median_canary_requests']:,.0f})",
                    None if ratio is None else ratio["ratio"] <= ORACLE_RATIO,
                )
            )
    return out


def summary(run: SimRun) -> dict[str, Any]:
    """The JSON line's content."""
    alpha = RolloutPlan.from_json(run.results[0].plan_json).alpha if run.results else 0.05
    scenarios = {r.scenario.name: scenario_summary(r, alpha) for r in run.results}
    return {
        "replications": run.replications,
        "seed": run.seed,
        "seconds": round(run.seconds, 1),
        "alpha": alpha,
        "scenarios": scenarios,
        "targets": [
            {"target": t.text, "value": t.value, "met": t.met, "beyond_limit": t.beyond_limit}
            for t in targets(scenarios, alpha)
        ],
    }


def render(run: SimRun, json_only: bool) -> list[str]:
    doc = summary(run)
    lines: list[str] = []
    if not json_only:
        lines.append(
            f"canary sim: {run.replications} replications per scenario, seed {run.seed}, "
            f"{run.seconds:.1f}s"
        )
        head = f"{'scenario':<18} {'rollback':>16} {'caught <100%':>13} {'median req':>11} "
        head += f"{'oracle req':>11} {'final <1h':>10} {'median h':>9}"
        lines += [head, "-" * len(head)]
        for name, s in doc["scenarios"].items():
            rb = s.get("false_rollback") or s.get("caught_before_100")
            rb_text = f"{rb['rate']:.2%}" if not s["harmful"] else ""
            caught = f"{rb['rate']:.1%}" if s["harmful"] else ""
            fin = s.get("finalized_within_1h")
            lines.append(
                f"{name:<18} {rb_text:>16} {caught:>13} "
                f"{_num(s.get('median_canary_requests')):>11} "
                f"{_num(s.get('oracle_median_canary_requests')):>11} "
                f"{'' if fin is None else format(fin['rate'], '.1%'):>10} "
                f"{_num(s.get('median_hours_to_finalize'), 2):>9}"
            )
        lines.append(
            "oracle: a reference, not a method - the SPRT that knows the true ratio, on the "
            "evaluator's own evidence, alpha share and cadence (independent requests only)."
        )
        lines.append("")
        lines.append("targets:")
        for t in targets(doc["scenarios"], doc["alpha"]):
            mark = {True: "met", False: "NOT met", None: "n/a"}[t.met]
            limit = " - beyond the information limit (the oracle misses it too)"
            lines.append(f"  [{mark:^7}] {t.text}: {t.value}{limit if t.beyond_limit else ''}")
    lines.append(json.dumps(doc))
    return lines


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"
