"""Two models scored on the same rows: the difference per metric and how sure the rows make it.

A gate that compares point estimates on a few labelled anomalies decides by chance: one test
window may hold six anomaly events, and which six decides the sign of a difference. The
comparison here is a paired bootstrap: each resample draws the positive *events* (an anomaly
window's rows travel together; a positive row without an event is its own event) and the
negative rows with replacement, and scores both models on it. A difference counts only when the
interval of the resampled differences leaves no doubt about its sign.

Metrics are computed from weights (the number of times each row was drawn), vectorized over
resamples; with unit weights they equal scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RANKING_METRICS = ("roc_auc", "average_precision")
THRESHOLD_METRICS = ("precision", "recall", "f1")
METRICS = RANKING_METRICS + THRESHOLD_METRICS
CONFIDENCE = 0.95
RESAMPLES = 400
# Resamples computed at once are capped so that one block holds at most this many weights.
_BLOCK_CELLS = 2_000_000


@dataclass(frozen=True)
class Difference:
    """``candidate - baseline`` of one metric, with the bootstrap interval of that difference."""

    metric: str
    candidate: float
    baseline: float
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.candidate - self.baseline

    @property
    def surely_lower(self) -> bool:
        return self.high < 0

    @property
    def surely_higher(self) -> bool:
        return self.low > 0


def event_ids(labels: np.ndarray, events: np.ndarray | None) -> np.ndarray:
    """An integer id per positive row (rows of one event share it), -1 for negative rows."""
    ids = np.full(len(labels), -1, dtype=np.int64)
    positive = labels == 1
    if events is None:
        ids[positive] = np.arange(int(positive.sum()))
        return ids
    keys = np.asarray(events, dtype=object)[positive]
    named = np.array([k is not None and k == k for k in keys], dtype=bool)  # None and NaN: no event
    codes = np.empty(len(keys), dtype=np.int64)
    if named.any():
        _, codes[named] = np.unique(keys[named].astype(str), return_inverse=True)
    codes[~named] = (codes[named].max() + 1 if named.any() else 0) + np.arange(int((~named).sum()))
    ids[positive] = codes
    return ids


def positive_events(labels: np.ndarray, events: np.ndarray | None) -> int:
    ids = event_ids(labels, events)
    return len(np.unique(ids[ids >= 0]))


def _resample_weights(ids: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Row weights of shape (resamples, rows): positive events and negative rows drawn with
    replacement, each group keeping its size."""
    negatives = np.flatnonzero(ids < 0)
    positive_ids = np.unique(ids[ids >= 0])
    weights = np.zeros((resamples, len(ids)))
    if len(negatives):
        draws = rng.integers(0, len(negatives), size=(resamples, len(negatives)))
        for r in range(resamples):
            weights[r, negatives] = np.bincount(draws[r], minlength=len(negatives))
    if len(positive_ids):
        rows_of = np.searchsorted(positive_ids, ids[ids >= 0])
        positives = np.flatnonzero(ids >= 0)
        draws = rng.integers(0, len(positive_ids), size=(resamples, len(positive_ids)))
        for r in range(resamples):
            times_drawn = np.bincount(draws[r], minlength=len(positive_ids))
            weights[r, positives] = times_drawn[rows_of]
    return weights


def weighted_metrics(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for each row of ``weights`` (shape (k, rows)); NaN where a
    ranking metric is undefined (no positive or no negative weight). Higher scores are more
    positive; a score above 0 is a positive decision."""
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
    decided = (scores > 0).astype(float)
    true_pos = weights @ (labels * decided)
    false_pos = weights @ ((1 - labels) * decided)
    false_neg = weights @ (labels * (1 - decided))
    return {
        "roc_auc": np.where(defined, roc_auc, np.nan),
        "average_precision": np.where(defined, average_precision, np.nan),
        "precision": _ratio(true_pos, true_pos + false_pos),
        "recall": _ratio(true_pos, true_pos + false_neg),
        "f1": _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def paired_differences(
    candidate: np.ndarray,
    baseline: np.ndarray,
    labels: np.ndarray,
    events: np.ndarray | None,
    metrics: tuple[str, ...],
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> dict[str, Difference]:
    """Each metric of both score vectors on the same rows, and the ``confidence`` interval of
    ``candidate - baseline`` over paired resamples (the same rows drawn for both)."""
    labels = np.asarray(labels).astype(int)
    ones = np.ones((1, len(labels)))
    ours, theirs = weighted_metrics(candidate, labels, ones), weighted_metrics(baseline, labels, ones)
    ids = event_ids(labels, events)
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_CELLS // max(len(labels), 1)))
    spread: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for done in range(0, resamples, block):
        weights = _resample_weights(ids, min(block, resamples - done), rng)
        a, b = weighted_metrics(candidate, labels, weights), weighted_metrics(baseline, labels, weights)
        for metric in metrics:
            spread[metric].append(a[metric] - b[metric])
    tail = (1 - confidence) / 2 * 100
    result = {}
    for metric in metrics:
        drawn = np.concatenate(spread[metric])
        drawn = drawn[~np.isnan(drawn)]
        low, high = np.percentile(drawn, [tail, 100 - tail]) if len(drawn) else (np.nan, np.nan)
        result[metric] = Difference(metric, float(ours[metric][0]), float(theirs[metric][0]), low, high)
    return result


@dataclass(frozen=True)
class Comparison:
    """One metric in one scope (all rows, or one slice), candidate against the champion."""

    scope: str
    metric: str
    candidate: float
    champion: float
    difference: float
    low: float
    high: float
    allowed_drop: float
    rows: int
    positive_events: int
    verdict: str

    @property
    def regression(self) -> bool:
        return self.verdict == "worse"

    def as_row(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "metric": self.metric,
            "candidate": round(self.candidate, 4),
            "champion": round(self.champion, 4),
            "difference": round(self.difference, 4),
            "interval": f"[{self.low:.4f}, {self.high:.4f}]",
            "allowed_drop": self.allowed_drop,
            "rows": self.rows,
            "positive_events": self.positive_events,
            "verdict": self.verdict,
        }


def compare_scopes(
    candidate: np.ndarray,
    champion: np.ndarray,
    labels: np.ndarray,
    events: np.ndarray | None,
    scopes: Mapping[str, np.ndarray],
    allowed_drop: Mapping[str, float],
    *,
    min_positive_events: int,
    seed: int,
    confidence: float = CONFIDENCE,
) -> list[Comparison]:
    """Candidate against champion per scope (a boolean row mask) and per metric of ``allowed_drop``.

    A metric is ``worse`` when the candidate falls below the champion by more than its allowed
    drop *and* the interval of the difference lies below zero; a scope with fewer than
    ``min_positive_events`` positive events is shown but not judged: it cannot tell."""
    metrics = tuple(allowed_drop)
    found = []
    for scope, mask in scopes.items():
        scope_labels = np.asarray(labels)[mask].astype(int)
        scope_events = None if events is None else np.asarray(events, dtype=object)[mask]
        count = positive_events(scope_labels, scope_events)
        diffs = paired_differences(
            candidate[mask],
            champion[mask],
            scope_labels,
            scope_events,
            metrics,
            seed=seed,
            confidence=confidence,
        )
        for metric, diff in diffs.items():
            margin = allowed_drop[metric]
            if count < min_positive_events:
                verdict = f"not judged: {count} positive event(s) < {min_positive_events}"
            elif np.isnan(diff.value):
                verdict = "not judged: undefined on these rows"
            elif diff.value < -margin and diff.surely_lower:
                verdict = "worse"
            elif diff.value < -margin:
                verdict = "lower, within the rows' noise"
            else:
                verdict = "not worse"
            found.append(
                Comparison(
                    scope,
                    metric,
                    diff.candidate,
                    diff.baseline,
                    diff.value,
                    float(diff.low),
                    float(diff.high),
                    margin,
                    int(mask.sum()),
                    count,
                    verdict,
                )
            )
    return found
