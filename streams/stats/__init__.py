"""The evaluator's decision statistics: pure code, no Kafka.

* :mod:`.layout` - cohort buckets, arms and the metrics' fields;
* :mod:`.tally` - the statistics half of the evaluator's state (per-bucket evidence);
* :mod:`.compare` - one metric, canary against its comparator, with its design effect;
* :mod:`.sequential` - the anytime-valid tests (roll back, promote, sample ratio);
* :mod:`.decide` - the per-step decision rule (advance, hold, roll back, finalize);
* :mod:`.snapshot` - the rule's parameters from a plan, and its input from a tally;
* :mod:`.verdicts` - a decision in words, and the command it asks for.
"""

from model_canary.streams.stats.compare import Comparison, compare, from_counts
from model_canary.streams.stats.decide import MetricRule, StepPolicy, StepSnapshot, decide_many
from model_canary.streams.stats.snapshot import Progress, policy, take_snapshot, tally_for
from model_canary.streams.stats.tally import ImpossibleEvidence, Tally
from model_canary.streams.stats.verdicts import Verdict, action_for, decide, verdict

__all__ = [
    "Comparison",
    "ImpossibleEvidence",
    "MetricRule",
    "Progress",
    "StepPolicy",
    "StepSnapshot",
    "Tally",
    "Verdict",
    "action_for",
    "compare",
    "decide",
    "decide_many",
    "from_counts",
    "policy",
    "take_snapshot",
    "tally_for",
    "verdict",
]
