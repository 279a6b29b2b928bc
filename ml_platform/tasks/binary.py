"""Metrics shared by the tasks whose labels are 0 / 1 (anomaly detection, binary classification):
ranking metrics of a score and threshold metrics of a decision, plain and weighted.

The weighted forms take a matrix of row weights (the paired bootstrap's resamples: the number of
times each row was drawn) and compute every resample at once; with unit weights they equal
scikit-learn's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ml_platform.training.compare import event_ids

LABEL_TEXT = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}


class ZeroOneLabels:
    """Labels of the tasks that judge 0 / 1: written 1/0 or true/false, given by anomaly windows as
    well as per event, and resampled by the gate's bootstrap as positive events and negative rows."""

    label_dtype = pl.Int8()
    binary_labels = True
    windows_allowed = True
    evidence = "positive event(s)"

    def parse_labels(self, text: pl.Expr) -> pl.Expr:
        return (
            text.cast(pl.String)
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(LABEL_TEXT, default=None, return_dtype=pl.Int8)
        )

    def label_rule(self) -> str:
        return "1/0 or true/false"

    def json_label(self, value: Any) -> int | None:
        if isinstance(value, bool | int) and value in (0, 1):
            return int(value)
        return None

    def resampling_groups(self, labels: np.ndarray, events: np.ndarray | None) -> np.ndarray:
        """Positive rows of one event share an id; negative rows are -1 (drawn one by one)."""
        return event_ids(np.asarray(labels).astype(int), events)


RANKING = ("roc_auc", "average_precision")
AT_THRESHOLD = ("precision", "recall", "f1")


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def weighted_ranking(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ROC-AUC and average precision of ``scores`` for every row of ``weights``; NaN where a
    resample holds no positive or no negative weight."""
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], labels[order].astype(float), weights[:, order]
    # The last row of each run of equal scores: ties move together along the curves.
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(w * y, axis=1)[:, last_of_tie]
    fp = np.cumsum(w * (1 - y), axis=1)[:, last_of_tie]
    pos, neg = tp[:, -1], fp[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        recall_curve = tp / pos[:, None]
        precision_curve = tp / (tp + fp)
        recall_steps = np.diff(np.c_[np.zeros(len(w)), recall_curve], axis=1)
        average_precision = np.nansum(recall_steps * precision_curve, axis=1)
        tpr = np.c_[np.zeros(len(w)), recall_curve]
        fpr = np.c_[np.zeros(len(w)), fp / neg[:, None]]
        roc_auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
    defined = (pos > 0) & (neg > 0)
    return {
        "roc_auc": np.where(defined, roc_auc, np.nan),
        "average_precision": np.where(defined, average_precision, np.nan),
    }


def weighted_at_threshold(
    decisions: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of the decisions for every row of ``weights``."""
    decided = np.asarray(decisions).astype(float)
    labels = np.asarray(labels).astype(float)
    true_pos = weights @ (labels * decided)
    false_pos = weights @ ((1 - labels) * decided)
    false_neg = weights @ (labels * (1 - decided))
    return {
        "precision": ratio(true_pos, true_pos + false_pos),
        "recall": ratio(true_pos, true_pos + false_neg),
        "f1": ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
    }


def threshold_metrics(decisions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    ones = np.ones((1, len(labels)))
    return {k: float(v[0]) for k, v in weighted_at_threshold(decisions, labels, ones).items()}


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC-AUC and average precision, present only when the rows hold both classes."""
    if not 0 < labels.sum() < len(labels):
        return {}
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
    }


def window_recall(decisions: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    """The share of labelled events (anomaly windows) with at least one row decided positive."""
    if groups is None:
        return {}
    named = np.array([g is not None and g == g for g in groups], dtype=bool)  # None / NaN: no event
    if not named.any():
        return {}
    keys = np.asarray(groups, dtype=object)[named].astype(str)
    hits = np.asarray(decisions).astype(bool)[named]
    unique, inverse = np.unique(keys, return_inverse=True)
    hit_any = np.zeros(len(unique), dtype=bool)
    np.logical_or.at(hit_any, inverse, hits)
    return {"window_recall": float(hit_any.mean())}
