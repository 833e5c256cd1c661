"""``sklearn:/path/to/model.joblib`` — a scikit-learn estimator (anything with ``predict``)
loaded with joblib, run with true batching: the rows of every request in a micro-batch are
stacked into one array and ``model.predict`` is called once.

Each input is an OIP request with one input tensor of shape ``[n, k]`` or ``[k]`` and a numeric
datatype (``FP64``, ``FP32``, ``INT64``...). The output is an OIP response with one tensor
``predict`` of shape ``[n]``; the prediction is the first predicted value as text. An input that
is not JSON or has the wrong shape or feature count fails alone (``"bad-input"``); should the
stacked call raise, each request is retried alone so one poison row fails only its request.

>>> from sklearn.dummy import DummyClassifier
>>> model = DummyClassifier(strategy="constant", constant=7).fit([[0.0], [1.0]], [7, 3])
>>> body = b'{"inputs":[{"name":"input-0","shape":[1],"datatype":"FP64","data":[0.5]}]}'
>>> SklearnAdapter(model, name="dummy").predict([ModelInput("r1", body)])[0].prediction
'7'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_canary.agents.extras import require
from model_canary.agents.worker.adapters.base import (
    BAD_INPUT,
    BAD_OUTPUT,
    EXCEPTION,
    ModelInput,
    ModelOutput,
    describe,
    error_output,
)
from model_canary.agents.worker.adapters.oip import (
    NUMERIC_DTYPES,
    output_tensor,
    parse_request,
    response_body,
)
from model_canary.streams.errors import (
    ConfigError,
    DecodeError,
    InvalidRecordError,
    ModelContractError,
)
from model_canary.streams.headers import JSON

# numpy dtype kind -> OIP datatype of the predictions.
_KIND_DATATYPES = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}


class SklearnAdapter:
    """A fitted estimator behind the OIP batch call (see the module docs).

    ``n_features`` defaults to the model's ``n_features_in_``; without it, requests are grouped
    by feature count and ``predict`` is called once per group.
    """

    def __init__(self, model: Any, name: str, n_features: int | None = None) -> None:
        if not callable(getattr(model, "predict", None)):
            raise ConfigError(f"{type(model).__name__} has no predict method")
        self.model = model
        self.name = name
        fitted = getattr(model, "n_features_in_", None)
        self.n_features = n_features if n_features is not None else _int_or_none(fitted)

    @classmethod
    def from_path(cls, path: str | Path) -> SklearnAdapter:
        """Load a ``.joblib`` or ``.pkl`` file with joblib; :class:`ConfigError` when the file is
        missing, joblib is not installed or the object has no ``predict``.

        ::

            adapter = SklearnAdapter.from_path("/models/iris-v2.joblib")  # name "iris-v2"
        """
        file = Path(path)
        if file.suffix not in (".joblib", ".pkl"):
            raise ConfigError(f"sklearn model must be a .joblib or .pkl file, got {str(file)!r}")
        if not file.is_file():
            raise ConfigError(f"sklearn model file {str(file)!r} does not exist")
        require("sklearn", "the sklearn adapter")
        joblib: Any = importlib.import_module("joblib")
        try:
            model = joblib.load(file)
        except Exception as exc:  # unpickling can raise nearly anything
            raise ConfigError(f"cannot load {str(file)!r}: {describe(exc)}") from exc
        return cls(model, name=file.stem)

    def predict(self, batch: Sequence[ModelInput]) -> list[ModelOutput]:
        """Parse every request, call ``model.predict`` once per feature count, split back."""
        outputs: list[ModelOutput | None] = [None] * len(batch)
        groups: dict[int, list[tuple[int, np.ndarray[Any, Any]]]] = {}
        for i, item in enumerate(batch):
            try:
                rows = self._rows(item)
            except (DecodeError, ValueError, TypeError, OverflowError) as exc:
                message = exc.detail if isinstance(exc, DecodeError) else describe(exc)
                outputs[i] = error_output(message, BAD_INPUT)
            else:
                groups.setdefault(rows.shape[1], []).append((i, rows))
        for members in groups.values():
            for i, out in self._predict_group(batch, members):
                outputs[i] = out
        return [out for out in outputs if out is not None]

    def close(self) -> None:
        """Drop the model reference."""
        self.model = None

    def _rows(self, item: ModelInput) -> np.ndarray[Any, Any]:
        request = parse_request(item.inputs)
        if len(request.inputs) != 1:
            raise InvalidRecordError(f"expected one input tensor, got {len(request.inputs)}")
        tensor = request.inputs[0]
        dtype = NUMERIC_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidRecordError(f"unsupported datatype {tensor.datatype!r}")
        if len(tensor.shape) not in (1, 2):
            raise InvalidRecordError(f"shape must be [n, k] or [k], got {list(tensor.shape)}")
        values = np.asarray(tensor.data, dtype=dtype)
        if values.size != tensor.size:
            raise InvalidRecordError(f"shape {list(tensor.shape)} needs {tensor.size} values")
        rows = values.reshape(tensor.shape if len(tensor.shape) == 2 else (1, tensor.shape[0]))
        if rows.shape[0] == 0:
            raise InvalidRecordError("no rows to predict")
        if self.n_features is not None and rows.shape[1] != self.n_features:
            raise InvalidRecordError(
                f"model expects {self.n_features} features, got {rows.shape[1]}"
            )
        return rows

    def _predict_group(
        self, batch: Sequence[ModelInput], members: list[tuple[int, np.ndarray[Any, Any]]]
    ) -> list[tuple[int, ModelOutput]]:
        try:
            predicted = np.asarray(self.model.predict(np.concatenate([r for _, r in members])))
            if predicted.shape[:1] != (sum(len(r) for _, r in members),):
                raise ModelContractError(f"predict returned shape {list(predicted.shape)}")
        except Exception as exc:
            if len(members) == 1:
                return [(members[0][0], error_output(describe(exc), EXCEPTION))]
            return [out for m in members for out in self._predict_group(batch, [m])]
        results: list[tuple[int, ModelOutput]] = []
        start = 0
        for i, rows in members:
            part = predicted[start : start + len(rows)]
            start += len(rows)
            results.append((i, self._response(batch[i].request_id, part)))
        return results

    def _response(self, request_id: str, predicted: np.ndarray[Any, Any]) -> ModelOutput:
        datatype = _KIND_DATATYPES.get(predicted.dtype.kind, "BYTES")
        flat = predicted.ravel().tolist()
        if datatype == "BYTES":
            flat = [str(v) for v in flat]
        tensor = output_tensor("predict", flat, datatype, shape=predicted.shape)
        try:
            body = response_body(self.name, request_id, [tensor])
        except ValueError as exc:  # NaN or infinity in a regression output
            return error_output(f"prediction is not valid JSON: {exc}", BAD_OUTPUT)
        return ModelOutput(body, JSON, prediction=str(flat[0]) if flat else None)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | np.integer) else None
