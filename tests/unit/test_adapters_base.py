"""predict_safely: the guard that keeps a model from killing or hanging the worker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from model_canary.agents.worker.adapters import (
    BAD_OUTPUT,
    EXCEPTION,
    TIMEOUT,
    EchoAdapter,
    ModelInput,
    ModelOutput,
    ModelRunner,
    error_output,
    predict_safely,
)

BATCH = [ModelInput(f"r{i}", json.dumps({"i": i}).encode()) for i in range(3)]


class Raising(EchoAdapter):
    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        raise RuntimeError("model crashed")


class Exiting(EchoAdapter):
    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        raise SystemExit(3)


class Hanging(EchoAdapter):
    def __init__(self) -> None:
        super().__init__("hanging")
        self.release = threading.Event()
        self.finished = threading.Event()

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        self.release.wait(30)
        self.finished.set()
        return super().predict(batch)


class Shortchanging(EchoAdapter):
    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        return super().predict(batch)[:-1]


class Mistyped(EchoAdapter):
    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        out: list[object] = [*super().predict(batch)]
        out[1] = "not an output"
        return out  # type: ignore[return-value]


def test_good_adapter_passes_through_in_order() -> None:
    out = predict_safely(EchoAdapter(), BATCH, timeout_s=1.0)
    assert [o.outputs for o in out] == [item.inputs for item in BATCH]
    assert all(o.ok and o.error_type is None for o in out)


def test_exception_becomes_an_error_per_item() -> None:
    out = predict_safely(Raising(), BATCH, timeout_s=1.0)
    assert len(out) == len(BATCH)
    assert {o.error_type for o in out} == {EXCEPTION}
    assert out[0].error == "RuntimeError: model crashed"
    assert json.loads(out[0].outputs) == {"error": "RuntimeError: model crashed"}


def test_system_exit_in_the_model_does_not_escape() -> None:
    out = predict_safely(Exiting(), BATCH, timeout_s=1.0)
    assert {o.error_type for o in out} == {EXCEPTION}


def test_hanging_adapter_times_out_promptly_and_late_result_is_discarded() -> None:
    adapter = Hanging()
    started = time.monotonic()
    out = predict_safely(adapter, BATCH, timeout_s=0.2)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0
    assert [o.error_type for o in out] == [TIMEOUT] * len(BATCH)
    assert out[0].error is not None and "0.2 s" in out[0].error
    adapter.release.set()
    assert adapter.finished.wait(5)
    assert [o.error_type for o in out] == [TIMEOUT] * len(BATCH)  # nothing changed afterwards
    # the worker carries on with the next batch
    assert all(o.ok for o in predict_safely(adapter, BATCH, timeout_s=1.0))


def test_wrong_length_is_an_error_for_every_item() -> None:
    out = predict_safely(Shortchanging(), BATCH, timeout_s=1.0)
    assert [o.error_type for o in out] == [BAD_OUTPUT] * len(BATCH)
    assert out[0].error == "adapter returned 2 outputs for 3 inputs"


def test_non_output_item_fails_only_that_item() -> None:
    out = predict_safely(Mistyped(), BATCH, timeout_s=1.0)
    assert [o.error_type for o in out] == [None, BAD_OUTPUT, None]


def test_empty_batch_does_not_call_the_model() -> None:
    assert predict_safely(Raising(), [], timeout_s=1.0) == []


def test_error_output_truncates_long_messages() -> None:
    out = error_output("x" * 10_000, EXCEPTION)
    assert out.error is not None and len(out.error) == 500
    assert not out.ok


class ThreadNoting(EchoAdapter):
    def __init__(self) -> None:
        super().__init__("noting")
        self.threads: list[int] = []

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        self.threads.append(threading.get_ident())
        return super().predict(batch)


def test_a_runner_keeps_its_thread_from_batch_to_batch() -> None:
    adapter = ThreadNoting()
    runner = ModelRunner(adapter)
    for _ in range(5):
        assert all(o.ok for o in runner.predict(BATCH, timeout_s=5.0))
    assert len(set(adapter.threads)) == 1 and runner.threads == 1
    assert adapter.threads[0] != threading.get_ident()
    runner.close()


def test_a_runner_abandons_a_hung_call_and_serves_the_next_batch_on_a_new_thread() -> None:
    adapter = Hanging()
    runner = ModelRunner(adapter)
    out = runner.predict(BATCH, timeout_s=0.2)
    assert {o.error_type for o in out} == {TIMEOUT}
    adapter.release.set()  # the abandoned call returns; its answer is discarded
    assert adapter.finished.wait(10)
    assert all(o.ok for o in runner.predict(BATCH, timeout_s=5.0))
    assert runner.threads == 2
    assert {o.error_type for o in ModelRunner(Raising()).predict(BATCH, 1.0)} == {EXCEPTION}
    runner.close()
