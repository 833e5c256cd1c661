"""``canary bench evaluator``: the evaluator (``canary evaluator``, a process of its own) fed
the evidence one model's router and workers would write at ``rate`` requests/s, simulated
by :class:`~model_canary.agents.bench.evidence_load.SimulatedServing` in this process.

1. Under a fresh prefix: topics, and a rollout of model ``bench`` (v1 -> v2 at 50%) applied
   by a controller run here.
2. Throughput: ``backlog_seconds`` of traffic at ``rate`` is written before the evaluator
   starts; it then drains it. ``evaluator_requests_per_s`` = requests those records stand for
   / (time its ``canary_evidence_records_total`` reached them - time it counted the first).
3. With ``labels``, ``joiner_rounds`` rounds: with the joiners stopped, ``label_backlog``
   predictions (in the workers' transactions) and their labels are written and one label
   joiner drains them (``labels_per_s``, the median over the rounds; ``labels_per_s_rounds``
   each round's; ``joiner_cpu_us_per_label``). With ``joiners`` N > 1 (the session's
   partitions then a multiple of N), each round also has N joiners (one group) drain another
   backlog as large (``labels_per_s_N_joiners``, ``joiners_speedup``: median over median),
   and the reference, the bare exactly-once pass-through loop, drain a topic of ten records
   per label on as many partitions, one instance then N (``reference_speedup``); the order
   alternates between rounds. ``speedup_vs_reference`` = ``joiners_speedup`` /
   ``reference_speedup``: how far the joiners scale of what the machine lets any such loop
   scale. Every drain is timed from the moment its group has settled with its instances
   alone (static members of a stopped instance keep their partitions until their session
   times out; a started one joins through a rebalance) to its end: the joiners' by their
   count of labels joined, the reference's by its committed offsets; what was done before
   is left out. ``load_avg_1m_start``/``_end`` say how busy the machine was.
4. Decision delay: traffic at ``rate`` for ``seconds`` (with labels 2 s after each answer
   when ``labels``); for each worker transaction, the time from its commit to the first
   evaluation counting it (``canary_decided_requests``, scraped every 50 ms).
5. RSS of the evaluator process when it counted its first record and at the end (with
   labels, of the joiner at every million labelled requests).
   With ``rss_labelled`` N: after the paced phase (its labels still due sent and joined
   first), N more labelled requests served as fast as this process writes them (each
   labelled at once); the RSS of the evaluator and of each joiner at the start and
   whenever the joiners have joined another ``rss_every`` (a million by default):
   ``rss_by_labelled_mb`` (each mark also with every process's lowest and highest RSS over
   the last ``rss_window_s``, 30 s), the growth from the first mark to the last of the single
   readings (``evaluator_rss_growth_from_1m``, ``joiner_rss_growth_from_1m``: the joiner that
   grew most) and of the lowest and highest (``evaluator_rss_low_growth_from_1m``, ...
   ``joiner_rss_high_growth_from_1m``), each process's MB per million labelled requests
   fitted through the marks (``rss_mb_per_million_labelled``) and ``rss_flat_met``: every
   growth of the lowest and the highest within ``rss_flat_target`` (10%;
   :mod:`~model_canary.agents.bench.rss_marks` says why not the single readings).
6. Restart: the evaluator is killed (SIGKILL) and started again; ``restart_s`` is the time
   from the new process's start to its first evaluation counting everything the killed one
   had counted (``restart_counts_equal``: exactly that).

>>> # figures, text = run_evaluator_bench(Settings.from_env(), EvaluatorBenchOptions())
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.evidence_load import SimulatedServing
from model_canary.agents.bench.probe import OffsetProbe
from model_canary.agents.bench.procs import RssSampler, read_cpu_s
from model_canary.agents.bench.report import fmt, percentile, table
from model_canary.agents.bench.rss_marks import RSS_EVERY, RSS_WINDOW_S, rss_summary
from model_canary.agents.bench.scrape import free_port, scrape, total
from model_canary.agents.bench.session import BenchSession, Contender, Progress, bench_metrics
from model_canary.agents.client.control import ControlClient
from model_canary.agents.kafka.clients import LazyProducer, produce
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
    #: With labels: rounds of label drains (one joiner, then N; alternating), medians.
    joiner_rounds: int = 1
    #: With labels: labelled requests to serve after the paced phase, the RSS of the
    #: evaluator and the joiner(s) taken at every ``rss_every`` joined.
    rss_labelled: int = 0
    rss_every: int = RSS_EVERY
    interval: float = 1.0
    keep_topics: bool = False
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0 or self.backlog_seconds <= 0:
            raise ConfigError("--rate, --seconds and --backlog-seconds must be positive")
        if self.interval <= 0:
            raise ConfigError("--interval must be positive")
        if self.joiners < 1 or self.rss_labelled < 0 or self.joiner_rounds < 1:
            raise ConfigError(
                "--joiners and --joiner-rounds must be at least 1, --rss-labelled at least 0"
            )
        if self.rss_every < 1:
            raise ConfigError("--rss-every must be at least 1")
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


#: Between two scrapes of a figure the benchmark waits for.
POLL_S = 0.1


def _wait_for(
    port: int,
    name: str,
    target: float,
    child: Contender,
    timeout: float,
    having: str = "",
    marks: dict[str, float | None] | None = None,
) -> tuple[float, float]:
    """(time the metric first rose above 0, time it reached ``target``); ``marks`` gets the
    metric's value and the child's CPU seconds at both times (``value_first``, ``cpu_first``,
    ``value_last``, ``cpu_last``)."""
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
            if marks is not None:
                marks.update(value_first=value, cpu_first=_cpu(child))
        if value >= target:
            if marks is not None:
                marks.update(value_last=value, cpu_last=_cpu(child))
            return first or now, now
        # Every 100 ms: answering a scrape costs the evaluator CPU (every 20 ms it was ~0.15 ms
        # per evidence record of the drain, ~20%), while the drain's ends move by < 0.3%.
        time.sleep(POLL_S)


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
        marks: dict[str, float | None] = {}
        first, last = _wait_for(
            port,
            "canary_evidence_records_total",
            backlog.records,
            evaluator,
            o.timeout,
            having='outcome="applied"',
            marks=marks,
        )
        drain_s = last - first
        if drain_s <= 0:
            raise BenchError(
                f"the evaluator drained the {backlog.records:,}-record backlog between two "
                f"progress checks ({POLL_S * 1000:g} ms apart), so its rate cannot be measured: "
                "give a larger --backlog-seconds or --rate"
            )
        rss = evaluator.child.rss
        assert rss is not None
        rss_start = rss.at_mb(first)
        figures: dict[str, object] = {
            "evaluator_requests_per_s": backlog.requests / drain_s,
            "evaluator_records_per_s": backlog.records / drain_s,
            "backlog_requests": backlog.requests,
            "backlog_records": backlog.records,
            "drain_s": drain_s,
            "evaluator_cpu_ms_per_record": _cpu_ms_per_record(marks),
        }
        progress(f"  {fmt(figures['evaluator_requests_per_s'], 0)} requests/s")  # type: ignore[arg-type]

        answered = float(backlog.requests)  # every answer written so far

        # 2. Labels: joiners drain backlogs of predictions and their labels.
        if o.labels:
            labels, joiners, jports = _label_rounds(o, session, serving, joiner, jport, progress)
            figures.update(labels)
            answered += float(labels["labelled_backlogs"])  # type: ignore[arg-type]
        joined0 = total(_scrape_sum(jports) or {}, LABELS_JOINED) if o.labels else 0.0

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


LABELS_JOINED = "canary_labels_joined_total"


def _label_backlog(serving: SimulatedServing, labels: int) -> int:
    """``labels`` predictions (in the workers' transactions) and their labels, written and
    flushed; returns how many (whole thousands, at least one)."""
    ticks = max(1, labels // 1000)
    started = time.time()
    for i in range(ticks):
        serving.tick(1000, started + i * 0.1)
    serving.labels_due(float("inf"))
    serving.flush()
    return ticks * 1000


def _fill(settings: Settings, topic: str, n: int) -> None:
    """``n`` plain records (keyed as labels are, about a label's size) for the reference."""
    producer = LazyProducer(settings, "canary-bench-reference", **{"linger.ms": 20})
    try:
        for i in range(n):
            produce(producer.producer, topic, b"r" * 80, f"ref-{i}".encode())
            if i % 10_000 == 0:
                producer.producer.poll(0)
        producer.flush(60)
    finally:
        producer.close()


def _settled(session: BenchSession, group: str, members: set[str]) -> bool:
    """Whether ``group`` is stable with exactly ``members`` (static instance ids) owning its
    partitions: an instance stopped a moment ago keeps its partitions until its session
    times out (static membership), and one started joins through a rebalance."""
    described = session.admin.client.describe_consumer_groups([group])[group].result(10)
    owners = {
        m.group_instance_id or m.member_id
        for m in described.members
        if m.assignment.topic_partitions
    }
    return bool(described.state.name == "STABLE" and owners == members)


def _joiner_drain(
    session: BenchSession,
    joiners: Sequence[Contender],
    ports: Sequence[int],
    labels: int,
    timeout: float,
) -> tuple[int, float, float | None, float]:
    """Start the (stopped) ``joiners`` and time them joining ``labels``, from the moment the
    group is settled with them alone (:func:`_settled`) and each has joined a label, to the
    last: ``(labels joined meanwhile, seconds, CPU seconds they used meanwhile (every thread),
    that moment)``. (Their consumer group's committed offsets are no end mark: the last
    transaction's marker stays behind them until the next transaction.)"""
    prefix = session.settings.topic_prefix
    group = f"{prefix}.joiner"
    members = {f"{prefix}.joiner.bench"} | {
        f"{prefix}.joiner.bench-{i + 1}" for i in range(1, len(joiners))
    }
    for c in joiners:
        c.child.start()
    deadline = time.monotonic() + timeout
    first: float | None = None
    settled = False
    base = 0.0
    cpu0: list[float | None] = []
    while True:
        for c in joiners:
            c.child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{LABELS_JOINED} did not reach {labels:,} within {timeout:g}s")
        settled = settled or _settled(session, group, members)
        each = [total(scrape(port) or {}, LABELS_JOINED) for port in ports]
        now, value = time.monotonic(), sum(each)
        if value >= labels and first is None:
            raise BenchError(
                f"{labels:,} labels joined before the joiners' group settled: "
                "give a larger --label-backlog"
            )
        if first is None and settled and all(v > 0 for v in each):
            first, base = now, value
            cpu0 = [_cpu(c) for c in joiners]
        if value >= labels and first is not None:
            cpu1 = [_cpu(c) for c in joiners]
            used = [
                b - a for a, b in zip(cpu0, cpu1, strict=True) if a is not None and b is not None
            ]
            cpu = sum(used) if len(used) == len(joiners) else None
            return int(value - base), now - first, cpu, first
        time.sleep(0.02)


def _cpu_ms_per_record(marks: dict[str, float | None]) -> float | None:
    """The evaluator's CPU milliseconds per evidence record over the drain (from the first
    counted record to the last; its start-up is not counted), or None without readings.

    >>> _cpu_ms_per_record(dict(value_first=10, cpu_first=2.0, value_last=1010, cpu_last=3.5))
    1.5
    """
    v0, c0, v1, c1 = (marks.get(k) for k in ("value_first", "cpu_first", "value_last", "cpu_last"))
    if v0 is None or c0 is None or v1 is None or c1 is None or v1 <= v0:
        return None
    return round(1000 * (c1 - c0) / (v1 - v0), 4)


def _cpu(c: Contender) -> float | None:
    return read_cpu_s(c.child.pid) if c.child.pid is not None else None


#: Records in a reference drain per label in a joiners' drain: the bare pass-through drains
#: many times faster than a joiner, and its rate is read once its group has settled.
REFERENCE_RECORDS = 10


def _reference_drain(
    session: BenchSession,
    probe: OffsetProbe,
    instances: Sequence[Contender],
    topic: str,
    timeout: float,
) -> float:
    """Start the (stopped) pass-through ``instances`` and time them draining ``topic``: records
    per second from the moment their group is settled with them alone (:func:`_settled`) to
    its offsets committed at the end of ``topic`` (records committed before that moment are
    left out)."""
    group = instances[0].group
    members = {f"{group}.{c.child.name.removeprefix('passthrough-')}" for c in instances}
    target = probe.end_total([topic])
    for c in instances:
        c.child.start()
    deadline = time.monotonic() + timeout
    first: float | None = None
    base = 0
    while True:
        for c in instances:
            c.child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the reference did not drain {topic} within {timeout:g}s")
        if first is None and _settled(session, group, members):
            first, base = time.monotonic(), probe.committed_total(group, [topic])
        done = probe.committed_total(group, [topic])
        if done >= target:
            if first is None or done == base:
                raise BenchError("the reference drained before its group settled")
            return (target - base) / (time.monotonic() - first)
        time.sleep(0.01)


def _label_rounds(
    o: EvaluatorBenchOptions,
    session: BenchSession,
    serving: SimulatedServing,
    joiner: Contender,
    jport: int,
    progress: Progress,
) -> tuple[dict[str, object], list[Contender], list[int]]:
    """``o.joiner_rounds`` rounds: one joiner drains a backlog of ``o.label_backlog`` labels
    and, with ``o.joiners`` N > 1, N joiners (one group) drain another as large, the order
    alternating between rounds. With N > 1, each round also drains the reference, the bare
    exactly-once pass-through loop, one instance then N of one group (same alternation), on a
    topic of :data:`REFERENCE_RECORDS` records per label, on as many partitions. Every drain
    is timed from the moment its group has settled with its instances alone (the joiners'
    by their own count, the reference's by its group's committed offsets). Returns the
    figures (medians over the
    rounds, and each round's), every joiner (left running) and their metrics ports."""
    cat = session.catalogue
    prefix = session.settings.topic_prefix
    probe = OffsetProbe(session.settings)
    inputs = [cat.predictions, cat.feedback]
    joiners, jports = [joiner], [jport]
    for i in range(1, o.joiners):
        jports.append(free_port())
        joiners.append(
            session.agent(
                f"joiner-{i + 1}",
                f"{prefix}.joiner",
                inputs,
                [cat.evidence],
                "joiner",
                "--metrics-port",
                str(jports[-1]),
                "--instance",
                f"bench-{i + 1}",
            )
        )
    sets = {1: joiners[:1], o.joiners: joiners}
    refs: dict[int, list[Contender]] = {}
    specs = [session.spec("reference-in"), session.spec("reference-out")]
    ref_in, ref_out = (spec.name for spec in specs)
    if o.joiners > 1:
        session.admin.ensure_topics(specs)
        passthroughs = [
            session.passthrough(ref_in, [ref_out], instance=f"ref-{i + 1}")
            for i in range(o.joiners)
        ]
        refs = {1: passthroughs[:1], o.joiners: passthroughs}
    rates: dict[int, list[float]] = {n: [] for n in sets}
    cpu_us: dict[int, list[float]] = {n: [] for n in sets}
    ref_rates: dict[int, list[float]] = {n: [] for n in refs}
    written = 0
    out: dict[str, object] = {"load_avg_1m_start": os.getloadavg()[0]}
    for r in range(o.joiner_rounds):
        order = sorted(sets) if r % 2 == 0 else sorted(sets, reverse=True)
        for n in order:
            for c in joiners:
                c.child.stop()
            progress(f"round {r + 1}/{o.joiner_rounds}: {o.label_backlog:,} labels, {n} joiner(s)")
            labels = _label_backlog(serving, o.label_backlog)
            written += labels
            joined, seconds, cpu_s, first = _joiner_drain(
                session, sets[n], jports[:n], labels, o.timeout
            )
            rates[n].append(joined / seconds if seconds > 0 else 0.0)
            if cpu_s is not None and joined:
                cpu_us[n].append(cpu_s / joined * 1e6)
            rss = joiner.child.rss
            if n == 1 and "joiner_rss_start_mb" not in out and rss is not None:
                out["joiner_rss_start_mb"] = rss.at_mb(first)
            progress(f"  {rates[n][-1]:,.0f} labels/s")
        for n in order if refs else []:
            for c in refs[o.joiners]:
                c.child.stop()
            _fill(session.settings, ref_in, REFERENCE_RECORDS * labels)
            rate = _reference_drain(session, probe, refs[n], ref_in, o.timeout)
            ref_rates[n].append(rate)
            progress(f"  reference, {n} instance(s): {rate:,.0f} records/s")
    for c in refs.get(o.joiners, []):
        c.child.stop()
    for c in joiners:
        if not c.child.alive:
            c.child.start()
    out["load_avg_1m_end"] = os.getloadavg()[0]
    out["labelled_backlogs"] = written
    out["labels_per_s"] = statistics.median(rates[1])
    out["labels_per_s_rounds"] = rates[1]
    out["joiner_cpu_us_per_label"] = statistics.median(cpu_us[1]) if cpu_us[1] else None
    if o.joiners > 1:
        n = o.joiners
        many = statistics.median(rates[n])
        out[f"labels_per_s_{n}_joiners"] = many
        out[f"labels_per_s_{n}_joiners_rounds"] = rates[n]
        out[f"joiner_cpu_us_per_label_{n}_joiners"] = (
            statistics.median(cpu_us[n]) if cpu_us[n] else None
        )
        out["joiners_speedup"] = many / out["labels_per_s"] if rates[1][0] else None  # type: ignore[operator]
        one_ref, many_ref = statistics.median(ref_rates[1]), statistics.median(ref_rates[n])
        out["reference_msgs_per_s"] = one_ref
        out[f"reference_msgs_per_s_{n}_instances"] = many_ref
        out["reference_rounds"] = {"1": ref_rates[1], str(n): ref_rates[n]}
        out["reference_speedup"] = many_ref / one_ref if one_ref else None
        speedup, ref_speedup = out["joiners_speedup"], out["reference_speedup"]
        out["speedup_vs_reference"] = (
            speedup / ref_speedup
            if isinstance(speedup, float) and isinstance(ref_speedup, float)
            else None
        )
        out["joiner_partitions"] = session.settings.partitions
    return out, joiners, jports


def _rss_run(
    o: EvaluatorBenchOptions,
    serving: SimulatedServing,
    evaluator: Contender,
    joiners: Sequence[Contender],
    jports: Sequence[int],
    progress: Progress,
) -> dict[str, object]:
    """``o.rss_labelled`` more labelled requests, served (10,000 per tick) as fast as the
    joiners keep up (at most :data:`RSS_AHEAD` served and not yet joined: what a joiner
    holds then is its traffic's, not a backlog's), each labelled right away; the RSS of
    the evaluator and of each joiner, and the joiners' pending entries
    (``canary_label_join_pending``), at the start and whenever the joiners have joined a
    further ``o.rss_every``. The paced phase's labels still due are sent first and counted
    before the start, so every mark counts only this phase's labels."""
    name = LABELS_JOINED
    serving.labels_due(float("inf"))
    serving.flush()
    base = _joined_settled(jports, joiners, o.timeout)
    progress(f"labelled: {o.rss_labelled:,} requests, RSS at every {o.rss_every:,} joined")

    since = [time.monotonic()]

    def sample(got: dict[str, float] | None) -> dict[str, object]:
        ev = evaluator.child.rss
        taken: dict[str, object] = {
            "evaluator": _mb(ev.sample_now() if ev else None),
            "joiners": [_mb(j.child.rss.sample_now() if j.child.rss else None) for j in joiners],
            "pending": total(got, LABELS_PENDING) if got is not None else None,
            # The evaluator's lowest and highest RSS (sampled every 100 ms) since the last
            # mark: a transient peak shows in the highest, memory kept in the lowest too.
            "evaluator_low_high": _low_high(ev, since[0]),
        }
        # The same over the last RSS_WINDOW_S at every mark: what the verdict is taken on
        # (a single reading lands anywhere in a cycle of the process's memory; rss_marks).
        window = time.monotonic() - RSS_WINDOW_S
        taken["evaluator_window_low_high"] = _low_high(ev, window)
        taken["joiners_window_low_high"] = [_low_high(j.child.rss, window) for j in joiners]
        since[0] = time.monotonic()
        return taken

    by_labelled: dict[str, dict[str, object]] = {"0": sample(_scrape_sum(jports))}
    mark = o.rss_every
    sent = 0
    joined = 0.0
    chunk = min(10_000, o.rss_every)
    deadline = time.monotonic() + max(o.timeout, o.rss_labelled / 1000)
    while True:
        for c in (evaluator, *joiners):
            c.child.check_alive()
        if sent < o.rss_labelled and sent - joined < RSS_AHEAD:
            n = min(chunk, o.rss_labelled - sent)
            serving.tick(n, time.time())
            serving.labels_due(float("inf"))
            sent += n
        else:
            serving.flush()
            time.sleep(0.05)
        got = _scrape_sum(jports)
        joined = total(got or {}, name) - base
        while mark <= o.rss_labelled and joined >= mark:
            by_labelled[str(mark)] = sample(got)
            progress(f"  {mark:,} joined: {by_labelled[str(mark)]}")
            mark += o.rss_every
        if joined >= o.rss_labelled:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{joined:,.0f} of {o.rss_labelled:,} labels joined in time")
    serving.flush()
    out: dict[str, object] = {"rss_by_labelled_mb": by_labelled, "rss_every": o.rss_every}
    out.update(rss_summary(by_labelled, o.rss_every))
    return out


#: Labelled requests the RSS phase serves ahead of the joiners at most (five ticks).
RSS_AHEAD = 50_000
LABELS_PENDING = "canary_label_join_pending"
#: The joiners' count is taken as settled once it stayed the same this long (s).
SETTLED_S = 3.0


def _joined_settled(jports: Sequence[int], joiners: Sequence[Contender], timeout: float) -> float:
    """The joiners' count of labels joined once it stopped moving for :data:`SETTLED_S`
    (every label sent so far joined)."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while True:
        for c in joiners:
            c.child.check_alive()
        got = _scrape_sum(jports)
        now = time.monotonic()
        value = total(got, LABELS_JOINED) if got is not None else -1.0
        if value != last or got is None:
            last, since = value, now
        elif now - since >= SETTLED_S:
            return value
        if now > deadline:
            raise BenchError(f"the joiners' {LABELS_JOINED} did not settle within {timeout:g}s")
        time.sleep(0.2)


def _low_high(rss: RssSampler | None, since: float) -> list[float] | None:
    """The lowest and highest of ``rss``'s samples taken since ``since`` (MB)."""
    got = [b for t, b in rss.samples if t >= since] if rss is not None else []
    return [min(got) / MB, max(got) / MB] if got else None


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
