"""Real scikit-learn models for the demo, trained on the iris data set that ships with
scikit-learn: a baseline v1, a better candidate v2, and a broken candidate for the accuracy
regression. They need the ``sklearn`` extra (``pip install 'model-canary[sklearn]'``); without
it :func:`write_models` and :func:`held_out` raise
:class:`~model_canary.agents.extras.MissingExtraError`.

>>> paths = write_models(Path("/tmp/canary-models"))  # doctest: +SKIP
>>> sorted(p.name for p in paths.values())  # doctest: +SKIP
['iris-v1.joblib', 'iris-v2-broken.joblib', 'iris-v2.joblib']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_canary.agents.extras import require

#: File names under the output folder, by role.
FILES = {"v1": "iris-v1.joblib", "v2": "iris-v2.joblib", "broken": "iris-v2-broken.joblib"}


@dataclass(frozen=True, slots=True)
class DemoData:
    """Held-out rows (features and true labels) the load generator sends."""

    features: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]


def held_out(seed: int = 7) -> DemoData:
    """The half of iris the models never saw (the load generator's rows)."""
    return _split(seed)[1]


def write_models(folder: Path, seed: int = 7, *, broken: bool = True) -> dict[str, Path]:
    """Fit and save v1 (a weakly regularised logistic regression on the two sepal features,
    about 77% accurate), v2 (all four features, about 95%) and, with ``broken``, a v2 whose
    class indices are shifted by one (a label-encoding bug: almost always wrong)."""
    require("sklearn", "the demo's models")
    import joblib
    from sklearn.linear_model import LogisticRegression

    train, _test = _split(seed)
    x, y = train.features, train.labels
    models: dict[str, Any] = {
        "v1": _Columns(LogisticRegression(max_iter=500, C=0.05).fit(x[:, :2], y), 2),
        "v2": LogisticRegression(max_iter=500).fit(x, y),
    }
    if broken:
        models["broken"] = LogisticRegression(max_iter=500).fit(x, (y + 1) % 3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, model in models.items():
        paths[role] = folder / FILES[role]
        joblib.dump(model, paths[role])
    return paths


def _split(seed: int) -> tuple[DemoData, DemoData]:
    require("sklearn", "the iris data")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.5, random_state=seed, stratify=iris.target
    )
    return DemoData(x_train, y_train), DemoData(x_test, y_test)


class _Columns:
    """A weaker baseline: it only looks at the first ``n`` (sepal) measurements. Being a
    module-level class, joblib can load it in the worker process."""

    n_features_in_ = 4

    def __init__(self, model: Any, n: int) -> None:
        self.model = model
        self.n = n

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = self.model.predict(np.asarray(x)[:, : self.n])
        return result
