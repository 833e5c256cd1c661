"""Prometheus metrics of every agent (names follow Prometheus conventions: ``_total`` for
counters, ``_seconds`` for durations, no request ids in labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

ROUTED = Counter(
    "canary_routed_requests_total",
    "Requests the router republished, by model, version and arm (shadow copies included).",
    ["model", "version", "arm"],
)
DEAD_LETTERS = Counter(
    "canary_dead_letters_total",
    "Messages sent to the dead-letter topic, by agent and reason.",
    ["agent", "reason"],
)
WEIGHT = Gauge(
    "canary_weight_ratio",
    "Share of a model's traffic served by its canary (0..1).",
    ["model"],
)
COMMANDS = Counter(
    "canary_control_commands_total",
    "Control commands handled, by action and outcome (applied or rejected).",
    ["action", "outcome"],
)
INFERENCE_SECONDS = Histogram(
    "canary_inference_duration_seconds",
    "Model latency per request as measured by the worker.",
    ["model", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INFERENCES = Counter(
    "canary_inferences_total",
    "Requests answered by a worker, by model, version and outcome (ok or error).",
    ["model", "version", "outcome"],
)
REDRIVEN = Counter(
    "canary_redriven_requests_total",
    "Canary requests handed back to the baseline after a rollback.",
    ["model", "version"],
)
BATCH_SIZE = Histogram(
    "canary_batch_size",
    "Messages per consumed batch.",
    ["agent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
TXN_COMMIT_SECONDS = Histogram(
    "canary_transaction_commit_duration_seconds",
    "Time to commit one Kafka transaction with its offsets.",
    ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TXN_OFFSETS_SECONDS = Histogram(
    "canary_transaction_offsets_duration_seconds",
    "Time to add the consumed offsets to a Kafka transaction (send_offsets_to_transaction: "
    "the coordinator's AddOffsetsToTxn, then the group's TxnOffsetCommit), part of its commit.",
    ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TXN_FLUSH_SECONDS = Histogram(
    "canary_transaction_flush_duration_seconds",
    "Time for what a Kafka transaction produced to be acknowledged (the producer's flush, "
    "after its offsets are added and before the coordinator's EndTxn), part of its commit.",
    ["agent"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TXN_ABORTS = Counter(
    "canary_transaction_aborts_total", "Transactions aborted and replayed.", ["agent"]
)
PRODUCER_REPLACEMENTS = Counter(
    "canary_producer_replacements_total",
    "Transactional producers replaced after a fatal error (an abort refused, fenced after a "
    "stall).",
    ["agent"],
)
LAG = Gauge(
    "canary_consumer_lag_messages",
    "Messages not yet consumed, per topic and partition.",
    ["agent", "topic", "partition"],
)


def serve(port: int | None) -> None:
    """Serve ``/metrics`` on ``port`` (all interfaces) when a port is given."""
    if port:
        start_http_server(port)


DECISIONS = Counter(
    "canary_decisions_total", "Evaluator decisions published, by outcome.", ["outcome"]
)
TEST_STATISTIC = Gauge(
    "canary_test_statistic",
    "Log likelihood ratio of the harm test, per model and metric (rollback above ln(M/alpha)).",
    ["model", "metric"],
)
EVALUATED = Gauge(
    "canary_evaluated_requests",
    "Requests counted by the evaluator in the current rollout, per model, metric and arm (for "
    "accuracy and outcome metrics: those whose label or feedback counts for the metric).",
    ["model", "metric", "arm"],
)
BAD_EVENTS = Gauge(
    "canary_bad_events",
    "Bad events (errors, slow requests, wrong predictions, bad feedback of an outcome metric) "
    "counted in the current rollout.",
    ["model", "metric", "arm"],
)
PHASE = Gauge(
    "canary_rollout_phase",
    "1 for the phase each model's rollout is in (one series per phase), as the evaluator sees it.",
    ["model", "phase"],
)

EVIDENCE = Counter(
    "canary_evidence_records_total",
    "Evidence records the evaluator read, by kind and what became of them (applied, "
    "duplicate: counted before, stale: an older rollout's).",
    ["kind", "outcome"],
)
EVIDENCE_MESSAGES = Counter(
    "canary_evidence_messages_total",
    "Messages the evaluator read from the evidence topic, by format (record: one evidence "
    "record; set: a transaction's records of one model).",
    ["format"],
)
CHECKPOINT_SECONDS = Histogram(
    "canary_evaluator_checkpoint_duration_seconds",
    "Time to write one evidence partition's checkpoint (snapshots and offsets).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
HEAP_TRIM_CPU_SECONDS = Counter(
    "canary_heap_trim_cpu_seconds_total",
    "CPU time spent giving free heap pages back to the system (after each checkpoint).",
)
DECIDED = Gauge(
    "canary_decided_requests",
    "Answered requests of complete seconds the evaluator's latest evaluation of a rollout "
    "rested on (warm-up included), per model and arm.",
    ["model", "arm"],
)
EVALUATED_AT = Gauge(
    "canary_evaluation_timestamp_seconds",
    "When the evaluator last evaluated each model's rollout (Unix time).",
    ["model"],
)
FEEDBACK_REKEYED = Counter(
    "canary_feedback_rekeyed_total",
    "Feedback records that arrived keyed by something else than their request id and were "
    "re-keyed by the label joiner.",
)
LABELS_JOINED = Counter(
    "canary_labels_joined_total",
    "Predictions joined with their ground-truth label by the label joiner.",
)
LABELS_PENDING = Gauge(
    "canary_label_join_pending",
    "Predictions waiting for their label and labels waiting for their prediction, in this "
    "label joiner's partitions.",
)
