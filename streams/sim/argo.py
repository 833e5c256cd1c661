"""An Argo-Rollouts-style threshold check, run the way its users run it.

A background analysis measures every 5 minutes over the last 5 minutes (a Prometheus
``[5m]`` query), for the whole rollout:

* error rate: the canary's fails when above 1.25 x the baseline's (relative to the baseline, so
  incidents and drifts that hit both arms do not fail it);
* latency p99 of the window: the canary's fails when above 1.25 x the baseline's;
* accuracy (labels that arrived in the window): fails when the canary's wrong-prediction
  rate is above 1.25 x the baseline's.

A window without data in either arm is inconclusive, not failed. Failures are counted per
metric over the whole analysis; the rollout rolls back when any metric has 3 failed
measurements. (Argo itself fails when failures *exceed* ``failureLimit``; with
``failureLimit: 2`` that is this rule.)
"""

from __future__ import annotations

import numpy as np

from model_canary.streams.sim.scenarios import IntArray
from model_canary.streams.sim.traffic import WINDOW, Counts, Traffic
from model_canary.streams.stats.mixture import FloatArray

FACTOR = 1.25
FAILURES = 3


def run_argo(traffic: Traffic, horizon: int) -> IntArray:
    """Minute of the rollback per replication (-1 when none)."""
    windows = horizon // WINDOW
    failed: list[FloatArray] = [
        _worse_rate(
            _win(traffic.err_c, windows),
            _win(traffic.n_c, windows),
            _win(traffic.err_b, windows),
            _win(traffic.n_b, windows),
        ),
        np.asarray(traffic.p99w_c[:, :windows] > FACTOR * traffic.p99w_b[:, :windows]),
    ]
    if traffic.lab_c is not None and traffic.lab_b is not None:
        assert traffic.mis_c is not None and traffic.mis_b is not None
        failed.append(
            _worse_rate(
                _win(traffic.arrived(traffic.mis_c), windows),
                _win(traffic.arrived(traffic.lab_c), windows),
                _win(traffic.arrived(traffic.mis_b), windows),
                _win(traffic.arrived(traffic.lab_b), windows),
            )
        )
    rollback = np.full(traffic.n_c.shape[0], -1, dtype=np.intp)
    for fails in failed:
        hit = np.cumsum(fails, axis=1) >= FAILURES
        window = np.where(hit.any(axis=1), np.argmax(hit, axis=1), -1)
        minute = np.where(window >= 0, (window + 1) * WINDOW - 1, -1)
        rollback = np.where(
            (minute >= 0) & ((rollback < 0) | (minute < rollback)), minute, rollback
        )
    return rollback


def _win(x: Counts, windows: int) -> Counts:
    r = x.shape[0]
    return np.asarray(x[:, : windows * WINDOW].reshape(r, windows, WINDOW).sum(axis=2))


def _worse_rate(bad_c: Counts, n_c: Counts, bad_b: Counts, n_b: Counts) -> FloatArray:
    # bad_c / n_c > FACTOR * bad_b / n_b, cross-multiplied; no data in an arm: inconclusive.
    return np.asarray((n_c > 0) & (n_b > 0) & (bad_c * n_b > FACTOR * bad_b * n_c))
