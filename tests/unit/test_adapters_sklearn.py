"""sklearn:/path/model.joblib adapters: true batching over a micro-batch of OIP requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sklearn", reason="the sklearn adapter needs scikit-learn")

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from model_canary.agents.worker.adapters import BAD_INPUT, EXCEPTION, ModelInput, load_adapter
from model_canary.agents.worker.adapters.sklearn_model import SklearnAdapter
from model_canary.streams.errors import ConfigError


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    data = load_iris()
    return data.data, data.target


@pytest.fixture
def model_path(tmp_path: Path, iris: tuple[Any, Any]) -> Path:
    x, y = iris
    path = tmp_path / "iris-v1.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


class Spy:
    """Counts calls to the wrapped predict and remembers their row counts."""

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.rows: list[int] = []

    def __call__(self, x: Any) -> Any:
        self.rows.append(len(x))
        return self.predict(x)


def request(rows: Any, *, flat: bool = True, datatype: str = "FP64") -> bytes:
    arr = np.asarray(rows, dtype=float)
    data = arr.ravel().tolist() if flat else arr.tolist()
    tensor = {"name": "input-0", "shape": list(arr.shape), "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def load(path: Path) -> tuple[SklearnAdapter, Spy]:
    adapter = load_adapter(f"sklearn:{path}")
    assert isinstance(adapter, SklearnAdapter)
    spy = Spy(adapter.model.predict)
    adapter.model.predict = spy
    return adapter, spy


def test_batch_predictions_match_model_and_predict_runs_once(
    model_path: Path, iris: tuple[Any, Any]
) -> None:
    x, _ = iris
    adapter, spy = load(model_path)
    expected = joblib.load(model_path).predict(x)
    # requests of 1, 3 and 5 rows, as [k], [n, k] flat and [n, k] nested, FP64/FP32 mixed
    slices = [(0, 1), (49, 52), (97, 102), (140, 141)]
    batch = [
        ModelInput("a", request(x[0])),
        ModelInput("b", request(x[49:52], flat=False)),
        ModelInput("c", request(x[97:102], datatype="FP32")),
        ModelInput("d", request(x[140:141])),
    ]
    out = adapter.predict(batch)
    assert spy.rows == [1 + 3 + 5 + 1]
    assert adapter.name == "iris-v1"
    for (start, stop), item, result in zip(slices, batch, out, strict=True):
        body = json.loads(result.outputs)
        assert body["model_name"] == "iris-v1" and body["id"] == item.request_id
        tensor = body["outputs"][0]
        assert tensor["name"] == "predict" and tensor["datatype"] == "INT64"
        assert tensor["shape"] == [stop - start]
        want = joblib.load(model_path).predict(x[start:stop].astype(np.float32))
        assert tensor["data"] == want.tolist() == expected[start:stop].tolist()
        assert result.prediction == str(expected[start])
        assert result.ok and result.content_type == "application/json"


def test_bad_inputs_fail_alone(model_path: Path, iris: tuple[Any, Any]) -> None:
    x, _ = iris
    adapter, spy = load(model_path)
    two_tensors = json.loads(request(x[0]))
    two_tensors["inputs"].append(two_tensors["inputs"][0])
    wrong_size = json.loads(request(x[0]))
    wrong_size["inputs"][0]["shape"] = [5]
    batch = [
        ModelInput("good-1", request(x[0])),
        ModelInput("not-json", b"\x00garbage"),
        ModelInput("three-features", request(x[0][:3])),
        ModelInput("wrong-size", json.dumps(wrong_size).encode()),
        ModelInput("bytes", request(x[0], datatype="BYTES")),
        ModelInput("two-tensors", json.dumps(two_tensors).encode()),
        ModelInput("rank-3", request([[x[0]]])),
        ModelInput("strings", request(x[0]).replace(b"5.1", b'"a"')),
        ModelInput("no-inputs", b'{"inputs": []}'),
        ModelInput("good-2", request(x[100])),
    ]
    out = adapter.predict(batch)
    assert [o.ok for o in out] == [True] + [False] * 8 + [True]
    assert {o.error_type for o in out[1:-1]} == {BAD_INPUT}
    assert out[2].error == "model expects 4 features, got 3"
    assert spy.rows == [2]


def test_a_row_the_model_rejects_fails_only_its_request(
    model_path: Path, iris: tuple[Any, Any]
) -> None:
    x, _ = iris
    adapter, spy = load(model_path)
    poison = request(x[0]).replace(b"5.1", b"NaN")  # JSON NaN literal: decodes, model refuses
    out = adapter.predict([ModelInput("a", request(x[0])), ModelInput("b", poison)])
    assert out[0].ok and out[0].prediction == "0"
    assert out[1].error_type == EXCEPTION and "NaN" in (out[1].error or "")
    assert spy.rows == [2, 1, 1]  # batched try, then one by one


def test_string_labels_become_bytes_tensors(tmp_path: Path, iris: tuple[Any, Any]) -> None:
    x, y = iris
    names = load_iris().target_names[y]
    path = tmp_path / "iris-named.pkl"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, names), path)
    out = load_adapter(f"sklearn:{path}").predict([ModelInput("r", request(x[0:2]))])
    tensor = json.loads(out[0].outputs)["outputs"][0]
    assert tensor["datatype"] == "BYTES" and tensor["data"] == ["setosa", "setosa"]
    assert out[0].prediction == "setosa"


def test_models_without_n_features_are_grouped_by_width() -> None:
    class Sum:
        calls: list[int] = []  # noqa: RUF012

        def predict(self, x: Any) -> Any:
            self.calls.append(x.shape[1])
            return x.sum(axis=1)

    adapter = SklearnAdapter(Sum(), name="sum")
    batch = [
        ModelInput("a", request([1, 2])),
        ModelInput("b", request([1, 2, 3])),
        ModelInput("c", request([3, 4])),
    ]
    out = adapter.predict(batch)
    assert [o.prediction for o in out] == ["3.0", "6.0", "7.0"]
    assert sorted(Sum.calls) == [2, 3]
    assert json.loads(out[0].outputs)["outputs"][0]["datatype"] == "FP64"


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_adapter(f"sklearn:{tmp_path / 'missing.joblib'}")
    with pytest.raises(ConfigError, match=r"\.joblib or \.pkl"):
        load_adapter(f"sklearn:{tmp_path / 'model.onnx'}")
    not_a_model = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2]}, not_a_model)
    with pytest.raises(ConfigError, match="no predict method"):
        load_adapter(f"sklearn:{not_a_model}")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="cannot load"):
        load_adapter(f"sklearn:{garbage}")
