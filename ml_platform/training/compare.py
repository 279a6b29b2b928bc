"""Two models scored on the same rows: the difference per metric and how sure the rows make it.

A gate that compares point estimates on a few labelled anomalies decides by chance: one test
window may hold six anomaly events, and which six decides the sign of a difference. The
comparison here is a paired bootstrap: each resample draws the rows' groups with replacement (for
0 / 1 labels the positive *events*, an anomaly window's rows travelling together, and the negative
rows one by one; for a regression every row), and scores both models on it. A difference counts
only when the interval of the resampled differences leaves no doubt about its sign.

Metrics are the task's own (``Task.weighted``), computed from weights (the number of times each
row was drawn), vectorized over resamples; with unit weights they equal scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ml_platform.tasks.base import Task

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

    def surely_worse(self, higher_is_better: bool) -> bool:
        return self.surely_lower if higher_is_better else self.surely_higher

    def surely_better(self, higher_is_better: bool) -> bool:
        return self.surely_higher if higher_is_better else self.surely_lower


@dataclass(frozen=True)
class Scored:
    """One model's answers on some rows: its scores and, where the task makes them, decisions."""

    scores: np.ndarray
    decisions: np.ndarray | None = None

    def take(self, mask: np.ndarray) -> Scored:
        return Scored(self.scores[mask], None if self.decisions is None else self.decisions[mask])


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
    return evidence(event_ids(labels, events))


def evidence(groups: np.ndarray) -> int:
    """How many groups the bootstrap draws (positive events, or rows for a regression)."""
    return len(np.unique(groups[groups >= 0]))


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


def paired_differences(
    task: Task,
    candidate: Scored,
    baseline: Scored,
    labels: np.ndarray,
    groups: np.ndarray,
    metrics: tuple[str, ...],
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> dict[str, Difference]:
    """Each metric of both models on the same rows, and the ``confidence`` interval of
    ``candidate - baseline`` over paired resamples (the same rows drawn for both); ``groups`` is
    ``task.resampling_groups`` of the rows."""
    labels = np.asarray(labels)

    def measure(scored: Scored, weights: np.ndarray) -> dict[str, np.ndarray]:
        return task.weighted(scored.scores, scored.decisions, labels, weights)

    ones = np.ones((1, len(labels)))
    ours, theirs = measure(candidate, ones), measure(baseline, ones)
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_CELLS // max(len(labels), 1)))
    spread: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for done in range(0, resamples, block):
        weights = _resample_weights(groups, min(block, resamples - done), rng)
        a, b = measure(candidate, weights), measure(baseline, weights)
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
    task: Task,
    candidate: Scored,
    champion: Scored,
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

    A metric is ``worse`` when the candidate falls behind the champion by more than its allowed
    drop (below for a metric where higher is better, above for an error) *and* the interval of the
    difference leaves no doubt about it; a scope with fewer than ``min_positive_events`` groups
    (positive events, or labelled rows for a regression) is shown but not judged: it cannot tell."""
    metrics = tuple(allowed_drop)
    found = []
    for scope, mask in scopes.items():
        scope_labels = np.asarray(labels)[mask]
        scope_events = None if events is None else np.asarray(events, dtype=object)[mask]
        groups = task.resampling_groups(scope_labels, scope_events)
        count = evidence(groups)
        diffs = paired_differences(
            task,
            candidate.take(mask),
            champion.take(mask),
            scope_labels,
            groups,
            metrics,
            seed=seed,
            confidence=confidence,
        )
        for metric, diff in diffs.items():
            margin = allowed_drop[metric]
            higher_is_better = task.metric(metric).higher_is_better
            behind = -diff.value if higher_is_better else diff.value  # how far the candidate falls back
            if count < min_positive_events:
                verdict = f"not judged: {count} {task.evidence} < {min_positive_events}"
            elif np.isnan(diff.value):
                verdict = "not judged: undefined on these rows"
            elif behind > margin and diff.surely_worse(higher_is_better):
                verdict = "worse"
            elif behind > margin:
                verdict = f"{'lower' if higher_is_better else 'higher'}, within the rows' noise"
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
