"""``canary bench pipeline``: the whole pipeline (``canary router`` with its controller, one
``canary worker --adapter noop:`` per arm, ``canary evaluator`` and, with labels, ``canary
joiner``, each a process of its own) fed requests at steady rates with a rollout in progress.

1. Under a fresh prefix: topics, and a rollout of model ``bench`` (v1 -> v2 at
   ``weight_pct``) whose plan watches errors and latency (and accuracy with labels), long
   steps and a high rollback tolerance, so nothing interrupts the run.
2. For each rate of the ladder (``rate`` / 4, / 2, ``rate``), ``seconds`` of keyed requests
   from this process (with labels, a label for ``label_share`` of them ``label_delay_s``
   later, keyed by request id). Every second: each agent's lag (its inputs' end offsets minus
   its group's committed offsets, read from outside, in seconds of its input rate), the
   requests the evaluator's latest evaluation counted (``canary_decided_requests``) and how old
   that evaluation is.
3. Per rate and agent: the lag at the end and its largest value in the run's second half, CPU
   seconds per 1,000 requests and per second of the run (``/proc/PID/stat``), the evaluator's
   share of the pipeline's CPU and the evidence records it read per second; the decision delay
   (a request's send to the first evaluation counting it, per second of requests); an agent
   *keeps up* when its lag at the end is below ``lag_limit_s``.
4. Idle: once every agent has caught up after the ladder, ``idle_seconds`` with no requests
   and the rollout still in progress (the evaluator decides on the clock): each agent's CPU
   seconds per second. An agent's cost that does not grow with the requests shows here.

>>> # figures, text = run_pipeline_bench(Settings.from_env(), PipelineBenchOptions(rate=2000))
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.load import INPUTS
from model_canary.agents.bench.probe import OffsetProbe
from model_canary.agents.bench.procs import read_cpu_s
from model_canary.agents.bench.report import fmt, percentile, table
from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.bench.session import BenchSession, Contender, Progress, bench_metrics
from model_canary.agents.client.inference import CanaryClient
from model_canary.agents.kafka.clients import LazyProducer
from model_canary.streams.codec.avro import codec_for
from model_canary.streams.errors import ConfigError
from model_canary.streams.messages import Feedback, utc_now
from model_canary.streams.settings import Settings

MODEL = "bench"
LABEL = "a"  # what the noop workers predict with labels on
#: The evaluator's samples the benchmark reads: its scrapes (every half second) ask for these
#: only, so they cost the evaluator, whose CPU share is measured, little more than the
#: Prometheus scrape it would have in production (``scrape``'s ``names``).
EVALUATOR_SAMPLES = (
    "canary_decided_requests",
    "canary_evaluation_timestamp_seconds",
    "canary_evidence_records_total",
    "canary_evidence_messages_total",
)
#: The most lag (records) of an agent taken to have caught up before the idle measurement.
IDLE_LAG = 100


@dataclass(frozen=True, slots=True)
class PipelineBenchOptions:
    rate: float = 5_000.0
    seconds: float = 30.0
    labels: bool = False
    label_delay_s: float = 3.0
    label_share: float = 0.9
    weight_pct: float = 20.0
    lag_limit_s: float = 5.0
    interval: float = 1.0
    #: Seconds without requests after the ladder, each agent's CPU measured (0: none).
    idle_seconds: float = 10.0
    keep_topics: bool = False
    #: Then the top rate again with the baseline's worker replaced by the passthrough.
    reference: bool = False

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0:
            raise ConfigError("--rate and --seconds must be positive")
        if self.idle_seconds < 0:
            raise ConfigError("--idle-seconds must be at least 0")
        if not 0 < self.weight_pct < 100:
            raise ConfigError("--weight-pct must be within 0..100 (exclusive)")


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    return (read_cpu_s(pid) if pid is not None else None) or 0.0


class _Load(threading.Thread):
    """Keyed requests at ``rate`` for ``seconds``; labels ``delay`` later for a share."""

    def __init__(
        self,
        settings: Settings,
        rate: float,
        seconds: float,
        o: PipelineBenchOptions,
        id_prefix: str,
    ) -> None:
        super().__init__(name="bench-load", daemon=True)
        self.settings = settings
        self.rate = rate
        self.seconds = seconds
        self.o = o
        self.id_prefix = id_prefix
        self.sent: list[tuple[float, int]] = []  # (time.monotonic(), cumulative) per 0.1 s
        self.labels = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _run(self) -> None:
        client = CanaryClient(self.settings)
        labels = LazyProducer(self.settings, "canary-bench-labels") if self.o.labels else None
        codec = codec_for(Feedback)
        topic = client.catalogue.feedback
        pending: collections.deque[tuple[float, str]] = collections.deque()
        n = int(self.rate * self.seconds)
        per_tick = self.rate / 10
        began = time.monotonic()
        sent = 0
        try:
            for tick in range(int(self.seconds * 10)):
                wait = began + tick * 0.1 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                upto = min(n, int((tick + 1) * per_tick))
                now = time.monotonic()
                for i in range(sent, upto):
                    rid = f"{self.id_prefix}{i}"
                    client.send(
                        INPUTS, model=MODEL, key=f"user-{i % 50_000}", request_id=rid, flush=False
                    )
                    if labels is not None and (i % 100) < self.o.label_share * 100:
                        pending.append((now + self.o.label_delay_s, rid))
                sent = upto
                client.flush(0)
                self.sent.append((time.monotonic(), sent))
                if labels is not None:
                    while pending and pending[0][0] <= time.monotonic():
                        _due, rid = pending.popleft()
                        label = LABEL if hash(rid) % 10 else "b"
                        fb = Feedback(
                            request_id=rid, model=MODEL, label=label, observed_at=utc_now()
                        )
                        labels.produce(topic, codec.encode(fb), rid.encode())
                        self.labels += 1
            client.flush(60)
        finally:
            client.close()
            if labels is not None:
                labels.close(60)


def run_pipeline_bench(
    settings: Settings, options: PipelineBenchOptions, progress: Progress = lambda _m: None
) -> tuple[dict[str, object], str]:
    """Run the benchmark; returns the figures (the JSON line's content) and a table."""
    o = options
    with BenchSession(
        settings, "pipeline-bench", keep_topics=o.keep_topics, progress=progress
    ) as session:
        cat = session.catalogue
        prefix = session.settings.topic_prefix
        session.start_rollout(
            MODEL,
            o.weight_pct,
            bench_metrics(labels=o.labels, latency=True),
            cat.version_specs(MODEL, "v1", "v2"),
        )
        adapter = f"noop:predict={LABEL}" if o.labels else "noop:"
        ev_port = free_port()
        agents: dict[str, Contender] = {
            "router": session.agent(
                "router",
                f"{prefix}.router",
                [cat.requests],
                [cat.version_requests(MODEL, "v1"), cat.version_requests(MODEL, "v2")],
                "router",
                "--instance",
                "bench",
            ),
            **{
                f"worker-{v}": session.agent(
                    f"worker-{v}",
                    f"{prefix}.worker.{MODEL}.{v}",
                    [cat.version_requests(MODEL, v)],
                    [cat.results, cat.evidence],
                    "worker",
                    "--model",
                    MODEL,
                    "--version",
                    v,
                    "--adapter",
                    adapter,
                    "--instance",
                    f"bench-{v}",
                )
                for v in ("v1", "v2")
            },
            "evaluator": session.agent(
                "evaluator",
                f"{prefix}-evaluator",
                [cat.evidence],
                [],
                "evaluator",
                "--metrics-port",
                str(ev_port),
                "--interval",
                str(o.interval),
                "--no-joiner",
                "--instance",
                "bench",
            ),
        }
        if o.labels:
            agents["joiner"] = session.agent(
                "joiner",
                f"{prefix}.joiner",
                [cat.predictions, cat.feedback],
                [cat.evidence],
                "joiner",
                "--instance",
                "bench",
            )
        for agent in agents.values():
            agent.child.start()
        probe = OffsetProbe(session.settings)
        try:
            _wait_ready(probe, agents, ev_port)
            rates = sorted({o.rate / 4, o.rate / 2, o.rate})
            runs = []
            for i, rate in enumerate(rates):
                progress(f"{rate:,.0f} requests/s for {o.seconds:g} s")
                runs.append(_run_rate(session.settings, probe, agents, ev_port, rate, o, f"r{i}-"))
                progress(
                    "  "
                    + ", ".join(
                        f"{name} lag {fmt(r['lag_end_s'], 1)} s"
                        for name, r in runs[-1]["agents"].items()  # type: ignore[attr-defined]
                    )
                )
            idle = None
            if o.idle_seconds > 0:
                progress(f"idle: {o.idle_seconds:g} s without requests, once every agent caught up")
                idle = _idle_run(probe, agents, o.idle_seconds)
            reference = None
            if o.reference:
                reference = _reference_run(session, probe, agents, ev_port, o, progress)
        finally:
            probe.close()
    kept = [float(r["rate"]) for r in runs if r["all_kept_up"]]  # type: ignore[arg-type]
    top = runs[-1]
    figures: dict[str, object] = {
        "max_rate_all_kept_up": max(kept) if kept else None,
        "rate": top["rate"],
        "achieved_rate": top["achieved_rate"],
        "all_kept_up": top["all_kept_up"],
        "labels": o.labels,
        "lag_end_s": {n: a["lag_end_s"] for n, a in top["agents"].items()},  # type: ignore[attr-defined]
        "cpu_s_per_1000_requests": {
            n: a["cpu_s_per_1000"]
            for n, a in top["agents"].items()  # type: ignore[attr-defined]
        },
        "evaluator_cpu_share": top["evaluator_cpu_share"],
        "evaluator_cpu_s_per_s": top["agents"]["evaluator"]["cpu_s_per_s"],  # type: ignore[index]
        "evaluator_idle_cpu_s_per_s": idle["cpu_s_per_s"]["evaluator"] if idle else None,  # type: ignore[index]
        "evidence_records_per_s": top["evidence_records_per_s"],
        "evidence_messages_per_s": top["evidence_messages_per_s"],
        "decision_delay_p50_ms": top["decision_delay_p50_ms"],
        "decision_delay_p99_ms": top["decision_delay_p99_ms"],
        "evaluation_age_max_s": top["evaluation_age_max_s"],
        "interval_s": o.interval,
        "runs": runs,
        "idle": idle,
    }
    if reference is not None:
        figures["reference"] = reference
    return figures, _table(runs)


def _reference_run(
    session: BenchSession,
    probe: OffsetProbe,
    agents: dict[str, Contender],
    ev_port: int,
    o: PipelineBenchOptions,
    progress: Progress,
) -> dict[str, object]:
    """The top rate again with the baseline's worker stopped and, in its place, the
    passthrough (the least an exactly-once consume-produce loop does) copying the baseline's
    requests to one topic: does even that keep up there, with everything else running? (The
    evaluator then waits for the baseline's answers, so decisions stop counting.)"""
    cat = session.catalogue
    progress(f"reference: {o.rate:,.0f} requests/s, the passthrough in worker-v1's place")
    copy = session.spec("passthrough-v1")
    session.admin.ensure_topics([copy])
    agents["worker-v1"].child.stop()
    swapped = {
        ("passthrough-v1" if n == "worker-v1" else n): a
        for n, a in agents.items()
        if n != "worker-v1"
    }
    swapped["passthrough-v1"] = session.passthrough(cat.version_requests(MODEL, "v1"), [copy.name])
    swapped["passthrough-v1"].child.start()
    time.sleep(10)  # joined its group
    run = _run_rate(
        session.settings, probe, swapped, ev_port, o.rate, o, "ref-", wait_decided=False
    )
    per = run["agents"]
    assert isinstance(per, dict)
    progress("  " + ", ".join(f"{name} lag {fmt(a['lag_end_s'], 1)} s" for name, a in per.items()))
    return {
        "rate": o.rate,
        "lag_end_s": {n: a["lag_end_s"] for n, a in per.items()},
        "cpu_s_per_1000_requests": {n: a["cpu_s_per_1000"] for n, a in per.items()},
        "passthrough_kept_up": per["passthrough-v1"]["kept_up"],
    }


def _idle_run(
    probe: OffsetProbe, agents: dict[str, Contender], seconds: float
) -> dict[str, object]:
    """Each agent's CPU seconds per second over ``seconds`` without requests, once every
    agent has caught up (or after 60 s of waiting for it: ``caught_up`` says which). Caught
    up: a lag of at most :data:`IDLE_LAG` records (a transaction's commit marker takes an
    offset that no committed offset moves past until more input comes)."""
    deadline = time.monotonic() + 60
    caught_up = False
    while time.monotonic() < deadline:
        for a in agents.values():
            a.child.check_alive()
        caught_up = all(
            probe.end_total(a.inputs) - probe.committed_total(a.group, a.inputs) <= IDLE_LAG
            for a in agents.values()
        )
        if caught_up:
            break
        time.sleep(0.5)
    time.sleep(2)  # the last checkpoint and decisions of the traffic
    cpu0 = {n: _cpu_s(a.child.proc.pid if a.child.proc else None) for n, a in agents.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    cpu = {
        n: (_cpu_s(a.child.proc.pid if a.child.proc else None) - cpu0[n]) / elapsed
        for n, a in agents.items()
    }
    return {"seconds": elapsed, "caught_up": caught_up, "cpu_s_per_s": cpu}


def _wait_ready(probe: OffsetProbe, agents: dict[str, Contender], ev_port: int) -> None:
    """Until every agent runs and the evaluator serves its metrics."""
    deadline = time.monotonic() + 120
    while scrape(ev_port, names=EVALUATOR_SAMPLES) is None:
        for a in agents.values():
            a.child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("the evaluator did not start within 120 s")
        time.sleep(0.5)
    time.sleep(10)  # every group joined and restored


def _run_rate(
    settings: Settings,
    probe: OffsetProbe,
    agents: dict[str, Contender],
    ev_port: int,
    rate: float,
    o: PipelineBenchOptions,
    id_prefix: str,
    *,
    wait_decided: bool = True,
) -> dict[str, object]:
    cpu0 = {n: _cpu_s(a.child.proc.pid if a.child.proc else None) for n, a in agents.items()}
    ends0 = {n: probe.end_total(a.inputs) for n, a in agents.items()}
    first = scrape(ev_port, names=EVALUATOR_SAMPLES) or {}
    decided0 = total(first, "canary_decided_requests")
    records0 = total(first, "canary_evidence_records_total")
    messages0 = total(first, "canary_evidence_messages_total")
    load = _Load(settings, rate, o.seconds, o, id_prefix)
    began = time.monotonic()
    load.start()
    lags: dict[str, list[tuple[float, float]]] = {n: [] for n in agents}
    decided: list[tuple[float, float]] = []
    ages: list[float] = []
    while load.is_alive() or time.monotonic() - began < o.seconds:
        time.sleep(0.5)
        now = time.monotonic()
        for name, a in agents.items():
            a.child.check_alive()
            end = probe.end_total(a.inputs)
            lag = max(0, end - probe.committed_total(a.group, a.inputs))
            per_s = (end - ends0[name]) / max(0.1, now - began)
            lags[name].append((now - began, lag / per_s if per_s > 0 else 0.0))
        got = scrape(ev_port, names=EVALUATOR_SAMPLES) or {}
        decided.append((now, total(got, "canary_decided_requests") - decided0))
        at = total(got, "canary_evaluation_timestamp_seconds")
        if at:
            ages.append(max(0.0, time.time() - at))
    if load.error is not None:
        raise BenchError(f"the load failed: {load.error}")
    elapsed = time.monotonic() - began
    requests = load.sent[-1][1] if load.sent else 0
    # Let the last requests through, then the delays of every second of requests.
    deadline = time.monotonic() + (30 if wait_decided else 0)
    while time.monotonic() < deadline and (not decided or decided[-1][1] < requests):
        time.sleep(0.5)
        decided.append(
            (
                time.monotonic(),
                total(scrape(ev_port, names=EVALUATOR_SAMPLES) or {}, "canary_decided_requests")
                - decided0,
            )
        )
    cpu = {
        n: _cpu_s(a.child.proc.pid if a.child.proc else None) - cpu0[n] for n, a in agents.items()
    }
    wall = time.monotonic() - began
    last = scrape(ev_port, names=EVALUATOR_SAMPLES) or {}
    records = total(last, "canary_evidence_records_total") - records0
    messages = total(last, "canary_evidence_messages_total") - messages0
    delays = _delays(load.sent, decided)
    per_agent: dict[str, dict[str, object]] = {}
    for name, series in lags.items():
        second_half = [lag for t, lag in series if t >= elapsed / 2]
        lag_end = series[-1][1] if series else 0.0
        per_agent[name] = {
            "lag_end_s": lag_end,
            "lag_max_second_half_s": max(second_half) if second_half else None,
            "cpu_s_per_1000": cpu[name] / (requests / 1000) if requests else None,
            "cpu_s_per_s": cpu[name] / wall,
            "kept_up": lag_end <= o.lag_limit_s,
        }
    pipeline_cpu = sum(cpu.values())
    return {
        "rate": rate,
        "achieved_rate": requests / min(elapsed, o.seconds) if elapsed else 0.0,
        "requests": requests,
        "labels_sent": load.labels,
        "agents": per_agent,
        "all_kept_up": all(a["kept_up"] for a in per_agent.values()),
        "evaluator_cpu_share": cpu["evaluator"] / pipeline_cpu if pipeline_cpu else None,
        "evidence_records_per_s": records / wall,
        "evidence_messages_per_s": messages / wall,
        "decision_delay_p50_ms": percentile(delays, 50),
        "decision_delay_p99_ms": percentile(delays, 99),
        "evaluation_age_max_s": max(ages) if ages else None,
    }


def _delays(sent: list[tuple[float, int]], decided: list[tuple[float, float]]) -> list[float]:
    """Per second of requests sent, ms until the first scraped evaluation counting them (the
    evaluator's counts are scraped every half second and lag it by as much, at most)."""
    out: list[float] = []
    j = 0
    for at, needed in sent[::10]:
        while j < len(decided) and (decided[j][0] < at or decided[j][1] < needed):
            j += 1
        if j == len(decided):
            break
        out.append((decided[j][0] - at) * 1000)
    return out


def _table(runs: list[dict[str, object]]) -> str:
    rows = []
    for r in runs:
        agents = r["agents"]
        assert isinstance(agents, dict)
        for name, a in agents.items():
            rows.append(
                (
                    f"{fmt(float(r['rate']), 0)}/s  {name}",  # type: ignore[arg-type]
                    fmt(a["lag_end_s"], 2),
                    fmt(a["cpu_s_per_1000"], 3),
                    "yes" if a["kept_up"] else "NO",
                )
            )
    return table(rows, ("rate  agent", "lag s (end)", "CPU s / 1000 req", "kept up"))
