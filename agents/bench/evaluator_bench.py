"""``canary bench evaluator``: the evaluator (``canary evaluator``, a process of its own) fed
the evidence one model's router and workers would write at ``rate`` requests/s, simulated
by :class:`~model_canary.agents.bench.evidence_load.SimulatedServing` in this process.

1. Under a fresh prefix: topics, and a rollout of model ``bench`` (v1 -> v2 at 50%) applied
   by a controller run here.
2. Throughput: ``backlog_seconds`` of traffic at ``rate`` is written before the evaluator
   starts; it then drains it. ``evaluator_requests_per_s`` = requests those records stand for
   / (time its ``canary_evidence_records_total`` reached them - time it counted the first).
3. With ``labels``: the evaluator is stopped, ``label_backlog`` predictions (in the workers'
   transactions) and their labels are written, and the evaluator's label joiner drains them:
   ``labels_per_s`` from its ``canary_labels_joined_total``. With ``joiners`` N > 1 (the
   session's partitions then a multiple of N), the joiner is stopped, as many predictions and
   labels again are written, and N joiners (one group) drain them together:
   ``labels_per_s_N_joiners`` and ``joiners_speedup`` (over the one joiner's rate).
4. Decision delay: traffic at ``rate`` for ``seconds`` (with labels 2 s after each answer
   when ``labels``); for each worker transaction, the time from its commit to the first
   evaluation counting it (``canary_decided_requests``, scraped every 50 ms).
5. RSS of the evaluator process when it counted its first record and at the end (with
   labels, of the joiner at every million labelled requests).
   With ``rss_labelled`` N: after the paced phase, N more labelled requests served as fast
   as this process writes them (each labelled at once); the RSS of the evaluator and of
   each joiner at the start and whenever the joiners have joined another million
   (``rss_by_labelled_mb``, and the growth from the first million to the last).
6. Restart: the evaluator is killed (SIGKILL) and started again; ``restart_s`` is the time
   from the new process's start to its first evaluation counting everything the killed one
   had counted (``restart_counts_equal``: exactly that).

>>> # figures, text = run_evaluator_bench(Settings.from_env(), EvaluatorBenchOptions())
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.evidence_load import SimulatedServing
from model_canary.agents.bench.report import fmt, percentile, table
from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.bench.session import BenchSession, Contender, Progress, bench_metrics
from model_canary.agents.client.control import ControlClient
from model_canary.streams.errors import ConfigError
from model_canary.streams.settings import Settings

MODEL = "bench"
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EvaluatorBenchOptions:
    rate: float = 10_000.0
    seconds: float = 30.0
    backlog_seconds: float = 300.0
    labels: bool = False
    label_backlog: int = 300_000
    #: With labels: also drain a second backlog with this many joiners at once.
    joiners: int = 1
    #: With labels: labelled requests to serve after the paced phase, the RSS of the
    #: evaluator and the joiner(s) taken at every million.
    rss_labelled: int = 0
    interval: float = 1.0
    keep_topics: bool = False
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0 or self.backlog_seconds <= 0:
            raise ConfigError("--rate, --seconds and --backlog-seconds must be positive")
        if self.interval <= 0:
            raise ConfigError("--interval must be positive")
        if self.joiners < 1 or self.rss_labelled < 0:
            raise ConfigError("--joiners must be at least 1 and --rss-labelled at least 0")
        if (self.joiners > 1 or self.rss_labelled) and not self.labels:
            raise ConfigError("--joiners and --rss-labelled need --labels")


class _Watch(threading.Thread):
    """Scrapes the metrics of a process (or the sum over several) every ``every`` seconds:
    (time, metrics) samples."""

    def __init__(self, ports: int | Sequence[int], every: float = 0.05) -> None:
        super().__init__(name="bench-scrape", daemon=True)
        self.ports = [ports] if isinstance(ports, int) else list(ports)
        self.every = every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            got = _scrape_sum(self.ports)
            if got is not None:
                self.samples.append((time.monotonic(), got))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def _scrape_sum(ports: Sequence[int]) -> dict[str, float] | None:
    """The metrics of every port, summed series by series (None unless all answer)."""
    out: dict[str, float] = {}
    for port in ports:
        got = scrape(port)
        if got is None:
            return None
        for name, value in got.items():
            out[name] = out.get(name, 0.0) + value
    return out


def _wait_for_sum(
    ports: Sequence[int],
    name: str,
    target: float,
    children: Sequence[Contender],
    timeout: float,
    base: float,
) -> tuple[float, float]:
    """(time the sum of the metric over ``ports`` first rose above ``base``, time it reached
    ``target``)."""
    first = None
    deadline = time.monotonic() + timeout
    while True:
        for c in children:
            c.child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{name} did not reach {target:g} within {timeout:g}s")
        got = _scrape_sum(ports)
        now = time.monotonic()
        value = total(got, name) if got else 0.0
        if value > base and first is None:
            first = now
        if value >= target:
            return first or now, now
        time.sleep(0.02)


def _wait_for(
    port: int, name: str, target: float, child: Contender, timeout: float, having: str = ""
) -> tuple[float, float]:
    """(time the metric first rose above 0, time it reached ``target``)."""
    first = None
    deadline = time.monotonic() + timeout
    while True:
        child.child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{name} did not reach {target:g} within {timeout:g}s")
        got = scrape(port)
        now = time.monotonic()
        value = total(got, name, having=having) if got else 0.0
        if value > 0 and first is None:
            first = now
        if value >= target:
            return first or now, now
        time.sleep(0.02)


def run_evaluator_bench(
    settings: Settings, options: EvaluatorBenchOptions, progress: Progress = lambda _m: None
) -> tuple[dict[str, object], str]:
    """Run the benchmark; returns the figures (the JSON line's content) and a table."""
    o = options
    if o.joiners > 1:
        # Every joiner owns as many partitions as the others (two joiners on two partitions
        # each, rather than 2 and 1): the partitions, a multiple of the joiners.
        per = -(-settings.partitions // o.joiners)
        settings = settings.with_overrides(partitions=per * o.joiners)
    with BenchSession(
        settings, "evaluator-bench", keep_topics=o.keep_topics, progress=progress
    ) as session:
        cat = session.catalogue
        prefix = session.settings.topic_prefix
        # No command may interrupt the measurement (no controller applies one here); the
        # backlog re-uses a few simulated transactions many times, so chance differences
        # between the arms add up: the plan rolls back only past an 11-fold harm.
        session.start_rollout(MODEL, 50, bench_metrics(labels=o.labels, latency=False))
        state = ControlClient(session.settings).state(MODEL)
        assert state is not None
        port, jport = free_port(), free_port()
        # The joiner as a contender of its own (what 'canary evaluator' starts as its child),
        # so its memory and work are measured apart from the evaluator's.
        evaluator = session.agent(
            "evaluator",
            f"{prefix}-evaluator",
            [cat.evidence],
            [],
            "evaluator",
            "--metrics-port",
            str(port),
            "--interval",
            str(o.interval),
            "--no-joiner",
        )
        joiner = session.agent(
            "joiner",
            f"{prefix}.joiner",
            [cat.predictions, cat.feedback],
            [cat.evidence],
            "joiner",
            "--metrics-port",
            str(jport),
            "--instance",
            "bench",
        )
        serving = SimulatedServing(session.settings, state, predictions=o.labels)
        joiners, jports = [joiner], [jport]

        # 1. Throughput: drain a backlog.
        progress(f"writing {o.backlog_seconds:g} s of evidence at {o.rate:,.0f} requests/s")
        backlog = serving.backlog(o.rate, o.backlog_seconds)
        progress(f"  {backlog.records:,} records for {backlog.requests:,} requests; draining")
        evaluator.child.start()
        first, last = _wait_for(
            port,
            "canary_evidence_records_total",
            backlog.records,
            evaluator,
            o.timeout,
            having='outcome="applied"',
        )
        drain_s = last - first
        rss = evaluator.child.rss
        assert rss is not None
        rss_start = rss.at_mb(first)
        figures: dict[str, object] = {
            "evaluator_requests_per_s": backlog.requests / drain_s if drain_s > 0 else None,
            "evaluator_records_per_s": backlog.records / drain_s if drain_s > 0 else None,
            "backlog_requests": backlog.requests,
            "backlog_records": backlog.records,
            "drain_s": drain_s,
        }
        progress(f"  {fmt(figures['evaluator_requests_per_s'], 0)} requests/s")  # type: ignore[arg-type]

        answered = float(backlog.requests)  # every answer written so far

        # 2. Labels: the joiner drains a backlog of predictions and their labels.
        joined0 = 0.0
        if o.labels:
            progress(f"writing {o.label_backlog:,} predictions and their labels")
            ticks = max(1, o.label_backlog // 1000)
            started = time.time()
            for i in range(ticks):
                serving.tick(1000, started + i * 0.1)
            answered += ticks * 1000
            serving.labels_due(float("inf"))
            serving.flush()
            joiner.child.start()
            first_l, last_l = _wait_for(
                jport, "canary_labels_joined_total", ticks * 1000, joiner, o.timeout
            )
            joined0 = ticks * 1000
            figures["labels_per_s"] = (
                ticks * 1000 / (last_l - first_l) if last_l > first_l else None
            )
            jrss = joiner.child.rss
            assert jrss is not None
            figures["joiner_rss_start_mb"] = jrss.at_mb(first_l)
            progress(f"  {fmt(figures['labels_per_s'], 0)} labels/s")  # type: ignore[arg-type]
            if o.joiners > 1:
                # The same again, drained by several joiners at once (one group).
                joiner.child.stop()
                progress(
                    f"writing {ticks * 1000:,} more; {o.joiners} joiners on "
                    f"{session.settings.partitions} partitions"
                )
                started = time.time()
                for i in range(ticks):
                    serving.tick(1000, started + i * 0.1)
                answered += ticks * 1000
                serving.labels_due(float("inf"))
                serving.flush()
                for i in range(1, o.joiners):
                    jports.append(free_port())
                    joiners.append(
                        session.agent(
                            f"joiner-{i + 1}",
                            f"{prefix}.joiner",
                            [cat.predictions, cat.feedback],
                            [cat.evidence],
                            "joiner",
                            "--metrics-port",
                            str(jports[-1]),
                            "--instance",
                            f"bench-{i + 1}",
                        )
                    )
                for j in joiners:
                    j.child.start()
                # (The first joiner's counter starts again at 0: it was restarted.)
                first_n, last_n = _wait_for_sum(
                    jports, "canary_labels_joined_total", joined0, joiners, o.timeout, 0.0
                )
                per_s = ticks * 1000 / (last_n - first_n) if last_n > first_n else None
                figures[f"labels_per_s_{o.joiners}_joiners"] = per_s
                one = figures["labels_per_s"]
                figures["joiners_speedup"] = (
                    per_s / one if per_s is not None and isinstance(one, float) else None
                )
                figures["joiner_partitions"] = session.settings.partitions
                progress(f"  {fmt(per_s, 0)} labels/s with {o.joiners} joiners")

        # 3. Decision delay at a steady rate, once everything before is decided.
        _wait_for(port, "canary_decided_requests", answered, evaluator, o.timeout)
        progress(f"paced: {o.rate:,.0f} requests/s for {o.seconds:g} s")
        decided0 = answered
        watch = _Watch(port)
        watch.start()
        commits: list[tuple[float, float]] = []  # (commit time, cumulative answered)
        per_tick = max(1, int(o.rate / 10))
        began = time.monotonic()
        labelled_rss: dict[str, float | None] = {}
        next_million = 1_000_000
        jwatch = _Watch(jports, every=0.5) if o.labels else None
        if jwatch is not None:
            jwatch.start()
        measured = int(o.seconds * 10)
        # Two more seconds of traffic after the measured ones: in steady serving a second is
        # closed by the router moving on, not by the clock after traffic stops.
        for i in range(measured + 20):
            wait = began + i * 0.1 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            serving.tick(per_tick, time.time())
            answered += per_tick
            if i < measured:
                commits.append((time.monotonic(), answered))
            if jwatch is not None:
                serving.labels_due(time.time())
                joined = (
                    total(jwatch.samples[-1][1], "canary_labels_joined_total")
                    if jwatch.samples
                    else 0
                )
                if joined >= next_million:
                    jrss = joiner.child.rss
                    labelled_rss[str(next_million)] = _mb(jrss.sample_now() if jrss else None)
                    next_million += 1_000_000
                for j in joiners:
                    j.child.check_alive()
            evaluator.child.check_alive()
        progress("waiting for the last evaluation")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if watch.samples and total(watch.samples[-1][1], "canary_decided_requests") >= answered:
                break
            time.sleep(0.1)
        watch.stop()
        if jwatch is not None:
            jwatch.stop()
            joined = (
                total(jwatch.samples[-1][1], "canary_labels_joined_total") if jwatch.samples else 0
            )
            figures["paced_labels_joined"] = joined - joined0
        achieved = (commits[-1][1] - decided0) / (commits[-1][0] - began) if commits else 0.0
        delays = _delays(commits, watch.samples)
        figures.update(
            {
                "decision_delay_p50_ms": percentile(delays, 50),
                "decision_delay_p99_ms": percentile(delays, 99),
                "decision_delay_max_ms": max(delays) if delays else None,
                "delay_samples": len(delays),
                "paced_rate": achieved,
                "interval_s": o.interval,
                "evaluator_rss_start_mb": rss_start,
                "evaluator_rss_end_mb": _mb(rss.sample_now()),
            }
        )
        if o.labels:
            jrss = joiner.child.rss
            figures["joiner_rss_end_mb"] = _mb(jrss.sample_now() if jrss else None)
            figures["joiner_rss_by_labelled_mb"] = labelled_rss
        serving.flush()
        if o.rss_labelled:
            figures.update(_rss_run(o, serving, evaluator, joiners, jports, progress))
            answered += o.rss_labelled
            # The restart below compares counts: everything served is counted first.
            _wait_for(port, "canary_decided_requests", answered, evaluator, o.timeout)

        # 4. Restart: SIGKILL, start again; until its first evaluation counts everything.
        progress("restart: SIGKILL, then until the first evaluation with every count")
        decided_before = total(scrape(port) or {}, "canary_decided_requests")
        evaluator.child.kill()
        began = time.monotonic()
        evaluator.child.start()
        _wait_for(port, "canary_decided_requests", decided_before, evaluator, o.timeout)
        figures["restart_s"] = time.monotonic() - began
        figures["restart_counts_equal"] = (
            total(scrape(port) or {}, "canary_decided_requests") == decided_before
        )
    return figures, _table(figures)


def _rss_run(
    o: EvaluatorBenchOptions,
    serving: SimulatedServing,
    evaluator: Contender,
    joiners: Sequence[Contender],
    jports: Sequence[int],
    progress: Progress,
) -> dict[str, object]:
    """``o.rss_labelled`` more labelled requests, served (10,000 per tick) as fast as this
    process writes them, each labelled right away; the RSS of the evaluator and of each
    joiner when the joiners have joined each further million (and at the start)."""
    name = "canary_labels_joined_total"
    base = total(_scrape_sum(jports) or {}, name)
    progress(f"labelled: {o.rss_labelled:,} requests, RSS at every million joined")

    def sample() -> dict[str, object]:
        ev = evaluator.child.rss
        return {
            "evaluator": _mb(ev.sample_now() if ev else None),
            "joiners": [_mb(j.child.rss.sample_now() if j.child.rss else None) for j in joiners],
        }

    by_labelled: dict[str, dict[str, object]] = {"0": sample()}
    mark = 1_000_000
    sent = 0
    chunk = 10_000
    deadline = time.monotonic() + max(o.timeout, o.rss_labelled / 1000)
    while True:
        for c in (evaluator, *joiners):
            c.child.check_alive()
        if sent < o.rss_labelled:
            n = min(chunk, o.rss_labelled - sent)
            serving.tick(n, time.time())
            serving.labels_due(float("inf"))
            sent += n
        else:
            time.sleep(0.2)
        joined = total(_scrape_sum(jports) or {}, name) - base
        while mark <= o.rss_labelled and joined >= mark:
            by_labelled[str(mark)] = sample()
            progress(f"  {mark:,} joined: {by_labelled[str(mark)]}")
            mark += 1_000_000
        if joined >= o.rss_labelled:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{joined:,.0f} of {o.rss_labelled:,} labels joined in time")
    serving.flush()
    out: dict[str, object] = {"rss_by_labelled_mb": by_labelled}
    first, last = by_labelled.get("1000000"), by_labelled[max(by_labelled, key=int)]
    if first is not None and first is not last:
        e0, e1 = first["evaluator"], last["evaluator"]
        if isinstance(e0, float) and isinstance(e1, float):
            out["evaluator_rss_growth_from_1m"] = e1 / e0
        j0, j1 = first["joiners"], last["joiners"]
        if isinstance(j0, list) and isinstance(j1, list) and all(j0) and all(j1):
            out["joiner_rss_growth_from_1m"] = max(b / a for a, b in zip(j0, j1, strict=True))
    return out


def _mb(value: int | None) -> float | None:
    return value / MB if value is not None else None


def _delays(
    commits: list[tuple[float, float]], samples: list[tuple[float, dict[str, float]]]
) -> list[float]:
    """Per commit, ms until the first scraped evaluation counting it."""
    series = [(t, total(m, "canary_decided_requests")) for t, m in samples]
    out: list[float] = []
    j = 0
    # Commits and samples are in time order and both counts only grow: one pass.
    for at, needed in commits:
        while j < len(series) and (series[j][0] < at or series[j][1] < needed):
            j += 1
        if j == len(series):
            break
        out.append((series[j][0] - at) * 1000)
    return out


def _table(f: dict[str, object]) -> str:
    def num(key: str, digits: int = 0) -> str:
        v = f.get(key)
        return fmt(float(v), digits) if isinstance(v, int | float) else "-"

    rows = [
        ("requests/s (drain, request-equivalent)", num("evaluator_requests_per_s")),
        ("evidence records/s (drain)", num("evaluator_records_per_s")),
        (
            "decision delay p50 / p99 ms",
            f"{num('decision_delay_p50_ms')} / {num('decision_delay_p99_ms')}",
        ),
        (
            "RSS MB start / end",
            f"{num('evaluator_rss_start_mb', 1)} / {num('evaluator_rss_end_mb', 1)}",
        ),
    ]
    if "labels_per_s" in f:
        rows.append(("labels/s (drain)", num("labels_per_s")))
    return table(rows, ("", "evaluator"))
