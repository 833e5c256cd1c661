"""The ``canary sim`` benchmark: simulated rollouts, vectorised over replications with numpy.

* :mod:`.scenarios` - the timeline and the A/A and regression scenarios;
* :mod:`.traffic` - exact per-minute draws (counts, thresholds, sample p99s);
* :mod:`.ours` - the mixture harm test per metric (:mod:`~model_canary.streams.stats`);
* :mod:`.kayenta` and :mod:`.argo` - the two comparators;
* :mod:`.runner` and :mod:`.report` - running and reporting.
"""
