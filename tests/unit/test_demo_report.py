"""The demo report: one self-contained HTML file with the four plots and decision markers."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from model_canary.agents.demo.events import DecisionRow
from model_canary.agents.demo.report import ReportData, bucket_seconds, render_report
from model_canary.agents.demo.summary import Sample
from model_canary.agents.demo.svg import Line, line_chart, nice_max


def _data() -> ReportData:
    samples = [
        Sample(
            t / 10,
            f"r{t}",
            "v1" if t % 2 else "v2",
            "baseline" if t % 2 else "canary",
            True,
            t % 7 == 0,
            1.0 + t % 5,
            "1",
            t % 3 != 0,
        )
        for t in range(600)
    ]
    return ReportData(
        summary={"scenario": "good", "final_phase": "Succeeded", "lost": 0, "duplicates": 0},
        samples=samples,
        weight=[(0.0, 0.0), (5.0, 1.0), (20.0, 20.0), (40.0, 100.0)],
        decisions=[
            DecisionRow(20.0, "ADVANCE", 0, 1.0, "ok: no harm <detected>"),
            DecisionRow(55.0, "FINALIZE", 3, 100.0, "ok: full traffic"),
        ],
        roles={"v1": "baseline", "v2": "canary"},
        end_s=60.0,
        plan={"model": "iris"},
    )


def test_report_is_self_contained_html_with_four_charts_and_markers() -> None:
    html = render_report(_data())
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 4
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed
    titles = [re.search(r"<title>(.*?)</title>", s).group(1) for s in svgs]  # type: ignore[union-attr]
    assert titles == [
        "Canary weight",
        "Error rate per version",
        "Latency quantiles per version (log scale)",
        "Accuracy per version (labelled requests)",
    ]
    assert all("ADVANCE 1%" in s and "FINALIZE 100%" in s for s in svgs)
    assert "v1 (baseline) p99" in html and "v2 (canary)" in html
    assert "no harm &lt;detected&gt;" in html, "text is escaped"


def test_chart_scales_points_into_the_plot_area() -> None:
    svg = line_chart("t", [Line("a", "#000", [(0, 0), (10, 50)])], x_max=10, y_label="%")
    points = re.search(r'points="([^"]+)"', svg).group(1).split()  # type: ignore[union-attr]
    (x0, y0), (x1, y1) = (tuple(map(float, p.split(","))) for p in points)
    assert x0 < x1 and y0 > y1, "time runs right, values run up"
    assert line_chart("e", [Line("a", "#000", [])], x_max=0, y_label="ms", log_y=True)


def test_bucket_and_axis_helpers() -> None:
    assert bucket_seconds(0.5) == 1.0 and bucket_seconds(300) == 5.0
    assert [nice_max(v) for v in (0.3, 3, 24, 99)] == [0.5, 5, 25, 100]
