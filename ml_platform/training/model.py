"""The model: preprocessing and estimator in one scikit-learn Pipeline, built from the spec."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml_platform.spec import ModelSpec


def build_pipeline(model: ModelSpec, params: dict[str, Any] | None = None) -> Pipeline:
    """Preprocessing and model in one estimator, fit together on the train window only, so that
    serving applies exactly the training transform."""
    if model.algorithm != "isolation_forest":
        raise ValueError(f"unknown algorithm {model.algorithm!r} in the use case's model spec")
    chosen = {**model.params, **(params or {})}
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", IsolationForest(random_state=model.seed, n_jobs=1, **chosen)),
        ]
    )


def anomaly_scores(pipeline: Pipeline, features: pd.DataFrame) -> np.ndarray:
    """Higher is more anomalous; above 0 the model calls the row an anomaly."""
    return -pipeline.decision_function(features)
