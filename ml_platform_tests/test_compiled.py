"""Serving's compiled scoring (serving/compiled.py) gives scikit-learn's scores, or is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml_platform.serving.compiled import MAX_ROWS, CompiledIsolationForest, compile_model
from ml_platform.tasks import task_of
from ml_platform.usecases import get_use_case

NAMES = ("a", "b", "c", "d")
TASK = task_of(get_use_case("sensor_anomaly"))  # scores = -decision_function


def fitted(*steps) -> Pipeline:
    rng = np.random.default_rng(7)
    train = rng.normal(size=(2000, len(NAMES))) * [1.0, 10.0, 0.1, 1000.0] + [0.0, 50.0, -3.0, 1e4]
    train[rng.random(train.shape) < 0.05] = np.nan
    return Pipeline(list(steps)).fit(pd.DataFrame(train, columns=list(NAMES)))


def rows(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))) * [2.0, 20.0, 0.2, 2000.0] + [0.0, 50.0, -3.0, 1e4]
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


@pytest.mark.parametrize(
    "steps",
    [
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())],
        [("impute", SimpleImputer(strategy="mean"))],
        [("impute", SimpleImputer()), ("scale", StandardScaler(with_mean=False))],
    ],
    ids=["impute+scale", "impute", "scale-without-mean"],
)
@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_compiled_scores_equal_scikit_learns(steps, max_features):
    forest = IsolationForest(n_estimators=50, max_samples=256, max_features=max_features, random_state=3)
    pipeline = fitted(*steps, ("model", forest))
    compiled = compile_model(TASK, pipeline, NAMES)
    assert compiled is not None
    for n in (1, 7, MAX_ROWS, MAX_ROWS + 1):  # one row, a batch, and past the walk's limit
        x = rows(n, seed=n)
        expected = TASK.scores(pipeline, pd.DataFrame(x, columns=list(NAMES)))
        np.testing.assert_allclose(TASK.scores(compiled, x), expected, rtol=0, atol=1e-12)


def test_what_it_does_not_know_is_left_to_scikit_learn():
    classifier = fitted(("impute", SimpleImputer()), ("model", IsolationForest(random_state=0)))
    classifier.steps[-1] = ("model", RandomForestClassifier())
    assert compile_model(TASK, classifier, NAMES) is None
    with_indicator = fitted(("impute", SimpleImputer(add_indicator=True)), ("model", IsolationForest()))
    assert compile_model(TASK, with_indicator, NAMES) is None


def test_a_compiled_forest_that_disagrees_on_the_probe_rows_is_not_used(monkeypatch):
    forest = IsolationForest(n_estimators=20, random_state=0)
    pipeline = fitted(("impute", SimpleImputer()), ("model", forest))
    assert compile_model(TASK, pipeline, NAMES) is not None
    walk = CompiledIsolationForest.decision_function
    monkeypatch.setattr(CompiledIsolationForest, "decision_function", lambda self, x: walk(self, x) + 1e-6)
    assert compile_model(TASK, pipeline, NAMES) is None
