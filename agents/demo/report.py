"""The demo's self-contained HTML report: the outcome, the decisions and plots over time
(canary weight, error rate, latency quantiles, accuracy per version) with decision markers.
Everything is inline (SVG drawn by :mod:`model_canary.agents.demo.svg`); the file opens offline.

>>> html = render_report(ReportData(summary={"scenario": "good"}, samples=[], weight=[],
...                                 decisions=[], roles={}, end_s=10, plan={}))
>>> html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from model_canary.agents.demo.events import DecisionRow
from model_canary.agents.demo.summary import Sample, VersionView, over_time
from model_canary.agents.demo.svg import MARKER_COLOURS, Line, Marker, line_chart

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
OUTCOME_KEYS = (
    "scenario",
    "regression",
    "final_phase",
    "expected_phase",
    "duration_s",
    "requests",
    "answered",
    "lost",
    "duplicates",
    "requests_per_arm",
    "shadow",
    "preflights",
)
#: Aim for about this many points per line.
BUCKETS = 60


@dataclass(frozen=True, slots=True)
class ReportData:
    """What the report shows: the final JSON summary, every result sample, the weight over
    time, the decisions that acted, each version's role and the plan."""

    summary: Mapping[str, Any]
    samples: Sequence[Sample]
    weight: Sequence[tuple[float, float]]
    decisions: Sequence[DecisionRow]
    roles: Mapping[str, str]
    end_s: float
    plan: Mapping[str, Any]


def bucket_seconds(end_s: float) -> float:
    """Bucket width: about :data:`BUCKETS` buckets, at least one second.

    >>> bucket_seconds(30), bucket_seconds(600)
    (1.0, 10.0)
    """
    return float(max(1, round(end_s / BUCKETS)))


def charts(data: ReportData) -> list[str]:
    """The four SVG charts."""
    end = max(data.end_s, 1.0)
    markers = [
        Marker(d.t, f"{d.outcome} {d.weight_percent:g}%", MARKER_COLOURS.get(d.outcome, "#555"))
        for d in data.decisions
    ]
    weight = [Line("canary weight", "#d62728", list(data.weight), step=True)]
    return [
        line_chart("Canary weight", weight, x_max=end, y_label="%", markers=markers, y_max=100),
        *version_charts(data.samples, end, data.roles, markers),
    ]


def version_charts(
    samples: Sequence[Sample],
    end_s: float,
    roles: Mapping[str, str],
    markers: Sequence[Marker] = (),
    extra: Sequence[tuple[str, Callable[[Sample], bool | None]]] = (),
) -> list[str]:
    """Per version over time: error rate, latency quantiles, accuracy, and for each of
    ``extra`` (a title and which samples are bad, ``None`` for those it does not judge) the
    share of bad samples among those judged (the demo and the pre-flight report share these)."""
    end = max(end_s, 1.0)
    bucket = bucket_seconds(end)
    series = over_time(samples, bucket, end)
    colours = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(series))}

    def name(version: str) -> str:
        role = roles.get(version)
        return f"{version} ({role})" if role else version

    def lines(pick: Any, suffix: str = "", dashed: bool = False) -> list[Line]:
        out = []
        for version, rows in series.items():
            points = [(t, y) for t, view in rows if (y := pick(view)) is not None]
            out.append(Line(name(version) + suffix, colours[version], points, dashed=dashed))
        return out

    def error_pct(v: VersionView) -> float | None:
        return None if v.error_rate is None else 100 * v.error_rate

    def accuracy_pct(v: VersionView) -> float | None:
        return None if v.accuracy is None else 100 * v.accuracy

    out = [
        line_chart(
            "Error rate per version", lines(error_pct), x_max=end, y_label="%", markers=markers
        ),
        line_chart(
            "Latency quantiles per version (log scale)",
            lines(lambda v: v.p50_ms, " p50") + lines(lambda v: v.p99_ms, " p99", dashed=True),
            x_max=end,
            y_label="ms",
            markers=markers,
            log_y=True,
        ),
        line_chart(
            "Accuracy per version (labelled requests)",
            lines(accuracy_pct),
            x_max=end,
            y_label="%",
            markers=markers,
            y_max=100,
        ),
    ]
    for title, bad in extra:
        judged = bad_share_over_time(samples, bad, bucket, end)
        rate_lines = [
            Line(name(version), colours.get(version, PALETTE[0]), points)
            for version, points in judged.items()
        ]
        out.append(line_chart(title, rate_lines, x_max=end, y_label="%", markers=markers))
    return out


def bad_share_over_time(
    samples: Sequence[Sample],
    bad: Callable[[Sample], bool | None],
    bucket_s: float,
    end_s: float,
) -> dict[str, list[tuple[float, float]]]:
    """Per version and time bucket, the percentage of judged samples that are bad.

    >>> s = [Sample(0.5, "r1", "v1", "baseline", True, False, 2.0, "1", None),
    ...      Sample(0.7, "r2", "v1", "baseline", True, True, 2.0, None, None)]
    >>> bad_share_over_time(s, lambda x: x.error, 1.0, 1.0)
    {'v1': [(0.5, 50.0)]}
    """
    counts: dict[str, dict[int, list[int]]] = {}
    for sample in samples:
        verdict = bad(sample)
        if verdict is None or not 0 <= sample.t <= end_s:
            continue
        row = counts.setdefault(sample.version, {}).setdefault(int(sample.t // bucket_s), [0, 0])
        row[0] += 1
        row[1] += verdict
    return {
        version: [((i + 0.5) * bucket_s, 100 * b / n) for i, (n, b) in sorted(rows.items())]
        for version, rows in sorted(counts.items())
    }


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table (cells escaped)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML document (inline style, no script)."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title>",
            "<style>body{font-family:sans-serif;margin:24px;max-width:960px}"
            "table{border-collapse:collapse;margin:8px 0 16px}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
            "svg{display:block;margin:10px 0}pre{background:#f6f6f6;padding:8px}</style>",
            "</head><body>",
            f"<h1>{escape(title)}</h1>",
            *body,
            "</body></html>",
        ]
    )


def render_report(data: ReportData) -> str:
    """The whole HTML document."""
    s = data.summary
    outcome = [
        (key, json.dumps(s[key]) if isinstance(s[key], dict | list) else s[key])
        for key in OUTCOME_KEYS
        if key in s and s[key] is not None
    ]
    decisions = [
        (f"{d.t:.1f}s", d.outcome, d.step, f"{d.weight_percent:g}%", d.reason)
        for d in data.decisions
    ]
    title = f"canary demo: scenario {s.get('scenario', '?')}"
    return page(
        title,
        [
            "<h2>Outcome</h2>",
            table(("", ""), outcome),
            "<h2>Decisions</h2>",
            table(("time", "action", "step", "weight", "reason"), decisions)
            if decisions
            else "<p>No decision moved the rollout.</p>",
            "<h2>Over time</h2>",
            *charts(data),
            "<h2>Rollout plan</h2>",
            f"<pre>{escape(json.dumps(data.plan, indent=2))}</pre>",
        ],
    )
