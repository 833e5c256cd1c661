"""The demo: a real rollout of a new scikit-learn model version, decided by the evaluator.

It starts the local broker (unless told where Kafka is), creates the topics, trains the iris
models, starts the router, one worker per version and the evaluator as separate processes,
drives a keyed load with delayed labels, starts the rollout with an explicit plan through
``canary rollout start --plan``, and watches until the evaluator has finalized or rolled it
back (a shadow comparison runs for a set time). The ``preflight`` scenario first records live
traffic, then pre-flights a bad candidate (stopped before any user sees it) and the good one
on that traffic, and starts the rollout of the good one, watched through its live 1% step.
Every process it started is stopped at the end, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_canary.agents.audit import audit
from model_canary.agents.broker import LocalBroker
from model_canary.agents.demo.events import acted, weight_steps
from model_canary.agents.demo.live import LineView, RichView, Status
from model_canary.agents.demo.load import LoadGenerator, LoadOptions
from model_canary.agents.demo.models import write_models
from model_canary.agents.demo.observe import Observer
from model_canary.agents.demo.plan import (
    RECORD_S,
    SHADOW_S,
    Scenario,
    aa_plan,
    demo_plan,
    write_plan,
)
from model_canary.agents.demo.processes import ProcessGroup
from model_canary.agents.demo.report import ReportData, render_report
from model_canary.agents.demo.summary import (
    account,
    requests_per_arm,
    shadow_comparison,
    version_views,
)
from model_canary.agents.extras import require
from model_canary.agents.kafka.admin import Admin
from model_canary.agents.preflight.run import PreflightOptions, run_preflight
from model_canary.streams.messages import epoch_ms, from_epoch_ms, utc_now
from model_canary.streams.plan import parse_plan
from model_canary.streams.settings import Settings
from model_canary.streams.topics import TopicCatalogue

ENDED = ("Succeeded", "RolledBack")
#: Where a rollout waits for an operator (an A/A run ends there: it will not move by itself).
HOLDING = "Holding"
MODEL = "iris"
#: The pre-flight scenario's bad candidate (the label-bug model) and how many replayed
#: requests each pre-flight needs for a verdict.
BAD_CANDIDATE = "v3"
PREFLIGHT_MIN_REQUESTS = 300


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """``speed`` divides the plan's durations and the label delay; ``rate`` is requests/s."""

    scenario: Scenario
    speed: float = 1.0
    rate: float = 50.0
    keys: int = 10_000
    key_skew: float = 0.0
    label_delay: float = 2.0
    timeout: float = 600.0
    report: Path = Path("canary-demo-report.html")
    live: bool = False
    keep_broker: bool = False


def run_demo(settings: Settings, options: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the summary printed as the last JSON line."""
    require("sklearn", "canary demo")  # before anything starts
    broker = LocalBroker(settings)
    started_broker = False
    work = Path(tempfile.mkdtemp(prefix="canary-demo-"))
    group = ProcessGroup(settings, work / "logs", cwd=work)
    group.interrupts.install()
    try:
        if settings.uses_local_broker and broker.pid() is None:
            _progress(options, f"starting a local Kafka broker on {broker.bootstrap} ...")
            started_broker = True  # before start(): a Ctrl-C during it stops it too
            broker.start()
        return _Demo(settings, options, group, work).run()
    finally:
        group.interrupts.ignore()
        group.stop()
        if started_broker and not options.keep_broker:
            broker.stop()
        group.interrupts.restore()


def _progress(_options: DemoOptions, text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Demo:
    def __init__(
        self, settings: Settings, options: DemoOptions, group: ProcessGroup, work: Path
    ) -> None:
        self.settings = settings
        self.options = options
        self.group = group
        self.work = work
        scenario = options.scenario
        self.plan = (
            aa_plan(speed=options.speed)
            if scenario.name == "aa"
            else demo_plan(shadow=scenario.name == "shadow", speed=options.speed, rate=options.rate)
        )
        self.load = LoadGenerator(
            settings,
            LoadOptions(
                model=MODEL,
                rate=options.rate,
                label_delay=options.label_delay / options.speed,
                keys=options.keys,
                key_skew=options.key_skew,
                id_prefix=f"demo-{scenario.name}",
            ),
        )
        self.t0_ms = epoch_ms(utc_now())
        self.observer = Observer(settings, MODEL, t0_ms=self.t0_ms, labels=self.load.sent)
        self.roles = {"v1": "baseline", "v2": "canary"}
        if scenario.name == "preflight":
            self.roles[BAD_CANDIDATE] = "bad candidate"
        self.preflights: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        o, scenario = self.options, self.options.scenario
        Admin(self.settings).ensure_topics(
            TopicCatalogue(self.settings.topic_prefix, self.settings.partitions).core_specs()
        )
        _progress(o, "training the iris models v1 (baseline) and v2 (candidate) ...")
        broken = scenario.regression == "accuracy" or scenario.name == "preflight"
        paths = write_models(self.work / "models", broken=broken)
        plan_file = write_plan(self.plan, self.work / "plan.json")
        self.group.start("router", "router", "--instance", "demo-router")
        self._worker("v1", paths["v1"])
        self._worker("v2", paths[scenario.canary_model()], *scenario.canary_faults())
        if scenario.name == "preflight":
            self._worker(BAD_CANDIDATE, paths["broken"])  # judged, never served
        self.group.start("evaluator", "evaluator", "--interval", "0.5")
        self.observer.start()
        # Registered before the first request: the router dead-letters requests to a model
        # it does not know.
        self.group.run("register", "model", "register", MODEL, "--version", "v1")
        stop_load = threading.Event()
        sender = threading.Thread(target=self.load.run, args=(stop_load,), daemon=True)
        sender.start()
        view = RichView() if o.live else LineView()
        try:
            if scenario.name == "preflight" and not self._preflights(view):
                _progress(o, "the candidate did not pass its pre-flight: no rollout")
                return self._finish()
            _progress(o, f"starting the rollout with {plan_file} ...")
            self.group.run("rollout-start", "rollout", "start", "--plan", str(plan_file))
            self._watch(view, time.monotonic())
            stop_load.set()
            sender.join(30)
            self._drain()
            view.update(self._status())
        finally:  # also on Ctrl-C: no draining then, just stop
            stop_load.set()
            sender.join(30)
            view.close()
            self.observer.stop()
        return self._finish()

    def _worker(self, version: str, path: Path, *faults: str) -> None:
        self.group.start(
            f"worker-{version}",
            "worker",
            "--model",
            MODEL,
            "--version",
            version,
            "--adapter",
            f"sklearn:{path}",
            "--instance",
            f"demo-{version}",
            *faults,
        )

    def _watch(self, view: RichView | LineView, started: float) -> None:
        shadow_s = SHADOW_S / self.options.speed
        name = self.options.scenario.name
        while time.monotonic() - started < self.options.timeout:
            self.group.check()
            view.update(self._status())
            if self.observer.phase in ENDED:
                return
            if name == "aa" and self.observer.phase == HOLDING:
                return  # a step ran past its maximum: the run's outcome is known
            if name == "shadow" and time.monotonic() - started > shadow_s:
                return
            if name == "preflight" and any(d.outcome == "ADVANCE" for d in self.observer.decisions):
                return  # the candidate passed its live 1% step
            time.sleep(1.0)

    def _preflights(self, view: RichView | LineView) -> bool:
        """Record live traffic for a while, then pre-flight the bad candidate and the good
        one against it while live traffic goes on; True when the good one passed."""
        o = self.options
        record_s = RECORD_S / o.speed
        _progress(o, f"recording {record_s:g}s of live traffic (every request served by v1) ...")
        until = time.monotonic() + record_s
        while time.monotonic() < until:
            self.group.check()
            view.update(self._status())
            time.sleep(1.0)
        since = from_epoch_ms(self.t0_ms)
        passed = False
        for candidate in (BAD_CANDIDATE, "v2"):
            plan = parse_plan({**self.plan, "canary": candidate})
            report = o.report.resolve().with_suffix(f".preflight-{candidate}.html")
            outcome = run_preflight(
                self.settings,
                PreflightOptions(
                    model=MODEL,
                    candidate=candidate,
                    baseline="v1",
                    since=since,
                    rate=4 * o.rate,
                    min_requests=PREFLIGHT_MIN_REQUESTS,
                    plan=plan,
                    report=report,
                ),
                progress=lambda line: _progress(o, line),
            )
            r = outcome.record
            _progress(o, f"pre-flight of {candidate}: {r.status.value.upper()}: {r.reason}")
            self.preflights.append(
                {
                    "candidate": candidate,
                    "status": r.status.value,
                    "reason": r.reason,
                    "answered": r.answered,
                    "labelled": r.labelled,
                    "agreement": None if r.agreement is None else round(r.agreement, 4),
                    "report": str(report),
                }
            )
            passed = r.passed and candidate == "v2"
        return passed

    def _drain(self, quiet_s: float = 60.0) -> None:
        """Wait until every request sent has a served answer, or nothing new came for a while."""
        last, seen = time.monotonic(), -1
        while time.monotonic() - last < quiet_s:
            served = self.observer.served
            if account(list(self.load.sent), served).lost == 0:
                return
            if len(self.observer.samples) != seen:
                seen, last = len(self.observer.samples), time.monotonic()
            time.sleep(0.5)

    def _elapsed(self) -> float:
        return (epoch_ms(utc_now()) - self.t0_ms) / 1000

    def _status(self) -> Status:
        obs = self.observer
        steps = tuple(float(w) for w in self.plan["steps"])
        reached = [i for i, w in enumerate(steps) if obs.weight_percent >= w]
        done = len(steps) if obs.phase == "Succeeded" else (max(reached) if reached else 0)
        decisions = list(obs.decisions)
        latest = decisions[-1] if decisions else None
        holds = [d for d in decisions if d.outcome == "HOLD"]
        return Status(
            scenario=self.options.scenario.name,
            elapsed_s=self._elapsed(),
            phase=obs.phase,
            weight_percent=obs.weight_percent,
            steps=steps,
            steps_done=done,
            sent=len(self.load.sent),
            versions=version_views(list(obs.samples)),
            roles=self.roles,
            decisions=acted(decisions),
            waiting=holds[-1].reason if holds and holds[-1] is latest else "",
            evidence=latest.evidence if latest else (),
        )

    def _finish(self) -> dict[str, Any]:
        o, obs = self.options, self.observer
        samples = list(obs.samples)
        tally = account(list(self.load.sent), obs.served)
        decisions = acted(obs.decisions)
        end_s = self._elapsed()
        summary: dict[str, Any] = {
            "scenario": o.scenario.name,
            "regression": o.scenario.regression,
            "final_phase": obs.phase,
            "expected_phase": o.scenario.expected_phase,
            "decisions": [d.to_json() for d in decisions],
            "requests_per_arm": requests_per_arm(samples),
            "requests": tally.sent,
            "answered": tally.answered,
            "lost": tally.lost,
            "duplicates": tally.duplicates,
            "duration_s": round(end_s, 1),
            # The same accounting from the topics themselves (read_committed), as `canary audit`.
            "audit": _audit(self.settings),
        }
        if o.scenario.name == "preflight":
            summary["preflights"] = self.preflights
        if o.scenario.name == "shadow":
            cmp = shadow_comparison(samples)
            summary["shadow"] = {
                "pairs": cmp.pairs,
                "agreement": None if cmp.agreement is None else round(cmp.agreement, 4),
                "latency_diff_p50_ms": _round(cmp.latency_diff_p50_ms),
                "latency_diff_mean_ms": _round(cmp.latency_diff_mean_ms),
            }
        report = o.report.resolve()
        summary["report"] = str(report)
        summary["logs"] = str(self.group.log_dir)
        data = ReportData(
            summary=summary,
            samples=samples,
            weight=weight_steps(obs.changes),
            decisions=decisions,
            roles=self.roles,
            end_s=end_s,
            plan=self.plan,
        )
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_report(data), encoding="utf-8")
        return summary


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _audit(settings: Settings) -> dict[str, Any]:
    report = audit(settings, timeout=10.0).to_dict(max_ids=5)
    keys = ("requests", "served_results", "shadow_results", "dead_letters", "lost", "duplicated")
    return {k: report[k] for k in (*keys, "orphans", "ok")}
