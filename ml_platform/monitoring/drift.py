"""Data drift between the champion's training features and recent features, with Evidently."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# Evidently's HTML and statistics are for people; a bounded, seeded sample keeps them quick.
MAX_ROWS = 20_000


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    report_id: str
    html_path: Path
    columns: list[ColumnDrift]
    drift_share: float
    dataset_drift: bool

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


def _sample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    return frame.sample(n=MAX_ROWS, random_state=seed) if len(frame) > MAX_ROWS else frame


def _column_drift(metric: dict) -> ColumnDrift:
    config = metric["config"]
    score = float(metric["value"])
    threshold = float(config["threshold"])
    method = config["method"]
    # p-value tests flag drift below the threshold; distances flag it at or above.
    drifted = score < threshold if "p_value" in method else score >= threshold
    return ColumnDrift(config["column"], method, score, threshold, drifted)


def run_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    report_dir: Path,
    drift_share: float,
    seed: int = 0,
) -> DriftResult:
    # Evidently takes seconds to import; only drift runs should pay for it.
    from evidently import Report
    from evidently.presets import DataDriftPreset

    report_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_share)]).run(
        current_data=_sample(current[columns], seed),
        reference_data=_sample(reference[columns], seed),
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    html_path = report_dir / f"drift_{report_id}.html"
    snapshot.save_html(str(html_path))
    results = [
        _column_drift(m)
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"] == "evidently:metric_v2:ValueDrift"
    ]
    share = sum(c.drifted for c in results) / len(results) if results else 0.0
    return DriftResult(report_id, html_path, results, share, share >= drift_share)
