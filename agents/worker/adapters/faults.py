"""Fault injection for demos and tests: :class:`FaultInjector` wraps any adapter and makes a
share of its outputs fail and its batches slower, following a latency distribution parsed by
:func:`parse_latency`; with ``marked=True`` it also obeys fault markers in requests (see
:data:`MARKER`), which is how ``canary chaos`` breaks code on purpose.

>>> from model_canary.agents.worker.adapters.base import EchoAdapter, ModelInput
>>> faulty = FaultInjector(EchoAdapter(), parse_latency("fixed:1"), error_rate=1.0, seed=7)
>>> out = faulty.predict([ModelInput("r1", b"{}")])[0]
>>> out.error_type, out.extra_latency_ms  # its own 1 ms, already in the batch's time
('injected', 0.0)
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

from model_canary.agents.worker.adapters.base import (
    INJECTED,
    ModelAdapter,
    ModelInput,
    ModelOutput,
    error_output,
)
from model_canary.streams.errors import ConfigError

#: A model input (JSON) with this field asks a marked-fault injector for a fault:
#: ``{"inputs": [...], "canary_fault": "bad-output"}``.
MARKER = "canary_fault"
_MARKER_BYTES = json.dumps(MARKER).encode()
#: The faults a marked request can ask for.
#:
#: * ``bad-output``: an output of the wrong type (text where bytes are due), as from a buggy
#:   adapter: the worker raises while it publishes that request, in the middle of its batch;
#: * ``huge-output``: a 2 MiB output, more than the results topic (and the producer) takes;
#: * ``large-output``: a 700 KiB output, which fits the results topic's default limit but not a
#:   lowered one: the broker refuses the write (a produce error after the write was queued).
MARKED_FAULTS = {
    "bad-output": None,
    "huge-output": 2 * 1024 * 1024,
    "large-output": 700 * 1024,
}
LATENCY_FORMS = "fixed:MS, uniform:LOW,HIGH, lognormal:MEDIAN,SIGMA or normal:MEAN,SD (ms)"
_ARITY = {"fixed": 1, "uniform": 2, "lognormal": 2, "normal": 2}


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """A latency distribution in milliseconds; samples are never negative.

    >>> LatencySpec("uniform", (10.0, 30.0)).sample(random.Random(1)) <= 30.0
    True
    """

    kind: str
    params: tuple[float, ...]

    def sample(self, rng: random.Random) -> float:
        """One latency in milliseconds."""
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            return rng.uniform(*self.params)
        if self.kind == "lognormal":
            median, sigma = self.params
            return rng.lognormvariate(math.log(median), sigma) if median > 0 else 0.0
        mean, sd = self.params
        return max(0.0, rng.gauss(mean, sd))

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


def parse_latency(spec: str) -> LatencySpec:
    """Parse ``fixed:20``, ``uniform:10,30``, ``lognormal:50,0.5`` (median ms, sigma) or
    ``normal:50,10`` (mean ms, standard deviation); :class:`ConfigError` for anything else.

    >>> parse_latency("lognormal:50,0.5")
    LatencySpec(kind='lognormal', params=(50.0, 0.5))
    """
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in _ARITY:
        raise ConfigError(f"bad latency {spec!r}: expected {LATENCY_FORMS}")
    try:
        params = tuple(float(p) for p in rest.split(","))
    except ValueError:
        raise ConfigError(f"bad latency {spec!r}: expected {LATENCY_FORMS}") from None
    if len(params) != _ARITY[kind] or not all(math.isfinite(p) and p >= 0 for p in params):
        raise ConfigError(
            f"bad latency {spec!r}: {kind} takes {_ARITY[kind]} finite number(s) >= 0"
        )
    if kind == "uniform" and params[0] > params[1]:
        raise ConfigError(f"bad latency {spec!r}: uniform needs LOW <= HIGH")
    return LatencySpec(kind, params)


class FaultInjector:
    """Wraps ``adapter``: each output fails with probability ``error_rate`` (``error_type``
    ``"injected"``) and each item gets a latency sampled from ``latency``. The batch sleeps once
    for the largest sample, since the items of a batch are served in parallel; the worker's
    timing of the batch includes that sleep, so each item's ``extra_latency_ms`` is its own
    sample minus the largest (zero or negative) and the item reports the model's time plus its
    own sample. ``seed`` makes the faults repeatable.

    >>> from model_canary.agents.worker.adapters.base import EchoAdapter
    >>> FaultInjector(EchoAdapter(), None, error_rate=0.0).name
    'echo'
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        latency: LatencySpec | None = None,
        error_rate: float = 0.0,
        seed: int | None = None,
        *,
        marked: bool = False,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ConfigError(f"error rate must lie in 0..1, got {error_rate!r}")
        self.adapter = adapter
        self.name = adapter.name
        self.latency = latency
        self.error_rate = error_rate
        self.marked = marked
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """The wrapped adapter's outputs with faults applied (see the class docs)."""
        with self._lock:  # one draw sequence per batch, so a seed gives repeatable faults
            delays = [self.latency.sample(self._rng) if self.latency else 0.0 for _ in batch]
            failed = [self._rng.random() < self.error_rate for _ in batch]
        outputs = self.adapter.predict(batch)
        slept = max(delays, default=0.0)
        if slept > 0:
            time.sleep(slept / 1000.0)
        result: list[ModelOutput] = []
        for out, delay, fail in zip(outputs, delays, failed, strict=False):
            extra = out.extra_latency_ms + delay - slept
            if fail:
                result.append(error_output("injected fault", INJECTED, extra_latency_ms=extra))
            else:
                result.append(replace(out, extra_latency_ms=extra))
        if len(outputs) != len(batch):
            return outputs
        if self.marked:
            result = [_obey_marker(item, out) for item, out in zip(batch, result, strict=True)]
        return result

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.adapter.close()


def marked_fault(inputs: bytes) -> str | None:
    """The fault a model input asks for (see :data:`MARKED_FAULTS`), or ``None``.

    >>> marked_fault(b'{"inputs": [], "canary_fault": "huge-output"}')
    'huge-output'
    >>> marked_fault(b'{"inputs": []}') is None
    True
    """
    if _MARKER_BYTES not in inputs:  # the common case costs one substring search
        return None
    try:
        kind = json.loads(inputs).get(MARKER)
    except (ValueError, AttributeError):
        return None
    return kind if kind in MARKED_FAULTS else None


def _obey_marker(item: ModelInput, out: ModelOutput) -> ModelOutput:
    kind = marked_fault(item.inputs)
    if kind is None:
        return out
    size = MARKED_FAULTS[kind]
    if size is None:
        # Text where bytes are due: the worker fails when it encodes the result.
        return replace(out, outputs=cast(bytes, '{"outputs": "text, not bytes"}'))
    head, tail = b'{"outputs":[],"padding":"', b'"}'
    return replace(out, outputs=head + b"x" * (size - len(head) - len(tail)) + tail)
