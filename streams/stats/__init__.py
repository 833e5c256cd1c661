"""The evaluator's decision statistics: pure code, no Kafka.

* :mod:`streams.stats.harm` - the anytime-valid mixture test on the arm of bad events, per
  weight, with confidence bounds on the harm ratio;
* :mod:`streams.stats.srm` - the anytime-valid sample-ratio check on labelled requests;
* :mod:`streams.stats.decide` - the per-step decision rule (advance, hold, roll back, finalize).
"""

from streams.stats.decide import ArmCounts, StepPolicy, StepSnapshot, Verdict, decide
from streams.stats.harm import HarmResult, HarmTest
from streams.stats.srm import SrmResult, sample_ratio_check

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
