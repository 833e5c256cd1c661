"""The ``canary sim`` benchmark: simulated rollouts, vectorised over replications with numpy.

* :mod:`streams.sim.scenarios` - the timeline and the A/A and regression scenarios;
* :mod:`streams.sim.traffic` - exact per-minute draws (counts, thresholds, sample p99s);
* :mod:`streams.sim.ours` - the mixture harm test per metric (:mod:`streams.stats`);
* :mod:`streams.sim.kayenta` and :mod:`streams.sim.argo` - the two comparators;
* :mod:`streams.sim.runner` and :mod:`streams.sim.report` - running and reporting.
"""
