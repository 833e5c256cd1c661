"""The demo: a real rollout of a new scikit-learn model version through the router and two
workers, with the operator promoting step by step.

The evaluator that decides on its own is the next milestone; until then the demo plays the
operator: it sends keyed requests at each step, shows what each arm served, and promotes.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.broker import LocalBroker
from agents.client import CanaryClient, ControlClient
from agents.demo.models import DemoData, train
from agents.demo.processes import ProcessGroup
from agents.kafka.admin import Admin
from streams.codec.avro import codec_for
from streams.messages import Arm, InferenceResult
from streams.settings import Settings
from streams.topics import TopicCatalogue


@dataclass
class ArmStats:
    served: int = 0
    errors: int = 0
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "served": self.served,
            "errors": self.errors,
            "accuracy": round(self.correct / self.served, 4) if self.served else None,
            "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
            "latency_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2)
            if lat
            else None,
        }


@dataclass(frozen=True, slots=True)
class DemoOptions:
    steps_pct: tuple[float, ...] = (1, 20, 50, 100)
    requests_per_step: int = 400
    users: int = 200
    json: bool = False


def run_demo(settings: Settings, options: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the summary printed as the last JSON line."""
    started_broker = False
    broker = LocalBroker(settings)
    if settings.uses_local_broker and broker.pid() is None:
        _say(options, f"starting a local Kafka broker on {broker.bootstrap} ...")
        broker.start()
        started_broker = True
    work = Path(tempfile.mkdtemp(prefix="canary-demo-"))
    group = ProcessGroup(settings, work / "logs")
    try:
        return _run(settings, options, group, work)
    finally:
        group.stop()
        if started_broker:
            broker.stop()


def _run(
    settings: Settings, options: DemoOptions, group: ProcessGroup, work: Path
) -> dict[str, Any]:
    catalogue = TopicCatalogue(settings.topic_prefix, settings.partitions)
    Admin(settings).ensure_topics(catalogue.core_specs())
    _say(options, "training iris models v1 (2 features) and v2 (4 features) ...")
    v1_path, v2_path, data = train(work / "models")
    group.start("router", "router", "--instance", "demo-router")
    for version, path in (("v1", v1_path), ("v2", v2_path)):
        group.start(
            f"worker-{version}",
            "worker",
            "--model",
            "iris",
            "--version",
            version,
            "--adapter",
            f"sklearn:{path}",
            "--instance",
            f"demo-{version}",
        )
    control = ControlClient(settings)
    control.send("iris", "register", baseline_version="v1", wait=60)
    steps_bp = tuple(round(p * 100) for p in options.steps_pct)
    control.send("iris", "start", canary_version="v2", steps_bp=steps_bp, reason="demo rollout")
    sent: list[str] = []
    report: list[dict[str, Any]] = []
    with CanaryClient(settings) as client:
        for index, pct in enumerate(options.steps_pct):
            if index > 0:
                control.send("iris", "advance", reason="demo: operator promotes")
            group.check()
            stats = _drive(client, data, options, index, sent)
            row = {"weight_percent": pct, **{arm: s.summary() for arm, s in stats.items()}}
            report.append(row)
            _say(options, _format_step(row))
    outcome = control.send("iris", "finalize", reason="demo: all steps passed")
    served = _served_counts(settings, catalogue, len(sent))
    lost = [rid for rid in sent if served[rid] == 0]
    dupes = [rid for rid in sent if served[rid] > 1]
    return {
        "scenario": "manual",
        "final_phase": outcome.event.phase,
        "stable_version": "v2",
        "steps": report,
        "requests": len(sent),
        "answered": len(sent) - len(lost),
        "lost": len(lost),
        "duplicates": len(dupes),
        "logs": str(group.log_dir),
    }


def _drive(
    client: CanaryClient, data: DemoData, options: DemoOptions, step: int, sent: list[str]
) -> dict[str, ArmStats]:
    futures: list[tuple[int, Future[InferenceResult]]] = []
    n = len(data.labels)
    for i in range(options.requests_per_step):
        row = (step * options.requests_per_step + i) % n
        key = f"user-{(step * 7919 + i) % options.users}"
        rid = f"demo-{step}-{i}"
        inputs = {"input-0": [data.features[row].tolist()]}
        futures.append((row, client.infer_nowait(inputs, model="iris", key=key, request_id=rid)))
        sent.append(rid)
    stats: dict[str, ArmStats] = {Arm.BASELINE.value: ArmStats(), Arm.CANARY.value: ArmStats()}
    for row, future in futures:
        result = future.result(timeout=120)
        arm = stats.setdefault(result.arm.value, ArmStats())
        arm.served += 1
        arm.latencies_ms.append(result.latency_ms)
        if result.error is not None:
            arm.errors += 1
            continue
        predicted = json.loads(result.outputs)["outputs"][0]["data"][0]
        arm.correct += int(predicted == int(data.labels[row]))
    return stats


def _served_counts(settings: Settings, catalogue: TopicCatalogue, expected: int) -> Counter[str]:
    """Served results per request id, read back from the results topic (read_committed)."""
    from agents.client.tail import open_tail

    codec = codec_for(InferenceResult)
    consumer = open_tail(settings, catalogue.results, "canary-demo-audit", from_beginning=True)
    counts: Counter[str] = Counter()
    try:
        quiet = time.monotonic()
        while time.monotonic() - quiet < 2.0 or sum(counts.values()) < expected:
            msgs = consumer.consume(1000, timeout=0.5)
            if msgs:
                quiet = time.monotonic()
            for msg in msgs:
                if msg.error() is None:
                    result = codec.decode(msg.value() or b"")
                    if result.served:
                        counts[result.request_id] += 1
            if time.monotonic() - quiet > 30:
                break
    finally:
        consumer.close()
    return counts


def _format_step(row: dict[str, Any]) -> str:
    parts = [f"step {row['weight_percent']:>5g}%"]
    for arm in ("baseline", "canary"):
        s = row.get(arm) or {}
        acc = s.get("accuracy")
        p99 = s.get("latency_p99_ms")
        parts.append(
            f"{arm}: {s.get('served', 0):>4} served, {s.get('errors', 0)} errors, "
            f"accuracy {'-' if acc is None else f'{acc:.1%}'}, "
            f"p99 {'-' if p99 is None else f'{p99:.1f} ms'}"
        )
    return " | ".join(parts)


def _say(options: DemoOptions, text: str) -> None:
    if not options.json:
        print(text, flush=True)
