"""Evidence: what producers aggregate per transaction for the evaluator, and the evaluator's
per-rollout state built from it. Pure code, no Kafka.

* :mod:`.columns` - packed numpy columns (latency histograms, per-unit rows);
* :mod:`.builder` - :class:`EvidenceBuilder`, one per producer transaction;
* :mod:`.state` - :class:`RolloutEvidence`, the evaluator's state for one rollout;
* :mod:`.thresholds` - latency thresholds fixed once per rollout from the baseline's histogram;
* :mod:`.join` - the label join: predictions waiting for their ground truth.
"""
