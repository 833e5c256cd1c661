"""``python:package.module:function`` — a model that is a Python function, batch in, batch out.

The function receives a list with one value per input: the JSON-decoded body when the input's
content type is JSON, else the raw bytes. It returns a list of the same length; each item is

* a JSON value, sent as JSON: a ``str``, number or ``bool`` is itself the prediction; a
  ``dict`` has its prediction under ``"prediction"`` or, for an Open Inference Protocol
  response, in ``outputs[0].data[0]``; a ``list`` has none;
* ``bytes``, sent as ``application/octet-stream``;
* a ready :class:`ModelOutput`;
* an ``Exception`` instance: an error for that input (the others are answered).

The prediction (as text) is what ground-truth labels are compared with. ``None``, NaN and
values JSON cannot hold are ``"bad-output"`` errors. An input whose JSON body does not decode
gets a ``"bad-input"`` error and is left out of the call.

>>> def double(batch):
...     return [{"outputs": [{"name": "y", "data": [2 * x]}]} for x in batch]
>>> adapter = PythonCallableAdapter(double, name="double")
>>> out = adapter.predict([ModelInput("r1", b"21")])
>>> out[0].outputs, out[0].prediction
(b'{"outputs":[{"name":"y","data":[42]}]}', '42')
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_canary.agents.worker.adapters.base import (
    BAD_INPUT,
    BAD_OUTPUT,
    EXCEPTION,
    ModelInput,
    ModelOutput,
    describe,
    error_output,
)
from model_canary.agents.worker.adapters.oip import decode_json, encode_json, is_json, prediction_of
from model_canary.streams.errors import ConfigError, DecodeError, ModelContractError
from model_canary.streams.headers import JSON

BatchFunction = Callable[[list[Any]], Sequence[Any]]
OCTET_STREAM = "application/octet-stream"


class PythonCallableAdapter:
    """Runs an in-process batch function (see the module docs for what it takes and returns).
    A whole-batch problem (the function raises, or returns the wrong number of items) raises
    from :meth:`predict`; :func:`~model_canary.agents.worker.adapters.base.predict_safely` turns it
    into errors.

    >>> adapter = PythonCallableAdapter(lambda batch: [ValueError("no") for _ in batch])
    >>> adapter.predict([ModelInput("r1", b"{}")])[0].error
    'ValueError: no'
    """

    def __init__(self, function: BatchFunction, name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__qualname__", None) or "python"

    @classmethod
    def from_reference(
        cls, reference: str, search_path: Sequence[Path] | None = None
    ) -> PythonCallableAdapter:
        """Import ``package.module:function`` (the function may be a dotted attribute path such
        as ``module:Model.predict_batch``); :class:`ConfigError` when that fails.

        The module is looked for first in the folders of ``search_path`` (default: the working
        directory), then where Python looks anyway (installed packages, ``PYTHONPATH``).

        >>> PythonCallableAdapter.from_reference("json:dumps").name
        'json:dumps'
        """
        module_name, sep, attr_path = reference.partition(":")
        if not sep or not module_name or not attr_path:
            raise ConfigError(
                f"python adapter needs 'python:package.module:function', got 'python:{reference}'"
            )
        folders = [p.resolve() for p in (search_path if search_path is not None else [Path()])]
        for folder in reversed(folders):
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            where = ", ".join(str(f) for f in folders) or "nowhere else"
            raise ConfigError(
                f"cannot import {module_name!r}: {describe(exc)} (looked in {where}, then the "
                "installed packages; give the module's folder with --path or run from it)"
            ) from exc
        except Exception as exc:  # whatever the module raises on import
            raise ConfigError(f"cannot import {module_name!r}: {describe(exc)}") from exc
        for part in attr_path.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigError(f"{module_name!r} has no attribute {attr_path!r}") from None
        if not callable(target):
            raise ConfigError(f"{reference!r} is a {type(target).__name__}, not a function")
        return cls(target, name=reference)

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """Decode the inputs, call the function once, convert what it returns."""
        outputs: list[ModelOutput | None] = [None] * len(batch)
        values: list[Any] = []
        positions: list[int] = []
        for i, item in enumerate(batch):
            if not is_json(item.content_type):
                values.append(item.inputs)
                positions.append(i)
                continue
            try:
                values.append(decode_json(item.inputs))
            except DecodeError as exc:
                outputs[i] = error_output(exc.detail, BAD_INPUT)
            else:
                positions.append(i)
        if values:
            results = self.function(values)
            if not isinstance(results, Sequence) or isinstance(results, str | bytes):
                raise ModelContractError(
                    f"{self.name} returned {type(results).__name__}, not a list"
                )
            if len(results) != len(values):
                raise ModelContractError(
                    f"{self.name} returned {len(results)} items for {len(values)}"
                )
            for i, result in zip(positions, results, strict=True):
                outputs[i] = _to_output(result)
        return [out for out in outputs if out is not None]

    def close(self) -> None:
        """Nothing to release; the function stays imported."""


def _to_output(result: Any) -> ModelOutput:
    if isinstance(result, ModelOutput):
        return result
    if isinstance(result, BaseException):
        return error_output(describe(result), EXCEPTION)
    if isinstance(result, bytes | bytearray):
        return ModelOutput(bytes(result), OCTET_STREAM)
    if result is None:
        return error_output("the function returned None for this input", BAD_OUTPUT)
    try:
        body = encode_json(result)
    except (TypeError, ValueError) as exc:
        return error_output(f"result is not JSON-serialisable: {exc}", BAD_OUTPUT)
    return ModelOutput(body, JSON, prediction=_prediction(result))


def _prediction(result: Any) -> str | None:
    """The label a result predicts, as text (see the module docs).

    >>> _prediction("spam"), _prediction(2), _prediction(True), _prediction({"prediction": 0.5})
    ('spam', '2', 'true', '0.5')
    """
    if isinstance(result, dict):
        if "prediction" in result:
            return _prediction(result["prediction"])
        return prediction_of(result)
    if isinstance(result, str):
        return result
    if isinstance(result, bool | int | float):
        return encode_json(result).decode()
    return None
