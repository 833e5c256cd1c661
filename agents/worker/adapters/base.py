"""What every model adapter speaks: one input and one output per request, a batch in and a
batch out, and :func:`predict_safely` (:class:`ModelRunner` for a stream of batches), the
guard the worker puts around every call.

>>> out = predict_safely(EchoAdapter(), [ModelInput("r1", b'{"x": 1}')], timeout_s=1.0)
>>> out[0].outputs, out[0].error
(b'{"x": 1}', None)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Protocol

from model_canary.streams.headers import JSON

# ``ModelOutput.error_type`` values; an HTTP status becomes ``http_error_type(status)``.
EXCEPTION = "exception"
TIMEOUT = "timeout"
BAD_INPUT = "bad-input"
BAD_OUTPUT = "bad-output"
CONNECTION = "connection"
INJECTED = "injected"

MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One request's model input; ``inputs`` is by default an Open Inference Protocol (KServe v2)
    JSON inference request body.

    >>> ModelInput("r1", b'{"inputs": []}').content_type
    'application/json'
    """

    request_id: str
    inputs: bytes
    content_type: str = JSON


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """One request's model output; ``outputs`` is by default an OIP v2 JSON inference response.

    ``error`` (a message) and ``error_type`` (a short class such as ``"timeout"``) are set when
    the model failed for this input; ``prediction`` is the predicted label as text, for joining
    with ground truth; ``extra_latency_ms`` corrects the batch's measured time for this item
    (a fault injector sleeps once per batch for its largest delay; items with a smaller one
    report less); ``measures`` are numbers the adapter read about this answer (a chat
    completion's ``prompt_tokens``, ``completion_tokens``, ``total_tokens``), carried on the
    result.

    >>> ModelOutput(b'{"outputs": []}', prediction="setosa").ok
    True
    """

    outputs: bytes
    content_type: str = JSON
    error: str | None = None
    error_type: str | None = None
    prediction: str | None = None
    extra_latency_ms: float = 0.0
    measures: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the model answered this input without an error."""
        return self.error is None


class ModelAdapter(Protocol):
    """A model behind a batch call. ``predict`` returns one output per input, in order, and does
    not raise for a problem with a single input (that input gets an error output instead).

    >>> adapter: ModelAdapter = EchoAdapter()
    >>> [o.outputs for o in adapter.predict([ModelInput("r1", b"{}")])]
    [b'{}']
    """

    name: str

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """Run the model on a micro-batch; same length and order as ``batch``."""
        ...

    def close(self) -> None:
        """Release connections, threads and memory; the adapter is not used afterwards."""
        ...


class EchoAdapter:
    """Returns each input unchanged; a stand-in for tests and examples.

    >>> EchoAdapter().predict([ModelInput("r1", b"abc", "text/plain")])[0].content_type
    'text/plain'
    """

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """Each input's bytes and content type, unchanged."""
        return [ModelOutput(item.inputs, item.content_type) for item in batch]

    def close(self) -> None:
        """Nothing to release."""


def http_error_type(status: int) -> str:
    """The ``error_type`` of an HTTP error status.

    >>> http_error_type(503)
    'http-503'
    """
    return f"http-{status}"


def error_output(message: str, error_type: str, *, extra_latency_ms: float = 0.0) -> ModelOutput:
    """An error output whose body is the OIP error shape ``{"error": message}``.

    >>> error_output("boom", EXCEPTION).outputs
    b'{"error":"boom"}'
    """
    message = message[:MAX_ERROR_CHARS]
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    return ModelOutput(
        body, JSON, error=message, error_type=error_type, extra_latency_ms=extra_latency_ms
    )


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for an exception, for error outputs.

    >>> describe(ValueError("bad"))
    'ValueError: bad'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def predict_safely(
    adapter: ModelAdapter, batch: Sequence[ModelInput], timeout_s: float
) -> list[ModelOutput]:
    """Call ``adapter.predict`` once so that nothing the model does can kill or hang the
    worker (a :class:`ModelRunner` used once: see there).

    An exception becomes an ``"exception"`` error for every item; no answer within
    ``timeout_s`` becomes a ``"timeout"`` error for every item (a late answer is discarded, the
    thread is abandoned); a result of the wrong length or type is a ``"bad-output"`` error for
    every item, a non-:class:`ModelOutput` item one for that item.

    >>> class Broken(EchoAdapter):
    ...     def predict(self, batch):
    ...         raise RuntimeError("model crashed")
    >>> [o.error_type for o in predict_safely(Broken(), [ModelInput("r1", b"{}")], 1.0)]
    ['exception']
    """
    runner = ModelRunner(adapter)
    try:
        return runner.predict(batch, timeout_s)
    finally:
        runner.close()


_Job = tuple[list[ModelInput], "Future[list[ModelOutput]]"] | None


class ModelRunner:
    """Runs ``adapter.predict`` in a thread of its own, kept from one batch to the next (a
    thread per batch costs more than a small batch's model call): :meth:`predict` is
    :func:`predict_safely` without that cost. A call that does not answer in time abandons its
    thread (it ends once the call returns, if ever); the next batch gets a new one.

    >>> runner = ModelRunner(EchoAdapter())
    >>> [o.outputs for o in runner.predict([ModelInput("r1", b"1"), ModelInput("r2", b"2")], 1.0)]
    [b'1', b'2']
    >>> runner.close()
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self._jobs: SimpleQueue[_Job] | None = None
        #: Threads started so far (one, unless calls timed out).
        self.threads = 0

    def predict(self, batch: Sequence[ModelInput], timeout_s: float) -> list[ModelOutput]:
        """The adapter's outputs for ``batch``, or an error output for every item when it
        raised, timed out or answered with the wrong length or type."""
        if not batch:
            return []
        items = list(batch)
        future: Future[list[ModelOutput]] = Future()
        jobs = self._jobs if self._jobs is not None else self._start()
        jobs.put((items, future))
        try:
            result = future.result(timeout=timeout_s)
        except FutureTimeoutError:
            jobs.put(None)  # the stuck thread ends once its call returns
            self._jobs = None
            return _all_failed(len(items), f"model did not answer within {timeout_s:g} s", TIMEOUT)
        except Exception as exc:
            return _all_failed(len(items), describe(exc), EXCEPTION)
        return _checked(result, len(items))

    def close(self) -> None:
        """Let the thread end (it does once its current call, if any, returns)."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    def _start(self) -> SimpleQueue[_Job]:
        jobs: SimpleQueue[_Job] = SimpleQueue()
        thread = threading.Thread(
            target=self._serve, args=(jobs,), name=f"predict-{self.adapter.name}", daemon=True
        )
        thread.start()
        self.threads += 1
        self._jobs = jobs
        return jobs

    def _serve(self, jobs: SimpleQueue[_Job]) -> None:
        while (job := jobs.get()) is not None:
            items, future = job
            try:
                result = self.adapter.predict(items)
            except Exception as exc:
                future.set_exception(exc)
            except BaseException as exc:  # SystemExit and the like must not escape as such
                future.set_exception(RuntimeError(describe(exc)))
            else:
                future.set_result(result)


def _checked(result: object, expected: int) -> list[ModelOutput]:
    if not isinstance(result, list):
        message = f"adapter returned {type(result).__name__}, not a list"
        return _all_failed(expected, message, BAD_OUTPUT)
    if len(result) != expected:
        message = f"adapter returned {len(result)} outputs for {expected} inputs"
        return _all_failed(expected, message, BAD_OUTPUT)
    return [
        out
        if isinstance(out, ModelOutput)
        else error_output(f"adapter returned {type(out).__name__}, not a ModelOutput", BAD_OUTPUT)
        for out in result
    ]


def _all_failed(count: int, message: str, error_type: str) -> list[ModelOutput]:
    out = error_output(message, error_type)
    return [out] * count
