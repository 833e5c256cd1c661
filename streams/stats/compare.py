"""One metric, canary against its comparator, per weight: counts and the design effect.

A metric is a rate (bad items per exposure item). For each weight (a stratum) the canary's
bad items ``c`` and exposure ``n_c`` are compared with the comparator's ``b`` and ``n_b``; the
comparator is the **control** arm (the baseline version at the canary's share, for
load-dependent metrics) or the whole **baseline** version (control and baseline arms).

Under "no difference", a bad item of stratum ``w`` is the canary's with probability
``rho_w = n_c / (n_c + n_b)`` (the *realised* exposure share, so a heavy user in one arm does
not look like harm), and the score ``U = sum_w (c_w - rho_w t_w)`` (``t = c + b``) has variance
``V = sum_w rho_w (1 - rho_w) t_w`` when items are independent. Real traffic is clustered:

* by **bucket** (a routing key's requests share its arm and its quirks): the cluster-robust
  variance sums, over buckets, the square of each bucket's contribution to ``U`` across all
  weights, ``g_w (bad - lambda_w n)`` with ``g_w = 1 - rho_w`` in the canary, ``-rho_w`` in
  the comparator and ``lambda_w`` the pooled rate (pooled, so one heavy bucket that makes up
  most of an arm is measured against the population, not against itself);
* by **micro-batch** (items of a batch share its latency and failures, across buckets):
  the same sum over batches, from each cell's batch moments.

The two are combined as two-way clustering (Cameron, Gelbach and Miller 2011): ``V_bucket +
V_batch - V_item``, where ``V_item`` is the same sum over single items. For latency timed per
batch (every answer reports its batch's time) a slow bucket drags its batch-mates' answers
over the threshold too, so the buckets' excess ``V_bucket - V_item`` counts ``kappa^2`` times,
``kappa = sum m^2 / sum m`` the size-biased mean batch size (:func:`_spread`). The **design
effect** ``phi = max(1, that / V_item)`` (all three at the observed counts, so the ratio
measures clustering only) divides the likelihood ratios of the tests (a quasi-likelihood):
with independent items it is 1 and the tests are the exact coin-flip tests; with clustering
they need ``phi`` times the evidence.

``subtests`` select strata: test ``k`` uses the weights at or above the plan's ``k``-th step,
so harm that appears only at a high weight is not averaged away by earlier steps.

>>> from model_canary.streams.stats.tally import Tally
>>> t = Tally(1, control=False, warmup_s=0)
>>> t.add_served(1, 2000, "canary", buckets=[[5]], n=[[10]], errors=[[1]])
>>> t.add_served(1, 2000, "baseline", buckets=[[9000]], n=[[40]], errors=[[2]])
>>> t.release(1)
>>> c = compare(t, "errors", "baseline", (2000,))
>>> c.canary_bad[0, 0], c.other_n[0, 0], round(float(c.rho[0, 0]), 2)
(np.int64(1), np.int64(40), 0.2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_canary.streams.errors import ConfigError
from model_canary.streams.stats.layout import (
    ARMS,
    BASELINE,
    BATCH_UNIT_TIMED,
    CANARY,
    CELL_B2,
    CONTROL,
    MAX_BP,
    MetricDef,
    metric_def,
)
from model_canary.streams.stats.tally import Tally

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Comparators: the control arm alone, or every arm serving the baseline version.
COMPARATORS = ("control", "baseline")
#: What a comparison counts: requests, or (latency timed per micro-batch, promotion only)
#: batches.
UNITS = ("item", "batch")


@dataclass(frozen=True, slots=True)
class VarianceParts:
    """(R, K) variances of the score per sub-test, all at observed counts (so their ratios
    measure clustering, not how many bad items the canary happens to have: a variance from
    observed counts over one expected under the null would read a real harm as noise):

    * ``bucket`` over buckets (every weight at once) and ``bucket_items`` over single items,
      both as of the tally's last refresh of its per-bucket sums;
    * ``batch_excess``, the micro-batch clustering's excess over single items, and ``items``,
      at the current counts.
    """

    bucket: FloatArray
    bucket_items: FloatArray
    batch_excess: FloatArray
    items: FloatArray
    #: (R, K) how far a bucket's persistent excess spreads through shared batches: the
    #: square of the size-biased mean batch size ``kappa = sum m^2 / sum m`` where every answer
    #: reports its batch's time (latency timed per batch), else 1 (see :func:`_spread`).
    spread: FloatArray | None = None

    def phi(self) -> FloatArray:
        """The design effect: ``max(1, 1 + spread (bucket / bucket_items - 1)_+ + (bucket /
        bucket_items - 1)_- + batch_excess / items)`` (``spread`` 1: ``max(1, bucket /
        bucket_items + batch_excess / items)``)."""
        by_bucket = np.where(
            self.bucket_items > 0, self.bucket / np.maximum(self.bucket_items, 1e-300), 1.0
        )
        if self.spread is not None:
            excess = by_bucket - 1.0
            spread = 1.0 + self.spread * np.maximum(excess, 0.0) + np.minimum(excess, 0.0)
            by_bucket = np.where(self.spread != 1.0, spread, by_bucket)  # exact where 1
        by_batch = np.where(self.items > 0, self.batch_excess / np.maximum(self.items, 1e-300), 0.0)
        return np.asarray(np.maximum(1.0, by_bucket + by_batch))


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric's evidence for ``R`` replicas over ``W`` strata (weights)."""

    metric: str
    comparator: str
    weights: tuple[int, ...]  #: (W,) strata: weights strictly between 0 and 100%
    canary_n: IntArray  #: (R, W) exposure
    canary_bad: IntArray
    other_n: IntArray
    other_bad: IntArray
    subtests: BoolArray  #: (K, W): strata in each sub-test
    phi: FloatArray  #: (R, K) design effect of each sub-test
    variances: VarianceParts | None = None
    #: What the counts count: ``item`` (requests), or ``batch`` (worker micro-batches: the
    #: batch-unit latency test, see :func:`compare`), per replica.
    unit: tuple[str, ...] = ()

    def unit_of(self, replica: int = 0) -> str:
        """``item`` or ``batch``: what replica ``replica``'s counts count."""
        return self.unit[replica] if self.unit else "item"

    @property
    def rho(self) -> FloatArray:
        """(R, W) realised canary share of the exposure (0 where a stratum has none)."""
        total = self.canary_n + self.other_n
        return np.where(total > 0, self.canary_n / np.maximum(total, 1), 0.0)

    @property
    def usable(self) -> BoolArray:
        """(R, W) strata with exposure in both arms (the others say nothing)."""
        return (self.canary_n > 0) & (self.other_n > 0)


def subtest_masks(weights: Sequence[int], starts: Sequence[int]) -> BoolArray:
    """(K, W): sub-test ``k`` holds the strata whose weight is at least ``starts[k]``.

    >>> subtest_masks([100, 2000, 5000], [100, 5000]).astype(int).tolist()
    [[1, 1, 1], [0, 0, 1]]
    """
    w = np.asarray(weights, dtype=np.int64)
    s = np.asarray(starts, dtype=np.int64)
    return np.asarray(w[None, :] >= s[:, None])


def from_counts(
    metric: str,
    comparator: str,
    counts: Mapping[int, tuple[int, int, int, int]],
    starts: Sequence[int],
) -> Comparison:
    """A one-replica comparison from totals ``{weight_bp: (canary_n, other_n, canary_bad,
    other_bad)}``, items taken as independent (design effect 1): for counts kept without
    buckets, and for examples.

    >>> c = from_counts("errors", "baseline", {2000: (2000, 8000, 40, 80)}, (2000,))
    >>> c.rho.tolist(), c.phi.tolist()
    ([[0.2]], [[1.0]])
    """
    weights = tuple(sorted(w for w in counts if 0 < w < MAX_BP))
    rows = np.array([counts[w] for w in weights], dtype=np.int64).reshape(len(weights), 4)
    subtests = subtest_masks(weights, starts)
    return Comparison(
        metric,
        comparator,
        weights,
        rows[None, :, 0],
        rows[None, :, 2],
        rows[None, :, 1],
        rows[None, :, 3],
        subtests,
        np.ones((1, subtests.shape[0])),
    )


def compare(
    tally: Tally,
    metric: str,
    comparator: str,
    starts: Sequence[int],
    replicas: npt.ArrayLike | None = None,
    unit: str = "item",
) -> Comparison:
    """The metric's :class:`Comparison` from ``tally`` (``metric`` in :data:`~.layout.METRICS`,
    one of the tally's outcome metrics, or ``"labels"`` / ``"labels:NAME"`` for the labelled
    sample-ratio check of accuracy / of outcome metric NAME: :func:`~.layout.metric_def`);
    ``starts``: the sub-tests' first weights; ``replicas``: a subset of the tally's replicas
    (default all).

    ``unit``: ``"item"`` counts requests (the roll-back test's unit, for every metric);
    ``"batch"`` counts worker micro-batches for the latency metrics of replicas whose timed
    items all came with batch-unit counts (the promotion test's unit, see
    :func:`_batch_unit_counts`), and requests elsewhere. ``Comparison.unit`` says which.
    """
    return compare_units(tally, metric, comparator, starts, replicas, (unit,))[unit]


def compare_units(
    tally: Tally,
    metric: str,
    comparator: str,
    starts: Sequence[int],
    replicas: npt.ArrayLike | None = None,
    units: Sequence[str] = UNITS,
) -> dict[str, Comparison]:
    """:func:`compare` in each of ``units`` at once (the roll-back and the promotion test's
    comparisons of one metric): what they share is worked out once, and each comparison
    gets arrays of its own."""
    if comparator not in COMPARATORS:
        raise ConfigError(f"comparator must be one of {COMPARATORS}, got {comparator!r}")
    for unit in units:
        if unit not in UNITS:
            raise ConfigError(f"unit must be one of {UNITS}, got {unit!r}")
    mdef = metric_def(metric)
    fields = (tally.index(mdef.exposure), tally.index(mdef.bad))
    idx = (
        np.arange(tally.replicas)
        if replicas is None
        else np.asarray(replicas, dtype=np.int64).reshape(-1)
    )
    weights = tuple(sorted({w for w in tally.weights if 0 < w < MAX_BP}))
    pairs = [
        (tally.slot(w, "canary"), tally.slot(w, "baseline")) if tally.paired(w) else (j, j)
        for w in weights
        for j in [tally.slot(w)]
    ]
    others = [CONTROL] if comparator == "control" and tally.control else [CONTROL, BASELINE]
    counts = _counts(tally.totals[idx], pairs, fields, others)
    subtests = subtest_masks(weights, starts)
    # The bucket part changes only when the tally refreshes its per-bucket sums (which
    # empties this cache): computed once per refresh, metric, comparator, sub-tests, replicas.
    key = (metric, comparator, tuple(starts), idx.tobytes())
    cached = tally.cache.get(key)
    if cached is None:
        refreshed = _counts(tally.refreshed_totals[idx], pairs, fields, others)
        cached = _bucket_variance(tally, idx, pairs, fields, others, refreshed, subtests)
        tally.cache[key] = cached
    bucket, bucket_items = cached
    batch_excess, items = _batch_variance(tally, idx, pairs, mdef, others, counts, subtests)
    spread = None
    per_batch: Counts | None = None
    timed_per_batch = np.zeros(idx.size, dtype=bool)
    if mdef.batch_unit is not None and mdef.batch is not None and pairs:
        # Latency timed per batch (every timed item of the comparison came with batch-unit
        # counts): an answer reports its batch's time, so a bucket's slowness reaches its
        # batch-mates' answers too, and its persistent excess spreads by kappa (_spread).
        per_batch, timed_per_batch = _batch_unit_counts(
            tally, idx, pairs, mdef.batch_unit, others, counts
        )
        kappa2 = _spread(tally, idx, pairs, mdef.batch[0], others, counts, subtests)
        spread = np.where(timed_per_batch[:, None], kappa2, 1.0)
    out = {}
    for i, unit in enumerate(units):
        if i:  # arrays of its own (not bucket, bucket_items: the tally's cache, shared as ever)
            counts = _copies(counts)
            subtests, timed_per_batch = subtests.copy(), timed_per_batch.copy()
            batch_excess, items = batch_excess.copy(), items.copy()
            spread = None if spread is None else spread.copy()
            per_batch = None if per_batch is None else _copies(per_batch)
        parts = VarianceParts(bucket, bucket_items, batch_excess, items, spread)
        c, n_c, b, n_b = counts
        phi = parts.phi()
        per_batch_unit = np.zeros(idx.size, dtype=bool)
        if unit == "batch" and per_batch is not None and mdef.batch_unit is not None:
            # Batch-unit counts, where every timed item of both arms in every stratum came
            # with them: the batch is then the unit, its clustering is gone from the counts,
            # and only the buckets' (users') clustering is left in the design effect (a slow
            # user's batch counts once however many answers it holds: its excess does not
            # spread).
            per_batch_unit = timed_per_batch
            by_bucket = np.asarray(VarianceParts(bucket, bucket_items, 0 * bucket, items).phi())
            # Two-way: buckets (users) and routed seconds (a stalled worker slows every batch
            # of its arm for a while): V_bucket + V_second - V_batch, over V_batch.
            by_second = _second_ratio(
                tally, idx, pairs, mdef.batch_unit, others, per_batch, subtests
            )
            by_bucket = np.maximum(1.0, by_bucket + by_second - 1.0)
            pick = zip(per_batch, counts, strict=True)
            c, n_c, b, n_b = (np.where(per_batch_unit[:, None], x, y) for x, y in pick)
            phi = np.where(per_batch_unit[:, None], by_bucket, phi)
        out[unit] = Comparison(
            metric,
            comparator,
            weights,
            n_c,
            c,
            n_b,
            b,
            subtests,
            phi,
            parts,
            tuple("batch" if u else "item" for u in per_batch_unit.tolist()),
        )
    return out


def _copies(counts: Counts) -> Counts:
    c, n_c, b, n_b = counts
    return c.copy(), n_c.copy(), b.copy(), n_b.copy()


def _second_ratio(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    fields: tuple[int, int, int, int],
    others: list[int],
    counts: Counts,
    subtests: BoolArray,
) -> FloatArray:
    """(R, K) the batch-unit score's variance summed over routed seconds (each arm's batches
    of one second as one cluster, from the tally's ``cell_*`` moments) over its variance
    summed over single batches (1 where there is none)."""
    _, _, x2, xb = fields
    seconds = _cluster_sum(tally, idx, pairs, others, counts, (x2, xb, CELL_B2))
    sub = subtests.astype(np.float64).T
    v_sec, v_one = seconds @ sub, _item_variance(counts) @ sub
    return np.asarray(np.where(v_one > 0, v_sec / np.maximum(v_one, 1e-300), 1.0))


def _spread(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    m2: int,
    others: list[int],
    counts: Counts,
    subtests: BoolArray,
) -> FloatArray:
    """(R, K) ``kappa^2``: the square of the largest size-biased mean batch size ``kappa =
    sum m^2 / sum m`` (``m`` a batch's timed items in the cell) over the two sides and the
    strata of each sub-test (1 where nothing is timed).

    Why: with latency timed per batch every answer of a batch reports the batch's time, the
    slowest item's, so a user whose requests are slow makes its batch-mates' answers slow too
    (interference: another bucket's outcome depends on this bucket's arm). A bucket's
    influence on the score is then its own excess plus its batch-mates' answers dragged over
    the threshold with it: at most ``m`` answers for each of its own in a batch of ``m``, and
    over its many answers the mean ``m`` is the size-biased ``kappa``. Its persistent excess
    in the bucket variance therefore scales by at most ``kappa^2`` (docs/statistics.md,
    "Latency timed per batch: interference through batch-mates")."""
    mom = tally.batch[idx]  # (R, slots, arms, fields)
    _, timed_c, _, timed_b = counts
    jc = [p[0] for p in pairs]
    jb = [p[1] for p in pairs]
    m2_c = mom[:, jc][:, :, CANARY, m2]
    m2_b = mom[:, jb][:, :, others, m2].sum(axis=-1)
    k_c = np.where(timed_c > 0, m2_c / np.maximum(timed_c, 1), 1.0)
    k_b = np.where(timed_b > 0, m2_b / np.maximum(timed_b, 1), 1.0)
    kappa = np.maximum(1.0, np.maximum(k_c, k_b))  # (R, W)
    on = subtests[None, :, :]  # (1, K, W)
    worst = np.where(on, kappa[:, None, :], 1.0).max(axis=-1) if kappa.shape[1] else None
    return np.asarray(worst**2) if worst is not None else np.ones((idx.size, subtests.shape[0]))


def _batch_unit_counts(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    fields: tuple[int, int, int, int],
    others: list[int],
    counts: Counts,
) -> tuple[Counts, BoolArray]:
    """The batch-unit counts (canary bad batches, batches, comparator bad batches, batches),
    each (R, W), and per replica whether they cover every timed item of the comparison: every
    stratum, both sides (the timed items of cells that carried batch counts equal all timed
    items, and a side with timed items has batches)."""
    exp, bad = fields[:2]
    mom = tally.batch[idx]  # (R, slots, arms, fields)
    jc = [p[0] for p in pairs]
    jb = [p[1] for p in pairs]

    def side(arms: list[int], at: list[int], k: int) -> IntArray:
        return np.asarray(np.rint(mom[:, at][:, :, arms, k].sum(axis=-1)), dtype=np.int64)

    c, n_c = side([CANARY], jc, bad), side([CANARY], jc, exp)
    b, n_b = side(others, jb, bad), side(others, jb, exp)
    covered_c = side([CANARY], jc, BATCH_UNIT_TIMED)
    covered_b = side(others, jb, BATCH_UNIT_TIMED)
    _, timed_c, _, timed_b = counts
    whole = (covered_c == timed_c) & (covered_b == timed_b)
    any_timed = ((timed_c + timed_b) > 0).any(axis=1)
    return (c, n_c, b, n_b), whole.all(axis=1) & any_timed


Counts = tuple[IntArray, IntArray, IntArray, IntArray]


def _counts(
    tot: IntArray, pairs: list[tuple[int, int]], fields: tuple[int, int], others: list[int]
) -> Counts:
    """(canary bad, canary exposure, comparator bad, comparator exposure), each (R, W);
    ``fields``: the positions of the exposure and bad counters."""
    exp, bad = fields
    jc = [p[0] for p in pairs]
    jb = [p[1] for p in pairs]
    c, n_c = tot[:, jc, CANARY, bad], tot[:, jc, CANARY, exp]
    b = tot[:, jb][..., others, bad].sum(axis=-1)
    n_b = tot[:, jb][..., others, exp].sum(axis=-1)
    return c, n_c, b, n_b


def _shares(counts: Counts) -> tuple[FloatArray, FloatArray, BoolArray]:
    c, n_c, b, n_b = counts
    t = (c + b).astype(np.float64)
    total_n = (n_c + n_b).astype(np.float64)
    rho = np.where(total_n > 0, n_c / np.maximum(total_n, 1.0), 0.0)
    lam = np.where(total_n > 0, t / np.maximum(total_n, 1.0), 0.0)
    return rho, lam, (n_c > 0) & (n_b > 0)


def _item_variance(counts: Counts) -> FloatArray:
    """(R, W) the score's variance summed over single items, at the observed counts."""
    c, n_c, b, n_b = (x.astype(np.float64) for x in counts)
    rho, lam, usable = _shares(counts)
    g_c = np.where(usable, 1.0 - rho, 0.0)
    g_b = np.where(usable, -rho, 0.0)
    return np.asarray(
        g_c**2 * (c * (1 - 2 * lam) + lam**2 * n_c) + g_b**2 * (b * (1 - 2 * lam) + lam**2 * n_b)
    )


def _bucket_variance(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    fields: tuple[int, int],
    others: list[int],
    counts: Counts,
    subtests: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """(R, K) the score's variance summed over buckets (every weight at once), and over single
    items, both as of the tally's last refresh."""
    reps, k = counts[0].shape[0], subtests.shape[0]
    if not pairs or k == 0:
        zero = np.zeros((reps, k))
        return zero, zero
    rho, lam, usable = _shares(counts)
    # Each bucket's contribution to the score: in the canary's slot (1 - rho)(bad - lam n),
    # in the comparator's slot -rho (bad - lam n). The Gram is indexed by (slot, the
    # bucket's arm there, field), so one coefficient vector per sub-test covers every bucket.
    slots = sorted({j for pair in pairs for j in pair})
    narms, F = len(ARMS), tally.F
    index = np.array(
        [(j * narms + a) * F + f for j in slots for a in range(narms) for f in fields]
    )  # (slots * arms * 2,)
    pos = {j: i for i, j in enumerate(slots)}
    coef = np.zeros((reps, k, len(slots), narms, 2))
    for s_i, (j_c, j_b) in enumerate(pairs):
        on = subtests[:, s_i].astype(np.float64)  # (K,)
        g_c = np.where(usable[:, s_i], 1.0 - rho[:, s_i], 0.0)[:, None] * on[None, :]
        g_b = np.where(usable[:, s_i], -rho[:, s_i], 0.0)[:, None] * on[None, :]
        lam_s = lam[:, s_i][:, None]
        coef[:, :, pos[j_c], CANARY, 0] += -g_c * lam_s
        coef[:, :, pos[j_c], CANARY, 1] += g_c
        for o in others:
            coef[:, :, pos[j_b], o, 0] += -g_b * lam_s
            coef[:, :, pos[j_b], o, 1] += g_b
    v = coef.reshape(reps, k, -1)
    gram = tally.gram[np.ix_(idx, index, index)]  # (R, M, M)
    bucket = ((v @ gram) * v).sum(axis=-1)  # (R, K): v^T Gram v
    return bucket, _item_variance(counts) @ subtests.astype(np.float64).T


def _batch_variance(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    mdef: MetricDef,
    others: list[int],
    counts: Counts,
    subtests: BoolArray,
) -> tuple[FloatArray, FloatArray]:
    """(R, K) the batch clustering's excess over single items, and the single items' variance,
    at the current counts."""
    items = _item_variance(counts)
    if mdef.batch is None or not pairs:
        zero = items @ subtests.astype(np.float64).T
        return np.zeros_like(zero), zero
    m2, e2, em = mdef.batch
    batch = _cluster_sum(tally, idx, pairs, others, counts, (e2, em, m2))
    sub = subtests.astype(np.float64).T
    return (batch - items) @ sub, items @ sub


def _cluster_sum(
    tally: Tally,
    idx: IntArray,
    pairs: list[tuple[int, int]],
    others: list[int],
    counts: Counts,
    moments: tuple[int, int, int],
) -> FloatArray:
    """(R, W) the score's variance summed over clusters (micro-batches, or an arm's batches of
    one routed second), from each cell's moments in ``tally.batch`` at ``moments``: the sums
    of e^2, e m and m^2 over its clusters (e a cluster's bad units, m its units)."""
    e2, em, m2 = moments
    rho, lam, usable = _shares(counts)
    mom = tally.batch[idx]  # (R, slots, arms, moments)

    def q(arms: list[int], at: list[int]) -> FloatArray:
        part = mom[:, at][:, :, arms].sum(axis=2)
        return np.asarray(part[..., e2] - 2 * lam * part[..., em] + lam**2 * part[..., m2])

    g_c = np.where(usable, 1.0 - rho, 0.0)
    g_b = np.where(usable, -rho, 0.0)
    return np.asarray(
        g_c**2 * q([CANARY], [p[0] for p in pairs]) + g_b**2 * q(others, [p[1] for p in pairs])
    )
