"""Run scenarios: replications in chunks, spread over processes, reproducible by seed.

Each (scenario, chunk) draws from its own child of the seed, derived from the scenario's name
and the chunk's number, so a subset of scenarios reproduces the numbers of the full run and
the result does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from model_canary.streams.errors import ConfigError
from model_canary.streams.sim.engine import RunResult, simulate
from model_canary.streams.sim.scenario import Scenario

DEFAULT_SEED = 20_240_601
CHUNK = 500  #: replications per task (bounds memory: a tally holds 10,001 buckets per replica)


@dataclass(frozen=True, slots=True)
class SimRun:
    replications: int
    seed: int
    seconds: float
    results: tuple[RunResult, ...]


def _task(args: tuple[Scenario, int, int, int]) -> RunResult:
    scenario, size, seed, chunk = args
    digest = hashlib.blake2b(scenario.name.encode(), digest_size=8).digest()
    entropy = [seed, int.from_bytes(digest, "big"), chunk]
    return simulate(scenario, size, np.random.SeedSequence(entropy))


def run(
    scenarios: Sequence[Scenario],
    replications: int,
    seed: int = DEFAULT_SEED,
    processes: int = 1,
) -> SimRun:
    """Simulate ``replications`` rollouts of each scenario."""
    if replications < 1:
        raise ConfigError("replications must be at least 1")
    began = time.perf_counter()
    tasks = []
    for s in scenarios:
        for chunk, start in enumerate(range(0, replications, CHUNK)):
            tasks.append((s, min(CHUNK, replications - start), seed, chunk))
    if processes > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(processes) as pool:
            parts = list(pool.map(_task, tasks))
    else:
        parts = [_task(t) for t in tasks]
    merged = []
    for s in scenarios:
        mine = [p for p, t in zip(parts, tasks, strict=True) if t[0] is s]
        merged.append(merge(mine))
    return SimRun(replications, seed, time.perf_counter() - began, tuple(merged))


def merge(parts: Sequence[RunResult]) -> RunResult:
    """One result from the chunks of a scenario."""
    first = parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return RunResult(
        scenario=first.scenario,
        plan_json=first.plan_json,
        rollback_s=cat("rollback_s"),
        rollback_canary=cat("rollback_canary"),
        full_s=cat("full_s"),
        finalized_s=cat("finalized_s"),
        oracle_s=cat("oracle_s"),
        oracle_canary=cat("oracle_canary"),
        last_code=[c for p in parts for c in p.last_code],
        oracle_defined=first.oracle_defined,
    )
