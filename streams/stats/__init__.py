"""The evaluator's decision statistics: pure code, no Kafka.

* :mod:`.harm` - the anytime-valid mixture test on the arm of bad events, per
  weight, with confidence bounds on the harm ratio;
* :mod:`.srm` - the anytime-valid sample-ratio check on labelled requests;
* :mod:`.decide` - the per-step decision rule (advance, hold, roll back, finalize).
"""

from model_canary.streams.stats.decide import ArmCounts, StepPolicy, StepSnapshot, Verdict, decide
from model_canary.streams.stats.harm import HarmResult, HarmTest
from model_canary.streams.stats.srm import SrmResult, sample_ratio_check

__all__ = [
    "ArmCounts",
    "HarmResult",
    "HarmTest",
    "SrmResult",
    "StepPolicy",
    "StepSnapshot",
    "Verdict",
    "decide",
    "sample_ratio_check",
]
