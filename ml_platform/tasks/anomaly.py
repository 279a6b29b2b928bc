"""Anomaly detection: fit without labels, score how unusual each row is, flag the unusual ones.

Outputs: ``anomaly_score`` (higher is more anomalous) and ``is_anomaly`` (the score above 0, the
estimator's own threshold, set by its ``contamination``). Labels (anomaly windows or per-event
0 / 1 labels) are used to choose parameters and to judge, never to fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml_platform.tasks import binary
from ml_platform.tasks.base import Estimator, Metric, Output, Task


class AnomalyDetection(binary.ZeroOneLabels, Task):
    name = "anomaly_detection"
    outputs = (
        Output("anomaly_score", "FP64", "higher is more anomalous"),
        Output("is_anomaly", "BOOL", "the score above 0, the estimator's own threshold"),
    )
    score_output = "anomaly_score"
    decision_output = "is_anomaly"
    estimators = {
        "isolation_forest": Estimator(
            "isolation_forest",
            "sklearn.ensemble.IsolationForest",
            defaults={"n_jobs": 1},
            search_space={
                "n_estimators": (100, 200),
                "max_samples": (256, 512),
                "contamination": (0.01, 0.02),
            },
        )
    }
    scaled = frozenset({"isolation_forest"})
    metrics = (
        Metric("roc_auc"),
        Metric("average_precision"),
        Metric("precision"),
        Metric("recall"),
        Metric("f1"),
        Metric("window_recall", comparable=False),
    )
    default_selection_metric = "average_precision"
    trusted_types = ("sklearn.tree._tree.Tree", "numpy.dtype")
    supervised = False

    def scores(self, model: Any, features: Any) -> np.ndarray:
        return -model.decision_function(features)

    def decisions(self, model: Any, scores: np.ndarray) -> np.ndarray:
        return scores > 0

    def columns(self, model: Any, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {"anomaly_score": scores.astype(float), "is_anomaly": self.decisions(model, scores)}

    def evaluate(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, groups: np.ndarray | None
    ) -> dict[str, float]:
        labels = np.asarray(labels).astype(int)
        decided = np.asarray(decisions).astype(int)
        return {
            "rows": float(len(labels)),
            "anomaly_share": float(labels.mean()) if len(labels) else 0.0,
            "predicted_anomaly_share": float(decided.mean()) if len(labels) else 0.0,
            **binary.threshold_metrics(decided, labels),
            **binary.ranking_metrics(scores, labels),
            **binary.window_recall(decided, groups),
        }

    def weighted(
        self, scores: np.ndarray, decisions: np.ndarray | None, labels: np.ndarray, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {
            **binary.weighted_ranking(scores, labels, weights),
            **binary.weighted_at_threshold(decisions, labels, weights),
        }

    def selection_rows(
        self, features: Any, labels: np.ndarray, events: np.ndarray | None, seed: int
    ) -> tuple[Any, np.ndarray, np.ndarray | None, str]:
        """The labelled anomaly windows when validation holds some; else injected anomalies."""
        if 0 < labels.sum() < len(labels):
            return features, labels, events, "labelled anomaly windows"
        shifted, injected = self.inject_anomalies(features, seed)
        return shifted, injected, None, "injected anomalies"

    def inject_anomalies(self, features: Any, seed: int, share: float = 0.02) -> tuple[Any, np.ndarray]:
        """A copy of ``features`` where a share of rows is pushed 6 standard deviations off,
        labelled 1: what parameters are chosen on when validation holds no labelled anomaly."""
        rng = np.random.default_rng(seed)
        shifted = features.copy()
        rows = rng.choice(len(features), size=max(1, int(len(features) * share)), replace=False)
        spread = features.std().fillna(1.0).replace(0, 1.0)
        signs = rng.choice([-1.0, 1.0], size=(len(rows), features.shape[1]))
        shifted.iloc[rows] = features.iloc[rows].to_numpy() + 6 * spread.to_numpy() * signs
        labels = np.zeros(len(features), dtype=int)
        labels[rows] = 1
        return shifted, labels
