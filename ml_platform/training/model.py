"""Model construction, training and held-out evaluation for anomaly detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml_platform.spec import ModelSpec


def build_pipeline(model: ModelSpec) -> Pipeline:
    """Preprocessing and model in one estimator, so serving applies exactly the training transform."""
    if model.algorithm != "isolation_forest":
        raise ValueError(f"unknown algorithm {model.algorithm!r} in the use case's model spec")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", IsolationForest(random_state=model.seed, **model.params)),
        ]
    )


def anomaly_scores(pipeline: Pipeline, features: pd.DataFrame) -> np.ndarray:
    """Higher is more anomalous; above 0 the model calls the row an anomaly."""
    return -pipeline.decision_function(features)


def evaluate(pipeline: Pipeline, features: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    scores = anomaly_scores(pipeline, features)
    predicted = (scores > 0).astype(int)
    metrics = {
        "test_rows": float(len(labels)),
        "test_anomaly_share": float(labels.mean()) if len(labels) else 0.0,
        "predicted_anomaly_share": float(predicted.mean()) if len(labels) else 0.0,
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
    }
    if 0 < labels.sum() < len(labels):
        metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        metrics["average_precision"] = float(average_precision_score(labels, scores))
    return metrics
