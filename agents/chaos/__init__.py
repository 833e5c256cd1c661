"""The fault-injection suite: ``run_chaos(settings, options)`` kills, pauses and restarts
agents (and the local broker) under a steady load, then audits."""
