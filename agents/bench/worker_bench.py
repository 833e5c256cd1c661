"""``canary bench worker``: a worker with the ``noop:`` adapter against the passthrough.

Requests carrying the router's headers are produced straight to model ``bench`` version
``v1``'s topic. The worker publishes a result per request and, per transaction, the served
evidence of what it answered; the passthrough copies each request to one topic. Each drains the
same requests alone (see :mod:`~model_canary.agents.bench.measure`); then every output is read
``read_committed`` to check each request got exactly one result (and one copy) and that the
evidence counts every request exactly once.

>>> # figures, text = run_worker_bench(Settings.from_env(), WorkerBenchOptions(requests=3000))
>>> # figures["worker_msgs_per_s"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.load import produce_routed
from model_canary.agents.bench.measure import (
    Drain,
    check_delivery,
    drain_rounds,
    key_text,
    read_ids,
    request_id_header,
)
from model_canary.agents.bench.probe import OffsetProbe
from model_canary.agents.bench.report import fmt, median, table
from model_canary.agents.bench.session import BenchSession, Progress, require_at_least_one
from model_canary.streams.errors import DecodeError
from model_canary.streams.evidence.wire import decode_evidence
from model_canary.streams.settings import Settings

MODEL, VERSION = "bench", "v1"


@dataclass(frozen=True, slots=True)
class WorkerBenchOptions:
    requests: int = 50_000
    rounds: int = 1
    max_batch: int = 64
    keep_topics: bool = False
    timeout: float = 600.0

    def __post_init__(self) -> None:
        require_at_least_one(self, "requests", "rounds", "max_batch")


def run_worker_bench(
    settings: Settings, options: WorkerBenchOptions, progress: Progress = lambda _m: None
) -> tuple[dict[str, object], str]:
    """Run the benchmark; returns the figures (the JSON line's content) and a table."""
    o = options
    with BenchSession(
        settings, "worker-bench", keep_topics=o.keep_topics, progress=progress
    ) as session:
        cat = session.catalogue
        prefix = session.settings.topic_prefix
        topic = cat.version_requests(MODEL, VERSION)
        copies = (session.spec("passthrough-a"),)
        progress(f"topics under {prefix}.*: creating")
        session.create_topics([*cat.version_specs(MODEL, VERSION), *copies])
        worker = session.agent(
            "worker",
            f"{prefix}.worker.{MODEL}.{VERSION}",
            [topic],
            [cat.results, cat.evidence, cat.dead_letters],
            "worker",
            "--model",
            MODEL,
            "--version",
            VERSION,
            "--adapter",
            "noop:",
            "--instance",
            "bench",
            "--max-batch",
            str(o.max_batch),
        )
        passthrough = session.passthrough(topic, [c.name for c in copies])
        probe = OffsetProbe(session.settings)
        sent: list[str] = []

        def produce(r: int) -> None:
            progress(f"round {r + 1}/{o.rounds}: producing {o.requests:,} requests to {topic}")
            before = probe.end_total([topic])
            sent.extend(
                produce_routed(
                    session.settings, topic, MODEL, VERSION, o.requests, id_prefix=f"t{r}-"
                )
            )
            written = probe.end_total([topic]) - before
            if written != o.requests:
                raise BenchError(f"{written} of {o.requests} requests were written")

        try:
            drains = drain_rounds(
                probe,
                [passthrough, worker],
                o.rounds,
                produce,
                progress=progress,
                timeout=o.timeout,
            )
            worker.child.stop()
            progress("checking every request was answered exactly once")
            s = session.settings
            results = check_delivery(s, [cat.results], sent, key_text)
            evidenced = _evidenced(s, cat.evidence)
            copied = [check_delivery(s, [c.name], sent, request_id_header) for c in copies]
        finally:
            probe.close()

    w_rate = median([d.msgs_per_s for d in drains["worker"]])
    p_rate = median([d.msgs_per_s for d in drains["passthrough"]])
    last = drains["worker"][-1]
    w_cpu, p_cpu = (_cpu_us_per_msg(drains[name]) for name in ("worker", "passthrough"))
    figures: dict[str, object] = {
        "worker_msgs_per_s": w_rate,
        "passthrough_msgs_per_s": p_rate,
        "ratio": w_rate / p_rate if p_rate else float("nan"),
        "worker_rss_mb": worker.child.peak_mb(),
        "worker_cpu_us_per_msg": w_cpu,
        "passthrough_cpu_us_per_msg": p_cpu,
        "cpu_ratio": w_cpu / p_cpu if w_cpu and p_cpu else None,
        "requests": o.requests,
        "lost": results.lost,
        "duplicated": results.duplicated,
        "evidence_requests": evidenced,
        "evidence_exact": evidenced == len(set(sent)),
        "rounds": o.rounds,
        "worker_max_batch": o.max_batch,
        "worker_rss_start_mb": last.rss_start_mb,
        "worker_rss_end_mb": last.rss_end_mb,
        "passthrough_rss_mb": passthrough.child.peak_mb(),
        "passthrough_lost": sum(c.lost for c in copied),
        "passthrough_duplicated": sum(c.duplicated for c in copied),
    }
    return figures, _table(drains, figures)


def _cpu_us_per_msg(drains: Sequence[Drain]) -> float | None:
    """The median over rounds of a contender's CPU microseconds per message drained (None:
    its CPU time could not be read)."""
    known = [cpu for d in drains if (cpu := d.cpu_us_per_msg) is not None]
    return round(median(known), 2) if known else None


def _evidenced(settings: Settings, topic: str) -> int:
    """Requests the served evidence on ``topic`` counts (read_committed, to its end)."""
    total = 0

    def requests(msg: Message) -> str | None:
        nonlocal total
        try:
            records, _set = decode_evidence(msg.value() or b"")
        except DecodeError:
            return None
        total += sum(ev.requests for ev in records if ev.kind == "served")
        return None

    read_ids(settings, [topic], requests)
    return total


def _table(drains: dict[str, list[Drain]], f: dict[str, object]) -> str:
    def col(name: str, attr: str, digits: int) -> str:
        return fmt(median([float(getattr(d, attr)) for d in drains[name]]), digits)

    def num(key: str, digits: int = 1) -> str:
        v = f[key]
        return fmt(float(v), digits) if isinstance(v, int | float) else "-"

    rows: Sequence[Sequence[str]] = [
        (
            "drain msgs/s (median)",
            col("worker", "msgs_per_s", 0),
            col("passthrough", "msgs_per_s", 0),
            num("ratio", 3),
        ),
        (
            "CPU us/msg (median)",
            num("worker_cpu_us_per_msg"),
            num("passthrough_cpu_us_per_msg"),
            num("cpu_ratio", 2),
        ),
        (
            "drain seconds (median)",
            col("worker", "seconds", 2),
            col("passthrough", "seconds", 2),
            "",
        ),
        (
            "RSS MB start/end/peak",
            "/".join(num(k) for k in ("worker_rss_start_mb", "worker_rss_end_mb", "worker_rss_mb")),
            num("passthrough_rss_mb") + " peak",
            "",
        ),
        (
            "lost / duplicated",
            f"{f['lost']} / {f['duplicated']}",
            f"{f['passthrough_lost']} / {f['passthrough_duplicated']}",
            "",
        ),
    ]
    return table(rows, ("", "worker", "passthrough", "ratio"))
