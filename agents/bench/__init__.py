"""Benchmarks of the data-plane agents against a minimal confluent-kafka passthrough.

``canary bench router`` and ``canary bench worker`` run on a real cluster, under a fresh topic
prefix, and print a table followed by one JSON line:

>>> # canary bench router --requests 200000        # prints ... {"router_msgs_per_s": ...}
>>> # canary bench worker --requests 50000         # prints ... {"worker_msgs_per_s": ...}

Modules: :mod:`.procs` (child processes and their memory), :mod:`.probe` (offsets seen from
outside), :mod:`.load` (producing requests), :mod:`.measure` (drain throughput, latency,
exactly-once checks), :mod:`.passthrough` (the reference), :mod:`.session` (topics and
contenders), :mod:`.router_bench`, :mod:`.worker_bench` and :mod:`.report`.
"""

from model_canary.streams.errors import CanaryError


class BenchError(CanaryError):
    """A benchmark could not run or measure: a contender died, timed out or lost messages."""
