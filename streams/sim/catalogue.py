"""The built-in scenarios of ``canary sim`` (each one is a scenario document, the same format
as ``--scenario-file``).

A/A scenarios (the canary is the baseline: any rollback is false) cover the traffic shapes
that break request-level tests: sticky skewed users, micro-batches of load-dependent size
with a cold start and whole-batch failures, a lagging arm, unequal label coverage, a model
without errors, a low-traffic model. Harmful scenarios measure how often and how fast a
regression is caught, against the oracle where it is defined.
"""

from __future__ import annotations

from typing import Any

from model_canary.streams.sim.scenario import Scenario, scenario_from_doc

STICKY = {"users": 20_000, "zipf": 1.0, "user_spread": 0.5}
BATCHED = {
    "max_batch": 64,
    "batch_window_ms": 50,
    "batch_cost": 0.03,
    "latency_unit": "batch",
    "cold_factor": 20,
}
LABELS = {"accuracy": 0.9, "label_coverage": 0.5}
#: Users rate half the answers; 5% of ratings are a thumbs-down.
RATED = {"thumbs_down": 0.05, "feedback_coverage": 0.5}

DOCS: tuple[dict[str, Any], ...] = (
    {"name": "aa", "title": "A/A, independent requests (identical canary: time to promote)"},
    {
        "name": "aa-incident",
        "title": "A/A, a 10-minute incident (5% errors) in both arms",
        "incident": [20, 30, 0.05],
    },
    {
        "name": "aa-drift",
        "title": "A/A, both arms drift from 0.5% to 2% errors",
        "drift": [0.005, 0.02],
    },
    {
        "name": "aa-sticky",
        "title": "A/A, sticky users: 20,000 keys, Zipf(1) traffic, each user's requests alike",
        "traffic": STICKY,
    },
    {
        "name": "aa-batched",
        "title": "A/A, micro-batches up to 64 sized by each arm's load, batch latency, cold start",
        "serving": BATCHED,
    },
    {
        "name": "aa-batch-failures",
        "title": "A/A, micro-batches whose failures take the whole batch (0.5% of batches)",
        "serving": {**BATCHED, "error_rate": 0.005, "batch_failure": 0.005},
    },
    {
        "name": "aa-lagging",
        "title": "A/A, baseline results 60 s behind the canary's",
        "baseline": {"lag_s": 60},
    },
    {
        "name": "aa-label-coverage",
        "title": "A/A with labels: 70% of canary requests labelled, 50% of baseline ones",
        "serving": LABELS,
        "canary": {"label_coverage": 0.7},
    },
    {
        "name": "aa-labelled",
        "title": "A/A with labels 10 minutes late",
        "serving": {**LABELS, "label_delay_s": 600},
    },
    {
        "name": "aa-rated",
        "title": "A/A with thumbs-down feedback (an outcome metric): 5% of rated answers",
        "serving": RATED,
    },
    {
        "name": "aa-no-errors",
        "title": "A/A, a model that never errors",
        "serving": {"error_rate": 0.0},
    },
    {
        "name": "aa-low-traffic",
        "title": "A/A, a low-traffic model: 60 requests a minute",
        "traffic": {"rate": 60},
        "minutes": 600,
    },
    {
        "name": "aa-real",
        "title": "A/A, all at once: sticky users, micro-batches, lagging baseline",
        "traffic": STICKY,
        "serving": BATCHED,
        "baseline": {"lag_s": 30},
    },
    {"name": "errors", "title": "errors 1% -> 2%", "harmful": True, "canary": {"error_rate": 0.02}},
    {
        "name": "latency-scale",
        "title": "latency 1.3x slower",
        "harmful": True,
        "canary": {"latency_scale": 1.3},
    },
    {
        "name": "latency-tail",
        "title": "latency: slowest 10% 1.3x slower (p99 +30%)",
        "harmful": True,
        "canary": {"tail_scale": 1.3},
    },
    {
        "name": "accuracy",
        "title": "accuracy 90% -> 87%",
        "harmful": True,
        "serving": LABELS,
        "canary": {"accuracy": 0.87},
    },
    {
        "name": "thumbs-down",
        "title": "outcome metric: thumbs-down 5% -> 8% of rated answers (users rate half)",
        "harmful": True,
        "serving": RATED,
        "canary": {"thumbs_down": 0.08},
    },
    {
        "name": "harm-at-50",
        "title": "10% faster at 1% and 20%, 10% slower from 50% (load-dependent harm)",
        "harmful": True,
        "canary": {"latency_scale": 1.1, "from_weight": 50, "before": {"latency_scale": 0.9}},
    },
    {
        "name": "latency-drift",
        "title": "canary latency drifting up 1% a minute",
        "harmful": True,
        "canary": {"drift_per_min": 0.01},
    },
    {
        "name": "errors-sticky",
        "title": "errors 1% -> 2% with sticky skewed users",
        "harmful": True,
        "traffic": STICKY,
        "canary": {"error_rate": 0.02},
    },
    {
        "name": "latency-batched",
        "title": "latency 1.3x slower, micro-batched",
        "harmful": True,
        "serving": BATCHED,
        "canary": {"latency_scale": 1.3},
    },
)

SCENARIOS: tuple[Scenario, ...] = tuple(scenario_from_doc(d) for d in DOCS)
BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
