"""What the serving assets write to the warehouse, as plain functions: the prediction log,
ingested once per prediction id, and batch predictions of some days by the champion."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.distributed import nodes_metadata, spread_rows
from ml_platform.features.compute import EVENT_TIMESTAMP, event_grain
from ml_platform.partitions import GrainValue
from ml_platform.serving.log import logged_predictions
from ml_platform.settings import Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import replace_range
from ml_platform.tasks import task_of

if TYPE_CHECKING:
    import pandas as pd

    from ml_platform.training.registry import ModelRef


def predictions_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.predictions"


def ingest_prediction_log(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings
) -> dg.MaterializeResult:
    """Every logged prediction not in the table yet (by prediction id), with the task's outputs and
    its served features; a shadow score logged after its prediction was ingested is added to that
    row."""
    task = task_of(spec)
    records = logged_predictions(settings, spec.name)
    table = predictions_table(spec)
    outputs = ", ".join(f"{o.name} {o.sql_type}" for o in task.outputs)
    with warehouse.get_connection() as conn:
        conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
        conn.sql(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                prediction_id VARCHAR PRIMARY KEY, model_version VARCHAR, served_by VARCHAR,
                "{spec.entity}" VARCHAR, requested_at TIMESTAMPTZ, feature_event_timestamp TIMESTAMPTZ,
                {outputs}, latency_ms DOUBLE,
                shadow_version VARCHAR, shadow_score DOUBLE, features JSON)"""
        )
        before = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        if records:
            frame = pl.DataFrame(
                [
                    {
                        "prediction_id": r["prediction_id"],
                        "model_version": str(r["model_version"]),
                        "served_by": r.get("served_by", "champion"),
                        spec.entity: r.get(spec.entity),
                        "requested_at": r["requested_at"],
                        "feature_event_timestamp": r.get("feature_event_timestamp"),
                        **{o.name: r[o.name] for o in task.outputs},
                        "latency_ms": r.get("latency_ms"),
                        "shadow_version": (r.get("shadow") or {}).get("model_version"),
                        "shadow_score": (r.get("shadow") or {}).get(task.score_output),
                        "features": json.dumps(r["features"]),
                    }
                    for r in records
                ],
                infer_schema_length=None,
            )
            casts = ", ".join(f"CAST({o.name} AS {o.sql_type})" for o in task.outputs)
            conn.register("logged_predictions", frame.to_arrow())
            conn.sql(
                f"""INSERT INTO {table} SELECT prediction_id, model_version, served_by, "{spec.entity}",
                    CAST(requested_at AS TIMESTAMPTZ), CAST(feature_event_timestamp AS TIMESTAMPTZ),
                    {casts}, CAST(latency_ms AS DOUBLE),
                    CAST(shadow_version AS VARCHAR), CAST(shadow_score AS DOUBLE), CAST(features AS JSON)
                    FROM logged_predictions
                    ON CONFLICT (prediction_id) DO UPDATE
                    SET shadow_version = EXCLUDED.shadow_version, shadow_score = EXCLUDED.shadow_score
                    WHERE {table}.shadow_version IS NULL AND EXCLUDED.shadow_version IS NOT NULL"""
            )
            conn.unregister("logged_predictions")
        total = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return dg.MaterializeResult(
        metadata={"dagster/row_count": total, "new_rows": total - before, "table": table}
    )


def score_span(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings, first: GrainValue, last: GrainValue
) -> dg.MaterializeResult:
    """Every feature row of grains (days, or hours) ``first``..``last`` answered by the champion,
    with version and id."""
    from ml_platform.training import registry
    from ml_platform.training.evaluate import features_of

    task = task_of(spec)
    ref = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    if ref is None:
        raise dg.Failure(f"{spec.name}: no champion to score with yet")
    model = registry.load_verified_model(ref, settings.model_cache, task)
    table = f"{spec.name}.batch_predictions"
    with warehouse.get_connection() as conn:
        rows = conn.sql(
            f"SELECT * FROM {spec.name}.features WHERE {event_grain(spec)} BETWEEN ? AND ?",
            params=[first, last],
        ).pl()
        if spread_rows(settings, len(rows)):
            scores, nodes = score_days_on_cluster(rows, spec, ref, settings)
        else:
            scores, nodes = task.scores(model, features_of(rows, spec)), []
        columns = task.columns(model, scores)
        scored = rows.select(spec.entity, EVENT_TIMESTAMP).with_columns(
            pl.Series("prediction_id", [uuid.uuid4().hex for _ in range(len(rows))]),
            pl.lit(ref.version).alias("model_version"),
            *(pl.Series(o.name, columns[o.name]) for o in task.outputs),
        )
        replace_range(conn, event_grain(spec), first, last, {table: scored})
    decided = task.decisions(model, scores)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scored),
            "model_version": ref.version,
            **({"decided_positive": int(decided.astype(bool).sum())} if task.binary_labels else {}),
            "table": table,
            **nodes_metadata(nodes),
        }
    )


def score_days_on_cluster(
    rows: pl.DataFrame, spec: UseCaseSpec, ref: ModelRef, settings: Settings
) -> tuple[np.ndarray, list[str]]:
    """The rows' scores, each day's rows scored by a Ray task over the cluster (the model loaded
    and verified there, from the registry), in the rows' order; and the node of each day."""
    from ml_platform.distributed import spread
    from ml_platform.training.evaluate import features_of

    stamps = rows[EVENT_TIMESTAMP]
    if stamps.dtype.time_zone is None:  # a naive timestamp is UTC here
        stamps = stamps.dt.replace_time_zone("UTC")
    by_day = pl.DataFrame({"day": stamps.dt.convert_time_zone("UTC").dt.date(), "row": np.arange(len(rows))})
    positions = [part["row"].to_numpy() for part in by_day.partition_by("day", maintain_order=True)]
    features = features_of(rows, spec)
    parts = spread(
        settings.ray_address,
        score_part,
        [features.iloc[p] for p in positions],
        spec,
        ref,
        settings.mlflow_tracking_uri,
        str(settings.model_cache),
    )
    in_day_order = np.concatenate([scores for scores, _ in parts])
    scores = np.empty_like(in_day_order)
    scores[np.concatenate(positions)] = in_day_order
    return scores, [node for _, node in parts]


def score_part(
    features: pd.DataFrame, spec: UseCaseSpec, ref: ModelRef, tracking_uri: str, cache: str
) -> np.ndarray:
    """On a Ray node: the registered model, fetched and verified into the node's cache, scores
    ``features``."""
    import mlflow

    from ml_platform.training.registry import load_verified_model

    mlflow.set_tracking_uri(tracking_uri)
    task = task_of(spec)
    return task.scores(load_verified_model(ref, Path(cache), task), features)
