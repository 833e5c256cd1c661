"""One second of simulated serving for many rollouts at once, summarised as the producers
summarise it: per (arm, routed second) cell, one row per cohort bucket, the batch moments,
the latency histogram, and the labels that will arrive later.

Keys are hashed into buckets with a fast integer hash salted per rollout (the real router uses
BLAKE2b keyed by the rollout id; any uniform hash gives the same statistics), and split into
arms by :func:`model_canary.streams.routing.arms_of_buckets`, the router's own split.

Micro-batches: each arm's worker group batches what arrives within ``batch_window_ms``, up
to ``max_batch`` items, so batch sizes grow with the arm's load; a batch's items are slower
by ``batch_cost`` per extra item; with ``latency_unit: batch`` every item reports its batch's
latency (the slowest item's), and the worker publishes batch-unit counts (batches with a timed
item, and with one over each threshold); a whole batch may fail; the first batch of a new
worker group (canary, control) is ``cold_factor`` slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from model_canary.streams.routing import arms_of_buckets
from model_canary.streams.sim.scenario import Scenario, Serving
from model_canary.streams.stats.layout import ARMS, BUCKETS, CONTROL
from model_canary.streams.stats.tally import TRASH
from model_canary.streams.stats.thresholds import latency_bins

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

Z90 = 1.2815515655446004  #: standard-normal 0.90 quantile (the "tail" regression's start)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: a fast, well-mixed 64-bit hash."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return np.asarray(x ^ (x >> np.uint64(31)))


@dataclass(frozen=True, slots=True)
class Cells:
    """One second's evidence of ``R'`` replicas, per arm (axis 1 of every array)."""

    routed: IntArray  #: (R', 3) requests routed to each arm
    buckets: IntArray  #: (R', 3, K) bucket rows (TRASH padding)
    counts: IntArray  #: (R', 3, K, 5): n, errors, timed, over_p95, over_p99
    batch: FloatArray  #: (R', 3, len(BATCH_FIELDS)) batch moments and batch-unit counts
    #: (R', 3, K, 4): labelled, incorrect, rated, rated down (rows as ``buckets``)
    labels: IntArray | None
    hist_bins: IntArray  #: (R', K2) latency bins of baseline/control successful items
    hist_counts: IntArray  #: (R', K2) 1 per item (0 for padding)
    hist_arm: IntArray  #: (R', K2) arm of each


@dataclass
class Population:
    """Per-replica constants: each rollout's salt for the bucket hash, the user CDF (and the
    scenario's serving parameters per weight, which depend on nothing else)."""

    salts: npt.NDArray[np.uint64]
    cdf: FloatArray | None  #: users' cumulative traffic shares (None: one key per request)
    #: Each canary weight's serving parameters per arm (filled as weights are seen).
    serving: dict[int, FloatArray] = field(default_factory=dict)

    @classmethod
    def new(cls, scenario: Scenario, replicas: int, rng: np.random.Generator) -> Population:
        t = scenario.traffic
        cdf = None
        if t.users > 0:
            weights = 1.0 / np.arange(1, t.users + 1, dtype=np.float64) ** t.zipf
            cdf = np.cumsum(weights) / weights.sum()
        salts = rng.integers(0, 2**63, replicas, dtype=np.int64).astype(np.uint64)
        return cls(salts, cdf)


#: Serving parameters per arm, the columns of :func:`_params`' table.
PARAMS = (
    "error_rate", "batch_failure", "latency_ms", "latency_sigma", "max_batch",
    "batch_window_ms", "batch_cost", "cold_factor", "label_coverage", "latency_scale",
    "tail_scale", "drift_per_min", "accuracy", "thumbs_down", "feedback_coverage", "batch_unit",
)  # fmt: skip
COLUMN = {n: i for i, n in enumerate(PARAMS)}


def _arm_rows(scenario: Scenario, weight_bp: int) -> FloatArray:
    """``(3, P)`` serving parameters of each arm at ``weight_bp`` (columns :data:`PARAMS`)."""
    rows = np.zeros((len(ARMS), len(PARAMS)))
    for a, arm in enumerate(ARMS):
        s: Serving = scenario.arm(arm, weight_bp)
        for i, n in enumerate(PARAMS[:-1]):
            value = getattr(s, n)
            rows[a, i] = 1.0 if value is None else float(value)
        rows[a, -1] = float(s.latency_unit == "batch")
    return rows


def _params(
    scenario: Scenario, weights: IntArray, minute: float, cache: dict[int, FloatArray]
) -> FloatArray:
    """Per replica and arm ``(R', 3, P)`` serving parameters (columns :data:`PARAMS`);
    ``cache``: each weight's rows, computed once per run (they depend on the weight only)."""
    uniq, inverse = np.unique(weights, return_inverse=True)
    rows = []
    for w in uniq.tolist():
        row = cache.get(w)
        if row is None:
            row = cache[w] = _arm_rows(scenario, w)
        rows.append(row)
    table = np.stack(rows)[inverse.reshape(-1)]
    e = COLUMN["error_rate"]
    table[..., e] = np.minimum(1.0, table[..., e] * _error_factor(scenario, minute))
    return table


def _error_factor(scenario: Scenario, minute: float) -> float:
    base = scenario.serving.error_rate
    if base <= 0:
        return 1.0
    rate = base
    if scenario.drift is not None:
        lo, hi = scenario.drift
        rate = lo + (hi - lo) * min(1.0, minute / max(1, scenario.minutes - 1))
    if scenario.incident is not None:
        first, end, during = scenario.incident
        if first <= minute < end:
            rate = during
    return rate / base


def serve(
    scenario: Scenario,
    pop: Population,
    idx: IntArray,
    weights: IntArray,
    control: bool,
    second: int,
    thresholds: FloatArray,
    cold: BoolArray,
    rng: np.random.Generator,
) -> Cells:
    """Serve second ``second`` for replicas ``idx`` at canary weights ``weights``.

    ``thresholds`` ``(R', 2)``: p95/p99 thresholds in ms (nan: not fixed yet, so no latency
    columns); ``cold`` ``(R', 3)``: worker groups whose first batch is still to come (updated).
    """
    reps = idx.size
    minute = second / 60.0
    rate = scenario.traffic.rate_at(minute) / 60.0
    k = rng.poisson(rate, reps)
    kmax = max(1, int(k.max()))
    valid = np.arange(kmax)[None, :] < k[:, None]

    # Keys and buckets.
    t = scenario.traffic
    if pop.cdf is None:
        buckets = rng.integers(0, BUCKETS, (reps, kmax))
        user_z = np.zeros((reps, kmax))
    else:
        users = np.searchsorted(pop.cdf, rng.random((reps, kmax))).astype(np.uint64)
        h = mix(users * np.uint64(0x9E3779B97F4A7C15) ^ pop.salts[idx][:, None])
        buckets = (h % np.uint64(BUCKETS)).astype(np.int64)
        u = (mix(h ^ np.uint64(0xD1B54A32D192ED03)) >> np.uint64(11)).astype(np.float64)
        user_z = ndtri((u + 0.5) / 2.0**53) if t.user_spread > 0 else np.zeros((reps, kmax))
    arm = arms_of_buckets(buckets, weights[:, None], control)
    arm = np.where(valid, arm, -1)
    table = _params(scenario, weights, minute, pop.serving)  # (R', 3, P)
    items = table[np.arange(reps)[:, None], np.maximum(arm, 0)]  # (R', K, P)

    def per_item(name: str) -> FloatArray:
        return np.asarray(items[..., COLUMN[name]])

    # Micro-batches per (replica, arm): sizes grow with the arm's load this second.
    onehot = arm[:, :, None] == np.arange(len(ARMS))[None, None, :]  # (R', K, 3)
    k_arm = onehot.sum(axis=1)  # (R', 3)
    position = np.take_along_axis(np.cumsum(onehot, axis=1) - 1, np.maximum(arm, 0)[..., None], 2)
    position = position[..., 0]
    max_batch = table[..., COLUMN["max_batch"]]
    if np.all(max_batch <= 1):
        batch = np.maximum(position, 0)  # no batching: every item is its own batch
    else:
        mean_extra = k_arm * table[..., COLUMN["batch_window_ms"]] / 1000.0
        sizes = 1 + rng.poisson(np.broadcast_to(mean_extra[..., None], (reps, len(ARMS), kmax)))
        sizes = np.minimum(sizes, max_batch[..., None].astype(np.int64))
        ends = np.cumsum(sizes, axis=2)  # (R', 3, K)
        index = np.maximum(arm, 0)[..., None].repeat(kmax, 2)
        my_ends = np.take_along_axis(ends, index, axis=1)
        batch = (my_ends <= position[..., None]).sum(axis=2)  # (R', K): batch within arm
    bid = (np.arange(reps)[:, None] * len(ARMS) + np.maximum(arm, 0)) * (kmax + 1) + batch
    bid = np.where(valid, bid, reps * len(ARMS) * (kmax + 1))  # padding: one spare batch
    nb = reps * len(ARMS) * (kmax + 1) + 1
    m = np.bincount(bid.ravel(), minlength=nb)
    m_item = m[bid]

    # Latency.
    z = rng.standard_normal((reps, kmax))
    lat = per_item("latency_ms") * np.exp(
        per_item("latency_sigma") * z + t.user_spread * user_z * 0.5
    )
    lat *= 1.0 + per_item("batch_cost") * (m_item - 1)
    lat *= per_item("latency_scale") * (1.0 + per_item("drift_per_min") * minute)
    lat = np.where(z > Z90, lat * per_item("tail_scale"), lat)
    first = cold[np.arange(reps)[:, None], np.maximum(arm, 0)] & (batch == 0) & valid
    lat = np.where(first, lat * per_item("cold_factor"), lat)
    cold &= ~(k_arm > 0)
    batch_unit = per_item("batch_unit") > 0
    if batch_unit.any():
        worst = np.zeros(nb)
        np.maximum.at(worst, bid.ravel(), lat.ravel())
        lat = np.where(batch_unit, worst[bid], lat)

    # Errors: per item (a user's propensity scales it) and whole failed batches.
    p_err = per_item("error_rate") * np.exp(t.user_spread * user_z - t.user_spread**2 / 2)
    failed = rng.random(nb) < np.bincount(
        bid.ravel(), weights=per_item("batch_failure").ravel(), minlength=nb
    ) / np.maximum(m, 1)
    err = valid & ((rng.random((reps, kmax)) < np.minimum(1.0, p_err)) | failed[bid])
    known = ~np.isnan(thresholds[:, 0])
    timed = valid & ~err & known[:, None]
    o95 = timed & (lat > np.nan_to_num(thresholds[:, :1], nan=np.inf))
    o99 = timed & (lat > np.nan_to_num(thresholds[:, 1:], nan=np.inf))

    cols = np.stack([valid, err, timed, o95, o99], axis=-1).astype(np.int64)  # (R', K, 5)
    rows, row_counts, key_shape = _rows(arm, buckets, valid, cols, reps)

    # Batch moments per (replica, arm).
    e = np.stack([err, timed, o95, o99], axis=-1).astype(np.float64)
    per_batch = np.stack(
        [np.bincount(bid.ravel(), weights=e[..., i].ravel(), minlength=nb) for i in range(4)], 1
    )
    e_err, m_t, e95, e99 = per_batch.T
    mf = m.astype(np.float64)
    # Batch-unit counts, as workers that time answers per batch publish them: batches with a
    # timed item, and with one over each threshold (``batch_unit_timed`` is the tally's).
    unit_b = np.bincount(bid.ravel(), weights=batch_unit.ravel(), minlength=nb) > 0
    timed_b = unit_b & (m_t > 0)
    moments = np.stack(
        [
            mf**2, e_err**2, e_err * mf, m_t**2, e95**2, e95 * m_t, e99**2, e99 * m_t,
            timed_b, timed_b & (e95 > 0), timed_b & (e99 > 0), np.zeros(nb),
        ],
        axis=1,
    )[:-1]  # fmt: skip
    moments = moments.reshape(reps, len(ARMS), kmax + 1, moments.shape[1]).sum(axis=2)

    labels = None
    if scenario.labelled or scenario.rated:
        # Per item: labelled, incorrect (accuracy); rated, rated down (the outcome metric).
        lab = inc = rated = down = np.zeros((reps, kmax), dtype=bool)
        if scenario.labelled:
            lab = valid & (rng.random((reps, kmax)) < per_item("label_coverage"))
            inc = lab & (rng.random((reps, kmax)) >= per_item("accuracy"))
        if scenario.rated:
            rated = valid & (rng.random((reps, kmax)) < per_item("feedback_coverage"))
            down = rated & (rng.random((reps, kmax)) < per_item("thumbs_down"))
        lcols = np.stack([lab, inc, rated, down], axis=-1).astype(np.int64)
        _, labels, _ = _rows(arm, buckets, valid, lcols, reps, key_shape)

    # Latency histogram of the baseline and control arms, until the thresholds are fixed.
    pre = valid & ~err & ~known[:, None] & (arm != 0)
    bins = latency_bins(np.where(pre, lat, 1.0))
    return Cells(
        routed=k_arm,
        buckets=rows,
        counts=row_counts,
        batch=moments,
        labels=labels,
        hist_bins=bins,
        hist_counts=pre.astype(np.int64),
        hist_arm=np.where(pre, arm, CONTROL),
    )


def _rows(
    arm: IntArray,
    buckets: IntArray,
    valid: BoolArray,
    cols: IntArray,
    reps: int,
    shape: tuple[IntArray, IntArray, IntArray, int] | None = None,
) -> tuple[IntArray, IntArray, tuple[IntArray, IntArray, IntArray, int]]:
    """Per (replica, arm): one row per distinct bucket with the columns summed."""
    if shape is None:
        key = ((np.arange(reps)[:, None] * len(ARMS) + np.maximum(arm, 0)) * (BUCKETS + 1)) + (
            buckets
        )
        flat = key[valid]
        uniq, inverse = np.unique(flat, return_inverse=True)
        group = uniq // (BUCKETS + 1)
        starts = np.searchsorted(group, np.arange(reps * len(ARMS)))
        pos = np.arange(uniq.size) - starts[group]
        width = max(1, int(pos.max()) + 1) if uniq.size else 1
        shape = (uniq, inverse, pos, width)
    uniq, inverse, pos, width = shape
    group = uniq // (BUCKETS + 1)
    rows = np.full((reps * len(ARMS), width), TRASH, dtype=np.int64)
    rows[group, pos] = uniq % (BUCKETS + 1)
    out = np.zeros((reps * len(ARMS), width, cols.shape[-1]), dtype=np.int64)
    sums = np.zeros((uniq.size, cols.shape[-1]), dtype=np.int64)
    np.add.at(sums, inverse, cols[valid])
    out[group, pos] = sums
    return (
        rows.reshape(reps, len(ARMS), width),
        out.reshape(reps, len(ARMS), width, cols.shape[-1]),
        shape,
    )


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))
