"""Sub-minute resolution for the sequential methods, drawn exactly from the per-minute counts.

The evaluator decides every second, so scoring our method (and the oracle) once a minute
would charge it up to a minute of canary traffic - 200 requests at 20% - that it does not
spend. Each minute is split into :data:`PER_MINUTE` equal slices: requests land in a slice
uniformly (a multinomial split), and a minute's bad events are a uniformly random subset of
its requests (so, given the slice's requests, a hypergeometric draw); requests above the
p99 are a random subset of those above the p95, wrong predictions a random subset of the
requests (labelled ones being a random subset too). Each slice's counts thus have the exact
joint law given the minute's totals, which the per-minute comparators see unchanged.

>>> import numpy as np
>>> from model_canary.streams.sim.scenarios import BY_NAME
>>> from model_canary.streams.sim.traffic import generate
>>> rng = np.random.default_rng(1)
>>> t = generate(BY_NAME["errors"], 3, rng)
>>> f = refine(t, rng)
>>> f.canary_so_far.shape, bool((f.canary_so_far[:, PER_MINUTE - 1] == t.n_c[:, 0]).all())
((3, 540), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_canary.streams.sim.scenarios import IntArray
from model_canary.streams.sim.traffic import Counts, Traffic

PER_MINUTE = 6  #: slices per minute: the sequential methods are evaluated every 10 seconds


@dataclass(frozen=True, slots=True)
class Fine:
    """Counts per slice ``(R, T * per_minute)``, by the slice the request was routed in."""

    per_minute: int
    step: IntArray  #: (S,) step index of each slice
    canary_so_far: Counts  #: canary requests routed up to the end of each slice
    #: ``{metric: (canary bad, baseline bad, delay in slices)}``; a bad event counts from
    #: ``delay`` slices after its request was routed (labels arrive late).
    bad: dict[str, tuple[Counts, Counts, int]]

    def slices(self, minutes: int) -> int:
        """How many slices the first ``minutes`` minutes hold (at most all of them)."""
        return min(self.step.size, minutes * self.per_minute)


def refine(traffic: Traffic, rng: np.random.Generator, per_minute: int = PER_MINUTE) -> Fine:
    """Split every minute of ``traffic`` into ``per_minute`` slices."""
    req_c = _split_requests(rng, traffic.n_c, per_minute)
    req_b = _split_requests(rng, traffic.n_b, per_minute)
    slow95_c = _split_subset(rng, traffic.slow95_c, req_c)
    slow95_b = _split_subset(rng, traffic.slow95_b, req_b)
    bad = {
        "errors": (
            _split_subset(rng, traffic.err_c, req_c),
            _split_subset(rng, traffic.err_b, req_b),
            0,
        ),
        "latency_p95": (slow95_c, slow95_b, 0),
        "latency_p99": (
            _split_subset(rng, traffic.slow99_c, slow95_c),
            _split_subset(rng, traffic.slow99_b, slow95_b),
            0,
        ),
    }
    if traffic.mis_c is not None and traffic.mis_b is not None:
        bad["accuracy"] = (
            _split_subset(rng, traffic.mis_c, req_c),
            _split_subset(rng, traffic.mis_b, req_b),
            traffic.scenario.label_delay * per_minute,
        )
    r = traffic.n_c.shape[0]
    return Fine(
        step=np.repeat(traffic.step, per_minute),
        canary_so_far=np.cumsum(req_c.reshape(r, -1), axis=1),
        bad={name: (c.reshape(r, -1), b.reshape(r, -1), d) for name, (c, b, d) in bad.items()},
        per_minute=per_minute,
    )


def _split_requests(rng: np.random.Generator, n: Counts, k: int) -> Counts:
    # (R, T) -> (R, T, k): each request in one of k equally likely slices.
    parts, left = [], n
    for j in range(k - 1):
        x = rng.binomial(left, 1.0 / (k - j))
        parts.append(x)
        left = left - x
    parts.append(left)
    return np.stack(parts, axis=-1)


def _split_subset(rng: np.random.Generator, chosen: Counts, pool: Counts) -> Counts:
    # ``chosen`` (R, T) items form a uniformly random subset of the pool split as ``pool``
    # (R, T, k): how many fall in each slice, slice by slice (hypergeometric).
    parts, left, left_pool = [], chosen, pool.sum(axis=-1)
    for j in range(pool.shape[-1] - 1):
        x = rng.hypergeometric(left, left_pool - left, pool[..., j])
        parts.append(x)
        left = left - x
        left_pool = left_pool - pool[..., j]
    parts.append(left)
    return np.stack(parts, axis=-1)
