"""A pre-flight's self-contained HTML report, like the demo's: the verdict, the evidence per
metric, and both arms' error rate, latency and accuracy over the replay, drawn with the demo's
charts.

>>> from model_canary.streams.messages import EPOCH, Preflight
>>> from model_canary.streams.preflight.judge import Observed, judge, parse_plan
>>> job = Preflight(preflight_id="pf-1", model="iris", baseline_version="v1",
...                 candidate_version="v2", status="passed", window_start=EPOCH,
...                 started_at=EPOCH, updated_at=EPOCH)
>>> seen = Observed.of(candidate=[], baseline=[])
>>> verdict = judge(seen, parse_plan({"model": "iris", "canary": "v2"}), min_requests=0)
>>> html = render(job, verdict, seen)
>>> html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
True
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from html import escape
from pathlib import Path

from model_canary.agents.demo.report import page, table, version_charts
from model_canary.agents.demo.summary import Sample, version_views
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import EPOCH, MetricEvidence, Preflight
from model_canary.streams.outcomes.expr import Condition
from model_canary.streams.outcomes.metrics import condition
from model_canary.streams.plan import outcome_metrics
from model_canary.streams.preflight.judge import Answer, Observed, PreflightVerdict


def samples(seen: Observed) -> list[Sample]:
    """Both arms' answers as the demo's samples, timed from the first answer."""
    answers = [*seen.baseline.values(), *seen.candidate.values()]
    t0 = min((a.at_ms for a in answers), default=0)
    arms = {id(a): "baseline" for a in seen.baseline.values()}
    out = []
    for a in answers:
        label = seen.feedback.get(a.request_id)
        correct = (a.prediction == label.label) if label and label.label and not a.error else None
        out.append(_sample(a, arms.get(id(a), "canary"), (a.at_ms - t0) / 1000, correct))
    return out


def _sample(a: Answer, arm: str, t: float, correct: bool | None) -> Sample:
    return Sample(
        t, a.request_id, a.version, arm, False, a.error, a.latency_ms, a.prediction, correct
    )


def outcome_charts(
    verdict: PreflightVerdict, seen: Observed
) -> list[tuple[str, Callable[[Sample], bool | None]]]:
    """Per outcome metric of the plan: its chart's title, and whether a sample (an arm's
    answer) is bad by the request's recorded feedback (None: the feedback says nothing)."""
    out: list[tuple[str, Callable[[Sample], bool | None]]] = []
    for name, text in outcome_metrics(verdict.plan).items():
        rule = condition(text)

        def bad(s: Sample, rule: Condition = rule) -> bool | None:
            said = seen.feedback.get(s.request_id)
            if said is None or s.error:
                return None
            return rule(replace(said, prediction=s.prediction))

        out.append((f"{name}: share of bad feedback per version (bad when {text})", bad))
    return out


def render(job: Preflight, verdict: PreflightVerdict, seen: Observed) -> str:
    """The whole HTML document."""
    rows = samples(seen)
    end = max((s.t for s in rows), default=1.0)
    roles = {job.baseline_version: "baseline", job.candidate_version: "candidate"}
    views = version_views(rows)
    outcome = [
        ("verdict", verdict.status.value),
        ("reason", verdict.reason),
        ("model", job.model),
        ("candidate", job.candidate_version),
        ("baseline", f"{job.baseline_version} ({job.baseline_mode.value})"),
        (
            "recorded traffic since",
            job.window_start.isoformat() if job.window_start > EPOCH else "offsets",
        ),
        ("sample", f"{job.sample_bp / 100:g}%"),
        ("replayed", job.replayed or len(seen.order)),
        ("answered by both arms", verdict.answered),
        ("with recorded feedback", verdict.labelled),
        ("unanswered", verdict.unanswered),
        (
            "agreement with the baseline",
            "n/a" if verdict.agreement is None else f"{verdict.agreement:.1%}",
        ),
        ("pre-flight id", job.preflight_id),
    ]
    per_version = [
        (
            f"{v} ({roles.get(v, '?')})",
            view.requests,
            view.errors,
            _ms(view.p50_ms),
            _ms(view.p99_ms),
            view.labelled,
            "n/a" if view.accuracy is None else f"{view.accuracy:.1%}",
        )
        for v, view in views.items()
    ]
    title = f"canary preflight: {job.model} {job.candidate_version} against {job.baseline_version}"
    return page(
        title,
        [
            "<h2>Verdict</h2>",
            table(("", ""), outcome),
            "<h2>Evidence per metric (the rollout's statistics)</h2>",
            table(
                (
                    "metric",
                    "baseline n",
                    "baseline bad",
                    "candidate n",
                    "candidate bad",
                    "ratio bounds",
                    "log LR",
                    "threshold",
                    "alarm",
                ),
                [_evidence_row(e) for e in verdict.evidence],
            ),
            "<h2>Per version</h2>",
            table(
                ("version", "answers", "errors", "p50", "p99", "labelled", "accuracy"), per_version
            ),
            "<h2>Over the replay</h2>",
            *version_charts(rows, end, roles, extra=outcome_charts(verdict, seen)),
            "<h2>Plan</h2>",
            f"<pre>{escape(json.dumps(json.loads(verdict.plan.to_json()), indent=2))}</pre>",
        ],
    )


def write_report(path: Path, job: Preflight, verdict: PreflightVerdict, seen: Observed) -> None:
    """Write the report to ``path`` (:class:`ConfigError` if it cannot be written)."""
    try:
        path.write_text(render(job, verdict, seen), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror}") from None


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _evidence_row(e: MetricEvidence) -> tuple[object, ...]:
    lower = "?" if e.lower is None else f"{e.lower:.3g}"
    upper = "inf" if e.upper is None else f"{e.upper:.3g}"
    return (
        e.metric, e.baseline_n, e.baseline_bad, e.canary_n, e.canary_bad,
        f"{lower} .. {upper}", f"{e.statistic:.2f}", f"{e.threshold:.2f}",
        "ALARM" if e.alarmed else "",
    )  # fmt: skip
