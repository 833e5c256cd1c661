"""python:package.module:function adapters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from model_canary.agents.worker.adapters import (
    BAD_INPUT,
    BAD_OUTPUT,
    EXCEPTION,
    ModelInput,
    ModelOutput,
)
from model_canary.agents.worker.adapters.loader import load_adapter
from model_canary.agents.worker.adapters.python_callable import PythonCallableAdapter
from model_canary.streams.errors import ConfigError

CALLS: list[list[Any]] = []
NOT_CALLABLE = 42


def mixed(batch: list[Any]) -> list[Any]:
    """Returns one of each supported result kind, chosen by the input's "kind"."""
    CALLS.append(list(batch))
    out: list[Any] = []
    for value in batch:
        if isinstance(value, bytes):
            out.append(value.upper())
            continue
        kind = value["kind"]
        if kind == "oip":
            out.append({"id": "x", "outputs": [{"name": "y", "data": [value["x"] * 2]}]})
        elif kind == "plain":
            out.append({"answer": value["x"]})
        elif kind == "error":
            out.append(ValueError(f"cannot score {value['x']}"))
        elif kind == "output":
            out.append(ModelOutput(b"ready", "text/plain", prediction="p"))
        elif kind == "nan":
            out.append({"x": float("nan")})
        elif kind == "labelled":
            out.append({"prediction": "spam", "score": 0.9})
        elif kind == "none":
            out.append(None)
        else:
            out.append(12)
    return out


class Models:
    @staticmethod
    def predict_batch(batch: list[Any]) -> list[Any]:
        return [{"outputs": [{"data": [len(batch)]}]} for _ in batch]


def short(batch: list[Any]) -> list[Any]:
    return batch[:-1]


def raising(batch: list[Any]) -> list[Any]:
    raise RuntimeError("boom")


def item(request_id: str, value: Any) -> ModelInput:
    return ModelInput(request_id, json.dumps(value).encode())


def test_each_result_kind_is_converted() -> None:
    adapter = load_adapter(f"python:{__name__}:mixed")
    assert adapter.name == f"{__name__}:mixed"
    CALLS.clear()
    batch = [
        item("r0", {"kind": "oip", "x": 21}),
        item("r1", {"kind": "plain", "x": "a"}),
        item("r2", {"kind": "error", "x": 3}),
        ModelInput("r3", b"raw", "application/octet-stream"),
        item("r4", {"kind": "output"}),
        item("r5", {"kind": "int"}),
        item("r6", {"kind": "nan"}),
        item("r7", {"kind": "labelled"}),
        item("r8", {"kind": "none"}),
    ]
    out = adapter.predict(batch)
    assert len(CALLS) == 1 and len(CALLS[0]) == len(batch)
    assert CALLS[0][3] == b"raw"  # non-JSON inputs arrive as bytes
    assert json.loads(out[0].outputs)["outputs"][0]["data"] == [42]
    assert out[0].prediction == "42" and out[0].ok
    assert json.loads(out[1].outputs) == {"answer": "a"} and out[1].prediction is None
    assert (out[2].error_type, out[2].error) == (EXCEPTION, "ValueError: cannot score 3")
    assert (out[3].outputs, out[3].content_type) == (b"RAW", "application/octet-stream")
    assert out[4] == ModelOutput(b"ready", "text/plain", prediction="p")
    assert (out[5].outputs, out[5].prediction, out[5].ok) == (b"12", "12", True)
    assert out[6].error_type == BAD_OUTPUT
    assert (out[7].prediction, json.loads(out[7].outputs)["score"]) == ("spam", 0.9)
    assert out[8].error_type == BAD_OUTPUT


def test_undecodable_json_fails_alone_and_is_left_out_of_the_call() -> None:
    adapter = PythonCallableAdapter(mixed)
    CALLS.clear()
    out = adapter.predict([item("r0", {"kind": "plain", "x": 1}), ModelInput("r1", b"{nope")])
    assert CALLS == [[{"kind": "plain", "x": 1}]]
    assert out[0].ok and out[1].error_type == BAD_INPUT


def test_all_inputs_undecodable_skips_the_call() -> None:
    CALLS.clear()
    out = PythonCallableAdapter(mixed).predict([ModelInput("r1", b"\xff")])
    assert CALLS == [] and out[0].error_type == BAD_INPUT


def test_dotted_attribute_path() -> None:
    adapter = load_adapter(f"python:{__name__}:Models.predict_batch")
    out = adapter.predict([item("a", {}), item("b", {})])
    assert [o.prediction for o in out] == ["2", "2"]


def test_whole_batch_problems_raise_for_predict_safely() -> None:
    with pytest.raises(ValueError, match="returned 1 items for 2"):
        PythonCallableAdapter(short).predict([item("a", 1), item("b", 2)])
    with pytest.raises(RuntimeError, match="boom"):
        PythonCallableAdapter(raising).predict([item("a", 1)])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("python:json", "package.module:function"),
        ("python::dumps", "package.module:function"),
        ("python:no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        (f"python:{__name__}:missing", "has no attribute 'missing'"),
        (f"python:{__name__}:NOT_CALLABLE", "not a function"),
    ],
)
def test_bad_references_are_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_adapter(spec)


def test_the_module_is_found_in_the_working_directory_or_the_given_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "my-model"
    home.mkdir()
    (home / "spam_detector_x1.py").write_text(
        "def predict(batch):\n    return ['spam' if 'win' in x['text'] else 'ham' for x in batch]\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # the adapter adds folders to it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError, match=r"give the module's folder with --path") as info:
        load_adapter("python:spam_detector_x1:predict")
    assert str(elsewhere) in str(info.value)
    given = load_adapter("python:spam_detector_x1:predict", search_path=[home])
    assert given.predict([item("r1", {"text": "win big"})])[0].prediction == "spam"
    sys.modules.pop("spam_detector_x1")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(home)])
    monkeypatch.chdir(home)  # run from the module's own folder: found there by default
    here = load_adapter("python:spam_detector_x1:predict")
    assert here.predict([item("r2", {"text": "hello"})])[0].prediction == "ham"
