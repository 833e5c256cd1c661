"""Which cohort buckets belong to which arm at each weight, and the metrics' raw fields.

Routing keys are hashed into :data:`BUCKETS` buckets; at canary weight ``w`` (basis points)
bucket ``b`` is the canary's when ``b < w``, the **control**'s (the baseline version served by
its own workers at the canary's share) when ``w <= b < w + control_share(w)``, and the
baseline's otherwise. The bucket is the unit that is randomised (a key's requests all land in
its bucket), so per-bucket sums are the units of analysis.

>>> arm_ranges(2000, control=True)
{'canary': (0, 2000), 'control': (2000, 4000), 'baseline': (4000, 10000)}
>>> arm_ranges(5000, control=True)["baseline"], arm_ranges(100, control=False)["control"]
((10000, 10000), (100, 100))
>>> [METRICS[m].bad for m in ("errors", "latency_p99", "accuracy")]
['errors', 'over_p99', 'incorrect']

An outcome metric (a plan's ``bad_when`` over feedback) adds two counters per bucket,
``NAME:counted`` (requests whose feedback counts for it) and ``NAME:bad``, and is a rate like
accuracy: bad per counted, with its own sample-ratio check (counted per served item).

>>> d = metric_def("thumbs_down")
>>> d.bad, d.exposure, metric_def("labels:thumbs_down").bad
('thumbs_down:bad', 'thumbs_down:counted', 'thumbs_down:counted')
"""

from __future__ import annotations

from dataclasses import dataclass

from model_canary.streams.cohort import BUCKETS as BUCKETS
from model_canary.streams.record_base import MAX_BP as MAX_BP

#: The weight both routes of a mirrored (shadow) request carry: under "no difference" a bad
#: item among its two answers is the canary's with probability 1/2.
SHADOW_PAIR_BP = 5_000

#: The arms with a comparison role, in array order.
ARMS: tuple[str, ...] = ("canary", "control", "baseline")
CANARY, CONTROL, BASELINE = 0, 1, 2

#: Per-bucket counters kept for every weight, in array order. ``n``: served items (errors
#: included); ``timed``: successful items compared on latency (0 until the rollout's latency
#: thresholds are fixed); ``over_p95``/``over_p99``: timed items slower than the thresholds;
#: ``labelled``/``incorrect``: items whose ground truth arrived, and the wrong ones among them.
FIELDS: tuple[str, ...] = (
    "n",
    "errors",
    "timed",
    "over_p95",
    "over_p99",
    "labelled",
    "incorrect",
)
N, ERRORS, TIMED, OVER_P95, OVER_P99, LABELLED, INCORRECT = range(7)

#: Batch figures per (weight, arm) cell. For every worker batch that touched the cell,
#: ``m`` = its items in the cell (``m_timed``: its timed items) and ``e`` its bad items:
#: ``m2`` = sum m^2, ``e2_<bad>`` = sum e^2, ``em_<bad>`` = sum e*m (``m_timed`` for latency).
#: Then the **batch-unit** latency counts, from producers that time items per batch: batches
#: with a timed item in the cell (``batches_timed``), those with a timed item over the p95 /
#: p99 threshold, and ``batch_unit_timed``, the cell's timed items when it carried batch
#: counts (the tally fills it in: a comparison uses batches as its unit only when every timed
#: item it would compare is covered, see :func:`~.compare.compare`). Producers give the first
#: 8 or 12. Last, the tally's per-second moments of the batch-unit counts: with ``B`` a cell's
#: timed batches in one routed second and ``X`` those over a threshold, ``cell_b2`` = sum B^2,
#: ``cell_x2_<bad>`` = sum X^2, ``cell_xb_<bad>`` = sum X*B (a worker stall slows every batch
#: of its arm for a while: batches of one second are not independent).
BATCH_FIELDS: tuple[str, ...] = (
    "m2",
    "e2_errors",
    "em_errors",
    "m2_timed",
    "e2_over_p95",
    "em_over_p95",
    "e2_over_p99",
    "em_over_p99",
    "batches_timed",
    "batches_over_p95",
    "batches_over_p99",
    "batch_unit_timed",
    "cell_b2",
    "cell_x2_over_p95",
    "cell_xb_over_p95",
    "cell_x2_over_p99",
    "cell_xb_over_p99",
)
#: Positions in :data:`BATCH_FIELDS`: the batch-unit counts, the covered timed items, the
#: first per-second moment; producers give at most :data:`PRODUCED` fields.
BATCHES_TIMED, BATCH_UNIT_TIMED, CELL_B2 = 8, 11, 12
PRODUCED = 12


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric as a rate: ``bad`` items per ``exposure`` item (both :data:`FIELDS` names);
    ``batch``: indices of its ``(m2, e2, em)`` batch moments in :data:`BATCH_FIELDS` (None: not
    batch-clustered, e.g. labels, joined one by one); ``batch_unit``: indices in
    :data:`BATCH_FIELDS` of its batch-unit exposure and bad counts and of their per-second
    moments ``cell_x2``, ``cell_xb`` (None: items only)."""

    bad: str
    exposure: str
    batch: tuple[int, int, int] | None
    batch_unit: tuple[int, int, int, int] | None = None


METRICS: dict[str, MetricDef] = {
    "errors": MetricDef("errors", "n", (0, 1, 2)),
    "latency_p95": MetricDef("over_p95", "timed", (3, 4, 5), (8, 9, 13, 14)),
    "latency_p99": MetricDef("over_p99", "timed", (3, 6, 7), (8, 10, 15, 16)),
    "accuracy": MetricDef("incorrect", "labelled", None),
}
#: The labelled sample-ratio check, as a "rate": labelled items per served item.
LABELS = MetricDef("labelled", "n", None)


def outcome_fields(name: str) -> tuple[str, str]:
    """The per-bucket counters of outcome metric ``name``: feedback counted, and bad."""
    return f"{name}:counted", f"{name}:bad"


def metric_def(name: str) -> MetricDef:
    """The rate of metric ``name``: a built-in one, ``labels`` (accuracy's sample-ratio
    check), ``labels:NAME`` (outcome metric NAME's) or an outcome metric."""
    if name in METRICS:
        return METRICS[name]
    if name == "labels":
        return LABELS
    if name.startswith("labels:"):
        return MetricDef(outcome_fields(name[len("labels:") :])[0], "n", None)
    counted, bad = outcome_fields(name)
    return MetricDef(bad, counted, None)


def coverage_def(name: str) -> str:
    """The name :func:`metric_def` knows for labelled metric ``name``'s sample-ratio check.

    >>> coverage_def("accuracy"), coverage_def("judge")
    ('labels', 'labels:judge')
    """
    return "labels" if name == "accuracy" else f"labels:{name}"


def control_share(weight_bp: int, control: bool) -> int:
    """Buckets of the control arm at ``weight_bp``: the canary's share, capped by what is left."""
    if not control or weight_bp <= 0 or weight_bp >= MAX_BP:
        return 0
    return min(weight_bp, MAX_BP - weight_bp)


def arm_ranges(weight_bp: int, control: bool) -> dict[str, tuple[int, int]]:
    """``{arm: (first bucket, end bucket)}`` at ``weight_bp`` (empty arms have first == end)."""
    w = min(max(weight_bp, 0), MAX_BP)
    end = w + control_share(w, control)
    return {"canary": (0, w), "control": (w, end), "baseline": (end, BUCKETS)}


def boundaries(weights: tuple[int, ...], control: bool) -> tuple[int, ...]:
    """Sorted bucket boundaries at which some arm changes for one of ``weights``."""
    cuts = {0, BUCKETS}
    for w in weights:
        for lo, hi in arm_ranges(w, control).values():
            cuts.update((lo, hi))
    return tuple(sorted(cuts))
