"""The serving deployment of the champion, and the prediction log ingested from serving."""

import json
import uuid

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.compute import EVENT_DAY, EVENT_TIMESTAMP
from ml_platform.ingestion.assets import daily_partitions, partition_days
from ml_platform.metadata import latest_metadata
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.serving.log import read_prediction_log
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import replace_days


def predictions_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.predictions"


def build_serving_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    champion_key = dg.AssetKey([spec.name, "champion"])
    deployment_key = dg.AssetKey([spec.name, "deployment"])

    @dg.asset(
        key=deployment_key,
        group_name=spec.name,
        deps=[champion_key],
        kinds={"ray"},
        description="Ray Serve serving the champion (a reconfigure: no request is dropped).",
    )
    def deployment(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        from ml_platform.serving.deploy import deploy, wait_until_serving  # Ray: load in runs only

        settings = platform.settings
        champion_version = str(latest_metadata(context.instance, champion_key)["champion_version"])
        deployed = deploy(settings)
        served = wait_until_serving(settings, spec.name, champion_version)
        return dg.MaterializeResult(
            metadata={
                "model_version": champion_version,
                "served_versions": served["versions"],
                "endpoint": dg.MetadataValue.url(f"{settings.serve_url}/v1/models/{spec.name}/predict"),
                "use_cases_served": sorted(deployed),
            }
        )

    @dg.asset(
        key=[spec.name, "predictions"],
        group_name=spec.name,
        deps=[deployment_key],
        # Ingested on a schedule; the monitors downstream follow it.
        automation_condition=dg.AutomationCondition.cron_tick_passed("*/10 * * * *")
        & ~dg.AutomationCondition.in_progress(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description="Prediction log from serving, ingested once per prediction id.",
    )
    def predictions(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        records = read_prediction_log(platform.settings.serving_log_dir, spec.name)
        table = predictions_table(spec)
        with warehouse.get_connection() as conn:
            conn.sql(f"CREATE SCHEMA IF NOT EXISTS {spec.name}")
            conn.sql(
                f"""CREATE TABLE IF NOT EXISTS {table} (
                    prediction_id VARCHAR PRIMARY KEY, model_version VARCHAR, served_by VARCHAR,
                    {spec.entity} VARCHAR, requested_at TIMESTAMPTZ, feature_event_timestamp TIMESTAMPTZ,
                    anomaly_score DOUBLE, is_anomaly BOOLEAN, latency_ms DOUBLE,
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
                            "anomaly_score": r["anomaly_score"],
                            "is_anomaly": r["is_anomaly"],
                            "latency_ms": r.get("latency_ms"),
                            "shadow_version": (r.get("shadow") or {}).get("model_version"),
                            "shadow_score": (r.get("shadow") or {}).get("anomaly_score"),
                            "features": json.dumps(r["features"]),
                        }
                        for r in records
                    ],
                    infer_schema_length=None,
                )
                conn.register("logged_predictions", frame.to_arrow())
                conn.sql(
                    f"""INSERT INTO {table} SELECT prediction_id, model_version, served_by, {spec.entity},
                        CAST(requested_at AS TIMESTAMPTZ), CAST(feature_event_timestamp AS TIMESTAMPTZ),
                        anomaly_score, is_anomaly, CAST(latency_ms AS DOUBLE),
                        CAST(shadow_version AS VARCHAR), CAST(shadow_score AS DOUBLE), CAST(features AS JSON)
                        FROM logged_predictions ON CONFLICT DO NOTHING"""
                )
                conn.unregister("logged_predictions")
            total = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        return dg.MaterializeResult(
            metadata={"dagster/row_count": total, "new_rows": total - before, "table": table}
        )

    @dg.asset(
        key=[spec.name, "batch_predictions"],
        group_name=spec.name,
        deps=[dg.AssetKey([spec.name, "features"]), champion_key],
        partitions_def=daily_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "scikitlearn"},
        description="Every reading of the day scored by the champion (precomputed), with version and id.",
    )
    def batch_predictions(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        from ml_platform.training import registry
        from ml_platform.training.evaluate import model_input
        from ml_platform.training.model import anomaly_scores

        settings = platform.settings
        ref = registry.alias_ref(settings, spec.name, registry.CHAMPION)
        if ref is None:
            raise dg.Failure(f"{spec.name}: no champion to score with yet")
        pipeline = registry.load_verified_model(ref, settings.run_dir / "model_cache")
        first, last = partition_days(context)
        table = f"{spec.name}.batch_predictions"
        with warehouse.get_connection() as conn:
            rows = conn.sql(
                f"SELECT * FROM {spec.name}.features WHERE {EVENT_DAY} BETWEEN ? AND ?", params=[first, last]
            ).pl()
            scores = anomaly_scores(pipeline, model_input(rows.to_pandas(), spec.features.feature_names()))
            scored = rows.select(spec.entity, EVENT_TIMESTAMP).with_columns(
                pl.Series("prediction_id", [uuid.uuid4().hex for _ in range(len(rows))]),
                pl.lit(ref.version).alias("model_version"),
                pl.Series("anomaly_score", scores),
                pl.Series("is_anomaly", scores > 0),
            )
            replace_days(conn, EVENT_DAY, first, last, {table: scored})
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(scored),
                "model_version": ref.version,
                "anomalies": int((scores > 0).sum()),
                "table": table,
            }
        )

    return [deployment, predictions, batch_predictions]
