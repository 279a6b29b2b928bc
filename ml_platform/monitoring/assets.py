"""Drift reports: the champion's training features against the most recent features."""

import datetime as dt

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.assets import read_features
from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.monitoring.drift import run_drift_report
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import UseCaseSpec
from ml_platform.training.assets import read_split


def build_monitoring_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    columns = list(spec.drift.columns) or spec.features.feature_names()

    @dg.asset(
        key=[spec.name, "drift_report"],
        group_name=spec.name,
        deps=[
            dg.AssetKey([spec.name, "features"]),
            dg.AssetKey([spec.name, "training_set"]),
            dg.AssetKey([spec.name, "predictions"]),
        ],
        pool=WAREHOUSE_POOL,
        kinds={"evidently"},
        description=f"Evidently data drift: training features vs the last {spec.drift.window_days} day(s).",
    )
    def drift_report(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        reference = read_split(warehouse, spec, "train")
        features = read_features(warehouse, spec)
        since = features[EVENT_TIMESTAMP].max() - dt.timedelta(days=spec.drift.window_days)
        current = features.filter(pl.col(EVENT_TIMESTAMP) > since)
        result = run_drift_report(
            reference.select(columns).to_pandas(),
            current.select(columns).to_pandas(),
            columns,
            platform.settings.reports_dir / spec.name,
            spec.drift.drift_share,
            seed=spec.model.seed,
        )
        return dg.MaterializeResult(
            metadata={
                "report_id": result.report_id,
                "dataset_drift": result.dataset_drift,
                "drift_share": result.drift_share,
                "drifted_columns": result.drifted_columns,
                "report": dg.MetadataValue.path(str(result.html_path)),
                "reference_rows": len(reference),
                "current_rows": len(current),
                "current_from": str(current[EVENT_TIMESTAMP].min()),
                **{f"drift_score/{c.column}": c.score for c in result.columns},
            }
        )

    return [drift_report]
