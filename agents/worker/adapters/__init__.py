"""Model adapters: how a model worker runs a model on a micro-batch of requests.

An adapter turns a batch of :class:`ModelInput` (by default Open Inference Protocol v2 JSON
requests) into one :class:`ModelOutput` per input; the worker calls it through
:func:`predict_safely`, so exceptions, hangs and malformed results become error outputs.
:func:`load_adapter` builds one from a spec string (``python:``, ``sklearn:``, ``oip:``,
``openai:``, ``noop:``); :class:`FaultInjector` adds errors and latency for demos.

>>> adapter = load_adapter("noop:")
>>> predict_safely(adapter, [ModelInput("r1", b"{}")], timeout_s=1.0)[0].ok
True
"""

from model_canary.agents.worker.adapters.base import (
    BAD_INPUT,
    BAD_OUTPUT,
    CONNECTION,
    EXCEPTION,
    INJECTED,
    TIMEOUT,
    EchoAdapter,
    ModelAdapter,
    ModelInput,
    ModelOutput,
    ModelRunner,
    error_output,
    http_error_type,
    predict_safely,
)
from model_canary.agents.worker.adapters.faults import FaultInjector, LatencySpec, parse_latency
from model_canary.agents.worker.adapters.loader import load_adapter
from model_canary.agents.worker.adapters.noop import NoopAdapter

__all__ = [
    "BAD_INPUT",
    "BAD_OUTPUT",
    "CONNECTION",
    "EXCEPTION",
    "INJECTED",
    "TIMEOUT",
    "EchoAdapter",
    "FaultInjector",
    "LatencySpec",
    "ModelAdapter",
    "ModelInput",
    "ModelOutput",
    "ModelRunner",
    "NoopAdapter",
    "error_output",
    "http_error_type",
    "load_adapter",
    "parse_latency",
    "predict_safely",
]
