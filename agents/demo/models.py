"""Two real scikit-learn models for the demo, trained on the iris data set that ships with
scikit-learn: a baseline v1 and a candidate v2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


@dataclass(frozen=True, slots=True)
class DemoData:
    """Held-out rows (features and true labels) the load generator sends."""

    features: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]


def train(folder: Path, seed: int = 7) -> tuple[Path, Path, DemoData]:
    """Fit v1 (a weakly regularised logistic regression on two features) and v2 (on all four
    features) and save them with joblib; returns both paths and the held-out data."""
    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.5, random_state=seed, stratify=iris.target
    )
    v1 = _TwoFeatures(LogisticRegression(max_iter=500, C=0.05).fit(x_train[:, :2], y_train))
    v2 = LogisticRegression(max_iter=500).fit(x_train, y_train)
    folder.mkdir(parents=True, exist_ok=True)
    p1, p2 = folder / "iris-v1.joblib", folder / "iris-v2.joblib"
    joblib.dump(v1, p1)
    joblib.dump(v2, p2)
    return p1, p2, DemoData(x_test, y_test)


class _TwoFeatures:
    """A weaker baseline: it only looks at the sepal measurements."""

    n_features_in_ = 4

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = self.model.predict(np.asarray(x)[:, :2])
        return result
