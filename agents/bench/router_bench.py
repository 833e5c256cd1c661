"""``canary bench router``: the router against the passthrough, on the same broker and the
same requests.

1. Under a fresh prefix: create the topics, register model ``bench`` (baseline ``v1``) and
   start a rollout to ``v2`` at ``weight_pct`` through a controller run in a thread here.
2. Produce ``requests`` Avro requests before either consumer starts.
3. Each contender (``canary router --no-controller`` and the passthrough, each a process of
   its own) drains them alone; see :mod:`model_canary.agents.bench.measure` for what is timed.
4. Latency, each round: with only the router running, requests at ``latency_rate``/s for
   ``latency_seconds`` s; then the same through the passthrough (the order alternates between
   rounds). Each figure is the median of the rounds' (``..._rounds``: every round's value, the
   spread a regression must stand out of).
5. Check every request was routed exactly once (``read_committed``), delete the topics.

With ``shaped_reference``, a third contender drains in every round: the passthrough writing
what the router writes (each request once, split over two topics at the rollout's weight, with
the router's five added headers: arm, version, rollout id, weight, routed-at), so
``shaped_vs_passthrough`` is what the router's output costs without any routing, and
``shaped_ratio`` (router / shaped) what the routing itself costs.

With ``split_reference``, another contender drains in every round: the passthrough splitting
each request over two topics at the rollout's weight with the request's own headers only. A
router must write each request to its version's topic, so whatever the split costs, every
router pays: ``split_vs_passthrough`` (each round's ratio, and a 95% interval over the rounds)
bounds the router's ratio, and ``ratio_target_vs_split`` says where the 0.9x target lies
against that interval ("above" when even the bare split cannot reach it).

>>> # figures, text = run_router_bench(Settings.from_env(), RouterBenchOptions(requests=3000))
>>> # figures["ratio"]
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from model_canary.agents.bench import BenchError
from model_canary.agents.bench.load import produce_paced, produce_requests
from model_canary.agents.bench.measure import (
    Drain,
    LatencyTail,
    check_delivery,
    drain_rounds,
    read_ids,
    request_id_header,
    wait_caught_up,
)
from model_canary.agents.bench.probe import OffsetProbe
from model_canary.agents.bench.report import fmt, median, percentile, table
from model_canary.agents.bench.session import (
    BenchSession,
    Contender,
    Progress,
    require_at_least_one,
)
from model_canary.streams import headers as h
from model_canary.streams.enums import Arm
from model_canary.streams.errors import ConfigError
from model_canary.streams.percentiles import mean_interval, target_vs_interval
from model_canary.streams.route_header import RouteHeader, encode_parts
from model_canary.streams.settings import Settings

MODEL = "bench"
BASELINE, CANARY = "v1", "v2"


@dataclass(frozen=True, slots=True)
class RouterBenchOptions:
    requests: int = 200_000
    latency_rate: float = 1000.0
    latency_seconds: float = 10.0
    rounds: int = 1
    weight_pct: float = 20.0
    max_batch: int = 1000
    keep_topics: bool = False
    timeout: float = 600.0
    #: Also drain through the passthrough shaped like the router's output (see the module).
    shaped_reference: bool = False
    #: Also drain through the passthrough that only splits over two topics (see the module).
    split_reference: bool = False

    def __post_init__(self) -> None:
        require_at_least_one(self, "requests", "rounds", "max_batch")
        if self.latency_rate <= 0 or self.latency_seconds <= 0:
            raise ConfigError("--latency-rate and --latency-seconds must be positive")
        if not 0 <= self.weight_pct <= 100:
            raise ConfigError("--weight-pct must be within 0..100")


def run_router_bench(
    settings: Settings, options: RouterBenchOptions, progress: Progress = lambda _m: None
) -> tuple[dict[str, object], str]:
    """Run the benchmark; returns the figures (the JSON line's content) and a table."""
    o = options
    with BenchSession(
        settings, "router-bench", keep_topics=o.keep_topics, progress=progress
    ) as session:
        cat = session.catalogue
        prefix = session.settings.topic_prefix
        copy = session.spec("passthrough-out")
        progress(f"topics under {prefix}.*: creating, starting a rollout at {o.weight_pct:g}%")
        session.create_topics([copy])
        session.apply_commands(
            [
                (MODEL, "register", {"baseline_version": BASELINE}),
                (MODEL, "start", {"canary_version": CANARY}),
                (MODEL, "set_weight", {"weight_bp": round(o.weight_pct * 100)}),
            ]
        )
        versions = (cat.version_requests(MODEL, BASELINE), cat.version_requests(MODEL, CANARY))
        router = session.agent(
            "router",
            f"{prefix}.router",
            [cat.requests],
            [*versions, cat.dead_letters],
            "router",
            "--instance",
            "bench",
            "--no-controller",
            "--max-batch",
            str(o.max_batch),
        )
        passthrough = session.passthrough(cat.requests, [copy.name])
        contenders = [passthrough]
        weight_bp = round(o.weight_pct * 100)
        references: dict[str, Contender] = {}
        for name, wanted, extra in (
            ("shaped", o.shaped_reference, _shape_args(weight_bp)),
            ("split", o.split_reference, ["--split-bp", str(weight_bp)]),
        ):
            if wanted:
                specs = [session.spec(f"{name}-v1"), session.spec(f"{name}-v2")]
                session.create_topics(specs)
                references[name] = session.passthrough(
                    cat.requests,
                    [t.name for t in specs],
                    name=f"passthrough-{name}",
                    extra=extra,
                )
        contenders += references.values()
        probe = OffsetProbe(session.settings)
        sent: list[str] = []

        def produce(r: int) -> None:
            progress(f"round {r + 1}/{o.rounds}: producing {o.requests:,} requests")
            before = probe.end_total([cat.requests])
            sent.extend(produce_requests(session.settings, MODEL, o.requests, id_prefix=f"t{r}-"))
            written = probe.end_total([cat.requests]) - before
            if written != o.requests:
                raise BenchError(f"{written} of {o.requests} requests were written")

        try:
            drains = drain_rounds(
                probe,
                [*contenders, router],
                o.rounds,
                produce,
                progress=progress,
                timeout=o.timeout,
            )
            # The router is still running from its last drain: it goes first in round 1.
            router_lats: list[list[float]] = []
            pt_lats: list[list[float]] = []
            router_lat_ids: list[str] = []
            pt_lat_ids: list[str] = []
            for r in range(o.rounds):
                pairs = [(router, "lr", router_lats, router_lat_ids)]
                pairs.append((passthrough, "lp", pt_lats, pt_lat_ids))
                for contender, tag, lats, ids in pairs if r % 2 == 0 else pairs[::-1]:
                    lat, sent_ids = _latency(
                        session, probe, contender, f"{tag}{r}-", o, progress, f"round {r + 1}: "
                    )
                    contender.child.stop()
                    lats.append(lat)
                    ids.extend(sent_ids)
            # The copy check expects the router's latency requests too: when the router went
            # last, the passthrough copies its last round's now.
            wait_caught_up(probe, passthrough.child, passthrough.group, (cat.requests,), o.timeout)
            passthrough.child.stop()
            progress("checking every request was routed exactly once")
            routed = check_delivery(
                session.settings, versions, [*sent, *router_lat_ids], request_id_header
            )
            dead = len(read_ids(session.settings, [cat.dead_letters], request_id_header))
            copied = check_delivery(
                session.settings,
                [copy.name],
                [*sent, *router_lat_ids, *pt_lat_ids],
                request_id_header,
            )
            # The references drain only (no latency phase): every drained request.
            copies = {
                name: check_delivery(session.settings, c.outputs, sent, request_id_header)
                for name, c in references.items()
            }
        finally:
            probe.close()

    last = drains["router"][-1]
    r_rate = median([d.msgs_per_s for d in drains["router"]])
    p_rate = median([d.msgs_per_s for d in drains["passthrough"]])
    r_cpu = _median_of([d.cpu_us_per_msg for d in drains["router"]])
    p_cpu = _median_of([d.cpu_us_per_msg for d in drains["passthrough"]])
    rounds = _latency_rounds(router_lats, pt_lats)
    r50, r99 = median(rounds["router_p50"]), median(rounds["router_p99"])
    p50, p99 = median(rounds["passthrough_p50"]), median(rounds["passthrough_p99"])
    rss_end = router.child.runs[-1].last_mb() if router.child.runs else None
    figures: dict[str, object] = {
        "router_msgs_per_s": r_rate,
        "passthrough_msgs_per_s": p_rate,
        "ratio": r_rate / p_rate if p_rate else float("nan"),
        "ratio_rounds": _ratios(drains["router"], drains["passthrough"]),
        "router_cpu_us_per_msg": r_cpu,
        "passthrough_cpu_us_per_msg": p_cpu,
        "cpu_ratio": p_cpu / r_cpu if p_cpu and r_cpu else None,
        "router_thread_cpu_us_per_msg": _threads_median(drains["router"]),
        "passthrough_thread_cpu_us_per_msg": _threads_median(drains["passthrough"]),
        "router_added_latency_p50_ms": median(rounds["added_p50"]),
        "router_added_latency_p99_ms": median(rounds["added_p99"]),
        "router_rss_mb": router.child.peak_mb(),
        "router_rss_start_mb": last.rss_start_mb,
        "router_rss_end_mb": rss_end,
        "requests": o.requests,
        "lost": routed.lost,
        "duplicated": routed.duplicated,
        "rounds": o.rounds,
        "router_latency_p50_ms": r50,
        "router_latency_p99_ms": r99,
        "passthrough_latency_p50_ms": p50,
        "passthrough_latency_p99_ms": p99,
        "latency_samples": sum(len(lat) for lat in router_lats),
        "router_latency_p50_ms_rounds": rounds["router_p50"],
        "router_latency_p99_ms_rounds": rounds["router_p99"],
        "passthrough_latency_p50_ms_rounds": rounds["passthrough_p50"],
        "passthrough_latency_p99_ms_rounds": rounds["passthrough_p99"],
        "router_added_latency_p99_ms_rounds": rounds["added_p99"],
        "passthrough_rss_mb": passthrough.child.peak_mb(),
        "dead_letters": dead,
        "passthrough_lost": copied.lost,
        "passthrough_duplicated": copied.duplicated,
    }
    intervals: dict[str, tuple[float, float]] = {}
    for name, ref in references.items():
        ref_drains = drains[ref.child.name]
        s_rate = median([d.msgs_per_s for d in ref_drains])
        s_cpu = _median_of([d.cpu_us_per_msg for d in ref_drains])
        vs_rounds = _ratios(ref_drains, drains["passthrough"])
        intervals[name] = mean_interval(vs_rounds)
        figures |= {
            f"{name}_msgs_per_s": s_rate,
            f"{name}_ratio": r_rate / s_rate if s_rate else float("nan"),
            f"{name}_vs_passthrough": s_rate / p_rate if p_rate else float("nan"),
            f"{name}_vs_passthrough_rounds": vs_rounds,
            f"{name}_vs_passthrough_ci95": list(intervals[name]),
            f"{name}_ratio_rounds": _ratios(drains["router"], ref_drains),
            f"{name}_cpu_us_per_msg": s_cpu,
            f"{name}_cpu_ratio": s_cpu / r_cpu if s_cpu and r_cpu else None,
            f"{name}_thread_cpu_us_per_msg": _threads_median(ref_drains),
            f"{name}_lost": copies[name].lost,
            f"{name}_duplicated": copies[name].duplicated,
        }
    if "split" in references:
        figures["ratio_target_vs_split"] = target_vs_interval(RATIO_TARGET, intervals["split"])
    return figures, _table(drains, figures)


#: The issue's target for the router's drain rate against the passthrough's.
RATIO_TARGET = 0.9


def _ratios(tops: list[Drain], bottoms: list[Drain]) -> list[float]:
    """Each round's drain-rate ratio (the rounds alternate, so each pair shares the machine's
    state of that round)."""
    return [
        t.msgs_per_s / b.msgs_per_s if b.msgs_per_s else float("nan")
        for t, b in zip(tops, bottoms, strict=True)
    ]


def _shape_args(weight_bp: int) -> list[str]:
    """The passthrough's arguments that make it write what the router writes at
    ``weight_bp``: the router's added header (``canary-route``, stamped per batch, its value
    of the same size) and the split.

    >>> args = _shape_args(2000)
    >>> args[:3], args[3].startswith("1;baseline;v1;2000;{ms};;"), args[-2:]
    (['--stamp-header', 'canary-route', '--stamp-format'], True, ['--split-bp', '2000'])
    """
    route = RouteHeader(Arm.BASELINE, BASELINE, weight_bp, None, uuid.uuid4().hex)
    head, rest = encode_parts(route)
    stamp_format = (head + b"{ms}" + rest).decode()
    return ["--stamp-header", h.ROUTE, "--stamp-format", stamp_format, "--split-bp", str(weight_bp)]


def _median_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if known else None


def _threads_median(drains: list[Drain]) -> dict[str, float]:
    """CPU microseconds per message of each thread name, the median over rounds (a name
    absent from a round counts 0 there)."""
    each = [d.thread_cpu_us_per_msg for d in drains]
    names = sorted({name for threads in each for name in threads})
    return {name: round(median([t.get(name, 0.0) for t in each]), 3) for name in names}


def _latency_rounds(
    router_lats: list[list[float]], pt_lats: list[list[float]]
) -> dict[str, list[float]]:
    """Per round: each contender's p50 and p99, and the router's minus the passthrough's
    (paired within the round, so the machine's drift between rounds cancels)."""
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "router_p50",
            "router_p99",
            "passthrough_p50",
            "passthrough_p99",
            "added_p50",
            "added_p99",
        )
    }
    for router, passthrough in zip(router_lats, pt_lats, strict=True):
        for pct in (50, 99):
            r, p = percentile(router, pct), percentile(passthrough, pct)
            out[f"router_p{pct}"].append(r)
            out[f"passthrough_p{pct}"].append(p)
            out[f"added_p{pct}"].append(r - p)
    return out


def _latency(
    session: BenchSession,
    probe: OffsetProbe,
    contender: Contender,
    id_prefix: str,
    o: RouterBenchOptions,
    progress: Progress,
    label: str = "",
) -> tuple[list[float], list[str]]:
    """Latencies of paced requests through ``contender`` (started, caught up, and through
    with the warm-up requests before timing begins)."""
    c = contender
    wait_caught_up(probe, c.child, c.group, c.inputs, o.timeout)
    progress(
        f"{label}latency through {c.child.name}: {o.latency_rate:g}/s for {o.latency_seconds:g} s"
    )
    tail = LatencyTail(session.settings, c.outputs)
    all_ids, ids = produce_paced(
        session.settings,
        MODEL,
        o.latency_rate,
        o.latency_seconds,
        id_prefix=id_prefix,
        ready=lambda: wait_caught_up(probe, c.child, c.group, c.inputs, o.timeout),
    )
    latencies = tail.wait_for(ids, timeout=60)
    wait_caught_up(probe, c.child, c.group, c.inputs, o.timeout)
    if len(latencies) < len(ids):
        progress(f"  {len(ids) - len(latencies)} of {len(ids)} latency requests never arrived")
    return latencies, all_ids


def _table(drains: dict[str, list[Drain]], f: dict[str, object]) -> str:
    def rate(name: str) -> str:
        return fmt(median([d.msgs_per_s for d in drains[name]]), 0)

    def secs(name: str) -> str:
        return fmt(median([d.seconds for d in drains[name]]), 2)

    def num(key: str) -> float | None:
        v = f[key]
        return float(v) if isinstance(v, int | float) else None

    def threads(name: str) -> dict[str, float]:
        v = f[f"{name}_thread_cpu_us_per_msg"]
        return v if isinstance(v, dict) else {}

    def spread(key: str) -> str:
        v = f[key]
        if not isinstance(v, list) or len(v) < 2:
            return ""
        return f" ({fmt(min(v))}..{fmt(max(v))})"

    rows = [
        ("drain msgs/s (median)", rate("router"), rate("passthrough"), fmt(num("ratio"), 3)),
        ("drain seconds (median)", secs("router"), secs("passthrough"), ""),
        (
            "CPU us per message (median)",
            fmt(num("router_cpu_us_per_msg")),
            fmt(num("passthrough_cpu_us_per_msg")),
            fmt(num("cpu_ratio"), 3),
        ),
        *(
            (
                f"  {name} thread",
                fmt(threads("router").get(name)),
                fmt(threads("passthrough").get(name)),
                "",
            )
            for name in sorted(set(threads("router")) | set(threads("passthrough")))
        ),
        (
            "latency p50 ms (median)",
            fmt(num("router_latency_p50_ms")) + spread("router_latency_p50_ms_rounds"),
            fmt(num("passthrough_latency_p50_ms")) + spread("passthrough_latency_p50_ms_rounds"),
            fmt(num("router_added_latency_p50_ms")),
        ),
        (
            "latency p99 ms (median)",
            fmt(num("router_latency_p99_ms")) + spread("router_latency_p99_ms_rounds"),
            fmt(num("passthrough_latency_p99_ms")) + spread("passthrough_latency_p99_ms_rounds"),
            fmt(num("router_added_latency_p99_ms")) + spread("router_added_latency_p99_ms_rounds"),
        ),
        (
            "RSS MB start/end/peak",
            "/".join(
                fmt(num(k)) for k in ("router_rss_start_mb", "router_rss_end_mb", "router_rss_mb")
            ),
            fmt(num("passthrough_rss_mb")) + " peak",
            "",
        ),
        (
            "lost / duplicated",
            f"{f['lost']} / {f['duplicated']}",
            f"{f['passthrough_lost']} / {f['passthrough_duplicated']}",
            "",
        ),
    ]
    for name in ("shaped", "split"):
        if f"{name}_msgs_per_s" not in f:
            continue
        ci = f[f"{name}_vs_passthrough_ci95"]
        interval = f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if isinstance(ci, list | tuple) else ""
        rows += [
            (
                f"{name} reference: drain msgs/s",
                fmt(num(f"{name}_msgs_per_s"), 0),
                fmt(num(f"{name}_vs_passthrough"), 3) + interval + " x passthrough",
                fmt(num(f"{name}_ratio"), 3) + f" router/{name}",
            ),
            (
                f"{name} reference: CPU us/message",
                fmt(num(f"{name}_cpu_us_per_msg")),
                "",
                fmt(num(f"{name}_cpu_ratio"), 3),
            ),
            *(
                (f"  {thread} thread", fmt(value), "", "")
                for thread, value in sorted(threads(name).items())
            ),
            (
                f"{name} reference: lost / duplicated",
                f"{f[f'{name}_lost']} / {f[f'{name}_duplicated']}",
                "",
                "",
            ),
        ]
    if "ratio_target_vs_split" in f:
        rows.append(
            (
                f"target {RATIO_TARGET}x vs the split's interval",
                "",
                "",
                str(f["ratio_target_vs_split"]),
            )
        )
    return table(rows, ("", "router", "passthrough", "ratio or difference"))
