"""``canary bench router | worker``: throughput, latency and memory of an agent against a
minimal confluent-kafka passthrough, on a real cluster.

>>> # canary bench router --requests 200000 --bootstrap kafka:9092
>>> # canary bench worker --requests 50000 --json-only
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from model_canary.agents.bench.report import json_line
from model_canary.agents.bench.rss_marks import RSS_EVERY
from model_canary.agents.cli.common import settings_from_args

_MEASURE = (
    "Both contenders run as processes of their own, one at a time, over their own consumer "
    "group on the same requests, produced before either starts. Throughput is drained "
    "messages / (time of the last transaction commit, seen as the group's committed offsets "
    "reaching the end of the input, - time of the first output, seen as the output topics' "
    "high watermarks moving): start-up and group join are left out. RSS is the process's "
    "VmRSS sampled every 100 ms. Exactly-once is checked by reading every output "
    "read_committed and counting request ids (lost: never written; duplicated: written more "
    "than once). Everything runs under a fresh topic prefix, PREFIX-AGENT-bench-RANDOM "
    "(PREFIX from --topic-prefix, default 'canary'), deleted at the end unless --keep-topics. "
    "The last line printed is JSON."
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "bench",
        help="benchmark an agent: the router or a worker against a bare confluent-kafka "
        "passthrough, the evaluator, the whole pipeline, or the latency of a request through "
        "the router and a worker",
        description="Measure an agent against the least an exactly-once consume-produce loop "
        "can do: a passthrough written directly against confluent-kafka that copies each "
        "message inside transactions committed as the agents' are (the --latency profile's "
        "commit policy, or --commit-interval-ms; python -m "
        "model_canary.agents.bench.passthrough); or the latency a served request pays through "
        "the router and a worker ('canary bench latency'); or the evaluator and the whole "
        "pipeline (see their --help). Prints figures, it asserts nothing.",
    )
    kinds = parser.add_subparsers(dest="bench_kind", required=True, metavar="AGENT")

    router = kinds.add_parser(
        "router",
        parents=[common],
        help="the router (real rollout state, canary at --weight-pct) vs the passthrough",
        description="Register model 'bench' (baseline v1), start a rollout to v2 at "
        "--weight-pct through a controller run in this process, then measure 'canary router "
        "--no-controller' against the passthrough (one output topic). " + _MEASURE + " "
        "Latency: with only that contender running, and once it has handled 10 warm-up "
        "requests (so neither contender's start-up is timed), requests are sent at "
        "--latency-rate per second for --latency-seconds, each stamped with its send time; "
        "latency is the time "
        "from just before produce to receipt by a read_committed consumer of the outputs "
        "(fetch.wait.max.ms=10); each round measures both, in alternating order, and each "
        "figure is the median over rounds (*_rounds: every round's value, the spread a "
        "regression must stand out of). Both pay their transactions' commits, so what the "
        "router adds is router_added_latency_pXX_ms = router pXX - passthrough pXX, paired "
        "within each round (the raw figures are in the JSON too). JSON keys: "
        "router_msgs_per_s, passthrough_msgs_per_s, ratio (router/passthrough; "
        "ratio_rounds: per round), router_cpu_us_per_msg and passthrough_cpu_us_per_msg "
        "(CPU time of the whole process, every thread, over the drain, per message: steadier "
        "than rates on a shared machine; null when the drain counted no 10 ms clock tick), "
        "cpu_ratio (passthrough/router CPU per message), "
        "router_thread_cpu_us_per_msg and passthrough_thread_cpu_us_per_msg (the same per "
        "thread, from /proc/PID/task/*/stat, by thread name from .../comm: main is the "
        "interpreter's main thread, where the loop runs, python any other Python thread, "
        "rdk:main and rdk:broker librdkafka's threads of the consumer and producer), "
        "router_added_latency_p50_ms, router_added_latency_p99_ms, router_rss_mb (peak), "
        "router_rss_start_mb (at its first routed message), router_rss_end_mb (after the "
        "latency phase), requests, lost, duplicated (over every request the router "
        "consumed), and more.",
    )
    router.add_argument(
        "--requests",
        type=int,
        default=200_000,
        metavar="N",
        help="requests drained per round (default 200000)",
    )
    router.add_argument(
        "--latency-rate",
        type=float,
        default=1000.0,
        metavar="PER_S",
        help="requests per second in the latency phase (default 1000)",
    )
    router.add_argument(
        "--latency-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="length of each latency phase (default 10)",
    )
    router.add_argument(
        "--weight-pct",
        type=float,
        default=20.0,
        metavar="PCT",
        help="canary weight of the rollout the router applies (default 20)",
    )
    router.add_argument(
        "--max-batch",
        type=int,
        default=1000,
        help="the router's --max-batch (default 1000, as 'canary router')",
    )
    router.add_argument(
        "--shaped-reference",
        action="store_true",
        help="also drain, each round, through the passthrough writing what the router writes "
        "(the router's added headers, each request once, split over two topics at the weight): "
        "shaped_msgs_per_s, shaped_vs_passthrough (what the router's output costs), "
        "shaped_ratio (router/shaped: what the routing costs), shaped_cpu_us_per_msg, "
        "shaped_thread_cpu_us_per_msg, shaped_lost, shaped_duplicated",
    )
    router.add_argument(
        "--split-reference",
        action="store_true",
        help="also drain, each round, through the passthrough that only splits each request "
        "over two topics at the weight (the request's own headers): every router writes at "
        "least that, so split_vs_passthrough bounds the router's ratio. Adds the split_* "
        "figures of --shaped-reference, both references' *_vs_passthrough_rounds and "
        "*_vs_passthrough_ci95 (a 95%% t interval over the rounds), and ratio_target_vs_split "
        "('above' when the 0.9x target is above even the split's interval)",
    )
    _shared(router, rounds=3)
    router.set_defaults(handler=run_router_bench)

    worker = kinds.add_parser(
        "worker",
        parents=[common],
        help="a worker with the noop: adapter vs the passthrough",
        description="Produce requests, with the headers the router sets, straight to model "
        "'bench' version v1's topic; measure 'canary worker --adapter noop:' (one result per "
        "request, the served evidence per transaction) against the passthrough copying each "
        "request to one topic. " + _MEASURE + " JSON keys: worker_msgs_per_s, "
        "passthrough_msgs_per_s, ratio (worker/passthrough), worker_cpu_us_per_msg and "
        "passthrough_cpu_us_per_msg (CPU time of the whole process from its first output to "
        "its last commit, per message: steadier than rates on a shared machine; null when the "
        "drain counted no 10 ms clock tick), cpu_ratio "
        "(worker/passthrough), worker_rss_mb (peak), requests, lost (requests without a "
        "result), duplicated, evidence_exact (the evidence counts every request once), and "
        "more.",
    )
    worker.add_argument(
        "--requests",
        type=int,
        default=50_000,
        metavar="N",
        help="requests drained per round (default 50000)",
    )
    worker.add_argument(
        "--max-batch",
        type=int,
        default=64,
        help="the worker's --max-batch, also its consume batch (default 64, as 'canary "
        "worker'); the passthrough consumes 1000 at a time",
    )
    _shared(worker, rounds=1)
    worker.set_defaults(handler=run_worker_bench)
    _register_latency(kinds, common)

    evaluator = kinds.add_parser(
        "evaluator",
        parents=[common],
        help="the evaluator fed one model's evidence at --rate requests/s",
        description="Start a rollout of model 'bench' (v1 -> v2 at 50%) and drive 'canary "
        "evaluator' (a process of its own) with the evidence one router and a worker per arm "
        "would write at --rate requests/s (simulated in this process: the product's evidence "
        "builder and transactional producers, transactions every 100 ms). Throughput: the "
        "evaluator drains --backlog-seconds of that evidence written before it starts; "
        "evaluator_requests_per_s = requests the drained records stand for / drain time (from "
        "its first counted record to its last, read from its own /metrics); "
        "evaluator_cpu_ms_per_record = its CPU time over that drain / the records counted. "
        "With --labels, "
        "its label joiner then drains --label-backlog predictions and their labels "
        "(labels_per_s; with --joiners N, N joiners then drain as many more). Decision "
        "delay: --seconds of paced traffic; per worker transaction, "
        "the time from its commit to the first evaluation that counts it "
        "(canary_decided_requests, scraped every 50 ms). RSS: the evaluator's VmRSS when it "
        "counted its first record and at the end (with --labels also the joiner's at each "
        "million labels of the paced phase; with --rss-labelled, the evaluator's and every "
        "joiner's at every --rss-every labelled requests, and whether they stay flat). "
        "JSON keys: evaluator_requests_per_s, decision_delay_p50_ms, decision_delay_p99_ms, "
        "evaluator_rss_start_mb, evaluator_rss_end_mb, labels_per_s (with --labels), and more.",
    )
    evaluator.add_argument(
        "--rate", type=float, default=10_000.0, help="requests/s the evidence stands for (10000)"
    )
    evaluator.add_argument(
        "--seconds", type=float, default=30.0, help="length of the paced phase (default 30)"
    )
    evaluator.add_argument(
        "--backlog-seconds",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds of traffic in the throughput backlog (default 300)",
    )
    evaluator.add_argument(
        "--labels",
        action="store_true",
        help="also predictions and their labels 2 s later (the label joiner)",
    )
    evaluator.add_argument(
        "--label-backlog",
        type=int,
        default=300_000,
        metavar="N",
        help="labelled predictions in the joiner's backlog (default 300000)",
    )
    evaluator.add_argument(
        "--joiners",
        type=int,
        default=1,
        metavar="N",
        help="with --labels: then drain a second backlog as large with N joiners at once "
        "(on a multiple of N partitions; labels_per_s_N_joiners, joiners_speedup)",
    )
    evaluator.add_argument(
        "--joiner-rounds",
        type=int,
        default=1,
        metavar="R",
        help="with --labels: R rounds of label drains, one joiner then N (alternating order; "
        "with N > 1 also the bare pass-through reference, 1 then N instances): medians "
        "(labels_per_s, labels_per_s_N_joiners, reference_speedup, speedup_vs_reference) "
        "and each round's figures (default 1)",
    )
    evaluator.add_argument(
        "--rss-labelled",
        type=int,
        default=0,
        metavar="N",
        help="with --labels: after the paced phase, N more labelled requests as fast as the "
        "joiners keep up; the RSS of the evaluator and joiners at every --rss-every joined, "
        "with their lowest and highest over the 30 s before (rss_by_labelled_mb; "
        "evaluator_rss_growth_from_1m, joiner_rss_growth_from_1m and their _low_ and _high_ "
        "variants from the first mark to the last, rss_mb_per_million_labelled, rss_flat_met: "
        "the lowest and the highest each within 10%%)",
    )
    evaluator.add_argument(
        "--rss-every",
        type=int,
        default=RSS_EVERY,
        metavar="N",
        help="with --rss-labelled: labelled requests joined between two RSS marks "
        f"(default {RSS_EVERY})",
    )
    evaluator.add_argument(
        "--interval", type=float, default=1.0, help="the evaluator's --interval (default 1)"
    )
    evaluator.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="give up a phase after S s"
    )
    evaluator.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark's topics and groups"
    )
    evaluator.add_argument(
        "--json-only", action="store_true", help="print only the JSON line (no progress, no table)"
    )
    evaluator.set_defaults(handler=run_evaluator_bench)

    pipeline = kinds.add_parser(
        "pipeline",
        parents=[common],
        help="router, a noop worker per arm, the evaluator (and a joiner) at steady rates",
        description="Start a rollout of model 'bench' (v1 -> v2 at --weight-pct, a plan "
        "watching errors and latency, and accuracy with --labels, that nothing interrupts) "
        "and run 'canary router' (with its controller), 'canary worker --adapter noop:' for "
        "each arm, 'canary evaluator' and, with --labels, 'canary joiner', each a process of "
        "its own. Then keyed requests from this process at --rate/4, --rate/2 and --rate "
        "requests/s for --seconds each (with --labels, a label for 90% of them "
        "--label-delay later, keyed by request id). Every half second: each agent's lag "
        "(its inputs' end offsets minus its group's committed offsets, read from outside, in "
        "seconds of its input), the requests the evaluator's latest evaluation counted "
        "(canary_decided_requests) and its age. An agent keeps up when its lag at the end of "
        "a rate is at most --lag-limit seconds. JSON keys: max_rate_all_kept_up, lag_end_s "
        "and cpu_s_per_1000_requests per agent (/proc/PID/stat), evaluator_cpu_share (of the "
        "pipeline's CPU), evaluator_cpu_s_per_s (CPU seconds per second of the run), "
        "evidence_records_per_s (evidence records the evaluator read per second), "
        "evidence_messages_per_s (the messages carrying them: fewer than records with "
        "CANARY_EVIDENCE_FORMAT=sets, the default), decision_delay_p50_ms and "
        "decision_delay_p99_ms (a "
        "second of requests sent -> the first evaluation counting them), "
        "evaluation_age_max_s, all for the top rate, and runs (every rate; per agent also "
        "cpu_s_per_s). Then, once every agent has caught up, --idle-seconds without "
        "requests, the rollout still in progress: idle (each agent's CPU seconds per "
        "second) and evaluator_idle_cpu_s_per_s.",
    )
    pipeline.add_argument(
        "--rate", type=float, default=5_000.0, help="the top rate, requests/s (5000)"
    )
    pipeline.add_argument(
        "--seconds", type=float, default=30.0, help="seconds per rate (default 30)"
    )
    pipeline.add_argument(
        "--labels", action="store_true", help="labels for 90%% of requests, --label-delay later"
    )
    pipeline.add_argument("--label-delay", type=float, default=3.0, metavar="S", help="default 3 s")
    pipeline.add_argument(
        "--weight-pct", type=float, default=20.0, help="the canary's share (default 20)"
    )
    pipeline.add_argument(
        "--lag-limit",
        type=float,
        default=5.0,
        metavar="S",
        help="the most lag, in seconds of input, of an agent that keeps up (default 5)",
    )
    pipeline.add_argument(
        "--interval", type=float, default=1.0, help="the evaluator's --interval (default 1)"
    )
    pipeline.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds without requests after the rates, each agent's CPU measured "
        "(default 10; 0: none)",
    )
    pipeline.add_argument(
        "--reference",
        action="store_true",
        help="then the top rate again with worker-v1 replaced by the passthrough (the least "
        "an exactly-once consume-produce loop does): JSON key reference",
    )
    pipeline.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark's topics and groups"
    )
    pipeline.add_argument(
        "--json-only", action="store_true", help="print only the JSON line (no progress, no table)"
    )
    pipeline.set_defaults(handler=run_pipeline_bench)


def _register_latency(
    kinds: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from model_canary.agents.bench.latency_bench import MODES

    latency = kinds.add_parser(
        "latency",
        parents=[common],
        help="how long a served request waits, through the router and a worker",
        description="Register model 'bench' (baseline v1) under a fresh prefix; then, each "
        "round and for each --mode in turn (the order alternates between rounds), start "
        "'canary router --no-controller' and 'canary worker --model bench --version v1 "
        "--adapter ADAPTER' as processes of their own with that mode's settings, warm them up, "
        "send requests through the Python client (CanaryClient.infer_nowait) at --rate per "
        "second for --seconds, then --drain requests at once, and stop them. A mode is a "
        "latency profile (low, balanced, throughput: CANARY_LATENCY, exactly-once) or "
        "at-least-once (CANARY_DELIVERY=at-least-once with the base profile). Each request is "
        "timed from just before it is produced: e2e is until its answer is readable by a "
        "read_committed consumer (a tail in this process, fetch.wait.max.ms=10), client until "
        "the client's future has it. The hops (p50 and p99 of each): router_queue (sent -> the "
        "routed-at stamp in the router's canary-route header), router_commit (-> the routed "
        "copy readable), "
        "worker_queue (-> the result's created_at minus the model's time), model (the result's "
        "latency_ms), worker_commit (created_at -> the answer readable), result_fetch (-> the "
        "client has it). requests_per_s: --drain requests over the time from the first sent to "
        "the last answer readable. Before the rounds, a minimal confluent-kafka loop (begin, "
        "produce one message, send offsets, commit, read it read_committed) measures the "
        "transaction floor each exactly-once hop pays (txn_floor_p50_ms, txn_floor_p99_ms). "
        "Before each mode's agents start, a bare hop at the same rate with the mode's client "
        "settings (a producer writing, a read_committed tail reading, nothing in between) is "
        "the least one of a request's three hops costs on this machine (bare_hop_p50_ms, "
        "bare_hop_p99_ms; a message the tail never sees counts as taking until it gave up, "
        "and bare_hop_lost counts them). Then the same through two plain relays in series "
        "(processes of their own: consume, produce, no transactions; the request's path with "
        "nothing but Kafka at each hop): bare_chain_p50_ms, bare_chain_p99_ms, bare_chain_lost, "
        "and 95% intervals (moving-block bootstrap over the samples of every round, in "
        "sending order) of its p99 and of the e2e p99 (bare_chain_p99_ms_ci95, "
        "e2e_p99_ms_ci95); e2e_p99_target_ms is the mode's target (100 exactly-once, 20 "
        "at-least-once) and e2e_p99_target_vs_bare_chain says whether it lies below the bare "
        "chain's interval (plain relays did not reach it in this run), within it, or above it. "
        "In exactly-once modes, then the same through two minimal transactional relays "
        "(consume, produce, send the offsets to the transaction, commit; one transaction per "
        "batch read): exactly-once's floor on this broker, bare_eos_chain_p50_ms, "
        "bare_eos_chain_p99_ms, bare_eos_chain_lost, their 95% intervals "
        "(bare_eos_chain_p50_ms_ci95, bare_eos_chain_p99_ms_ci95, and e2e_p50_ms_ci95), "
        "e2e_p50_target_ms (30) and where the p50 and p99 targets lie against the EOS chain's "
        "intervals (e2e_p50_target_vs_bare_eos_chain, e2e_p99_target_vs_bare_eos_chain: "
        "below, within or above), and the relays' transactions, the mean of the two: "
        "bare_eos_chain_commit_ms_mean, bare_eos_chain_commit_ms_p50, bare_eos_chain_offsets_ms, "
        "bare_eos_chain_flush_ms, bare_eos_chain_end_ms (commit_transaction's EndTxn), "
        "bare_eos_chain_commit_share, bare_eos_chain_messages_per_txn. "
        "The benchmark's requests, version and results topics keep the broker's append "
        "time (LogAppendTime), which splits each request where Kafka has it (segments_p50_ms, "
        "segments_p99_ms, and slowest_segments_ms: each segment's mean over the requests at "
        "or above the e2e p99): to_broker (sent -> the request appended), router_wait (-> the "
        "router handled it), router_write (-> its copy appended), worker_wait (-> the worker "
        "began it), worker_write (its result written -> appended), read (-> readable). "
        "bench_cpu_ms_per_request is the benchmark's own process (the client, its reader, "
        "the tails), and cpus_busy how many CPUs the measured processes (the agents, the "
        "benchmark, the local broker when it is the one used) kept busy together over the "
        "latency phase. "
        "With the local broker and a JDK's jstat, its "
        "garbage-collection pauses over the latency phase (broker_gc_pauses, broker_gc_pause_ms, "
        "broker_gc_pause_ms_mean): each stops every request in flight. "
        "JSON keys (medians over rounds; *_rounds: the value of each "
        "round): e2e_p50_ms, "
        "e2e_p99_ms, client_p50_ms, client_p99_ms, requests_per_s, achieved_rate, hops_p50_ms, "
        "hops_p99_ms, requests, lost, duplicated (exactly-once) or repeats (at-least-once), "
        "client_repeats (answers the client received twice and dropped), router_commits_per_s, "
        "router_commit_ms (mean), router_offsets_ms (the part of a commit spent adding the "
        "offsets), router_flush_ms (the part spent waiting for what the transaction produced), "
        "router_commit_share (the share of the latency phase the router spent "
        "committing: near 1, it commits back to back), the same for the worker; for the "
        "first --mode "
        "at the top level, and per mode under 'modes' when there are several. Prints figures, "
        "asserts nothing. The last line printed is JSON.",
    )
    latency.add_argument(
        "--rate", type=float, default=1000.0, metavar="PER_S", help="requests/s (default 1000)"
    )
    latency.add_argument(
        "--seconds", type=float, default=10.0, metavar="S", help="seconds per round (default 10)"
    )
    latency.add_argument(
        "--mode",
        action="append",
        choices=MODES,
        help="a contender (repeatable, compared in the same run): low, balanced, throughput "
        "(CANARY_LATENCY with exactly-once) or at-least-once (default: balanced, or "
        "--latency's profile)",
    )
    latency.add_argument(
        "--adapter",
        default="noop:",
        metavar="SPEC",
        help="the worker's model (default noop:); 'sklearn:' alone is the demo's iris model, "
        "trained for the run (needs the sklearn extra)",
    )
    latency.add_argument(
        "--drain",
        type=int,
        default=20_000,
        metavar="N",
        help="requests sent at once to measure throughput (default 20000)",
    )
    latency.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat every mode this many times; medians are reported (default 3)",
    )
    latency.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="give up waiting for agents or answers after this many seconds (default 120)",
    )
    latency.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark's topics and groups"
    )
    latency.add_argument(
        "--json-only", action="store_true", help="print only the JSON line (no progress, no table)"
    )
    latency.set_defaults(handler=run_latency_bench)


def _shared(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=rounds,
        help="drain (and, for the router, measure latency) this many times, alternating who "
        f"goes first; medians are reported (default {rounds})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="give up on a phase after this many seconds (default 600)",
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark's topics and groups"
    )
    parser.add_argument(
        "--json-only", action="store_true", help="print only the JSON line (no progress, no table)"
    )


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    if args.json_only:
        return lambda _m: None
    return lambda m: print(m, file=sys.stderr, flush=True)


def _finish(args: argparse.Namespace, figures: dict[str, object], text: str) -> int:
    if not args.json_only:
        print(text)
    print(json_line(figures), flush=True)
    return 0


def run_router_bench(args: argparse.Namespace) -> int:
    from model_canary.agents.bench.router_bench import RouterBenchOptions, run_router_bench

    options = RouterBenchOptions(
        requests=args.requests,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        rounds=args.rounds,
        weight_pct=args.weight_pct,
        max_batch=args.max_batch,
        keep_topics=args.keep_topics,
        timeout=args.timeout,
        shaped_reference=args.shaped_reference,
        split_reference=args.split_reference,
    )
    figures, text = run_router_bench(settings_from_args(args), options, _progress(args))
    return _finish(args, figures, text)


def run_evaluator_bench(args: argparse.Namespace) -> int:
    from model_canary.agents.bench.evaluator_bench import (
        EvaluatorBenchOptions,
        run_evaluator_bench,
    )

    options = EvaluatorBenchOptions(
        rate=args.rate,
        seconds=args.seconds,
        backlog_seconds=args.backlog_seconds,
        labels=args.labels,
        label_backlog=args.label_backlog,
        joiners=args.joiners,
        joiner_rounds=args.joiner_rounds,
        rss_labelled=args.rss_labelled,
        rss_every=args.rss_every,
        interval=args.interval,
        keep_topics=args.keep_topics,
        timeout=args.timeout,
    )
    figures, text = run_evaluator_bench(settings_from_args(args), options, _progress(args))
    return _finish(args, figures, text)


def run_pipeline_bench(args: argparse.Namespace) -> int:
    from model_canary.agents.bench.pipeline_bench import (
        PipelineBenchOptions,
        run_pipeline_bench,
    )

    options = PipelineBenchOptions(
        rate=args.rate,
        seconds=args.seconds,
        labels=args.labels,
        label_delay_s=args.label_delay,
        weight_pct=args.weight_pct,
        lag_limit_s=args.lag_limit,
        interval=args.interval,
        idle_seconds=args.idle_seconds,
        keep_topics=args.keep_topics,
        reference=args.reference,
    )
    figures, text = run_pipeline_bench(settings_from_args(args), options, _progress(args))
    return _finish(args, figures, text)


def run_worker_bench(args: argparse.Namespace) -> int:
    from model_canary.agents.bench.worker_bench import WorkerBenchOptions, run_worker_bench

    options = WorkerBenchOptions(
        requests=args.requests,
        rounds=args.rounds,
        max_batch=args.max_batch,
        keep_topics=args.keep_topics,
        timeout=args.timeout,
    )
    figures, text = run_worker_bench(settings_from_args(args), options, _progress(args))
    return _finish(args, figures, text)


def run_latency_bench(args: argparse.Namespace) -> int:
    from model_canary.agents.bench.latency_bench import LatencyBenchOptions, run_latency_bench

    settings = settings_from_args(args)
    modes = tuple(args.mode or [settings.latency.value])
    options = LatencyBenchOptions(
        rate=args.rate,
        seconds=args.seconds,
        rounds=args.rounds,
        modes=modes,
        adapter=args.adapter,
        drain=args.drain,
        keep_topics=args.keep_topics,
        timeout=args.timeout,
    )
    figures, text = run_latency_bench(settings, options, _progress(args))
    return _finish(args, figures, text)
