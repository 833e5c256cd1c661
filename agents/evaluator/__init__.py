"""The evaluator agent: aggregates metric events and ground-truth labels per rollout and
decides, on the clock, to advance, hold, roll back or finalize each rollout."""
