"""Offline features in the warehouse and the latest vector per entity in the online store."""

import datetime as dt

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.compute import EVENT_TIMESTAMP, compute_features, latest_vectors
from ml_platform.features.online_store import FileOnlineStore
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import UseCaseSpec


def features_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.features"


def read_features(warehouse: DuckDBResource, spec: UseCaseSpec) -> pl.DataFrame:
    with warehouse.get_connection() as conn:
        return conn.sql(f"SELECT * FROM {features_table(spec)}").pl()


def build_feature_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    staged_key = dg.AssetKey([spec.name, "stg_readings"])
    features_key = dg.AssetKey([spec.name, "features"])
    source_columns = [
        spec.entity,
        spec.timestamp,
        *spec.features.columns,
        *spec.features.passthrough,
    ]

    @dg.asset(
        key=features_key,
        group_name=spec.name,
        deps=[staged_key],
        pool=WAREHOUSE_POOL,
        kinds={"polars", "duckdb"},
        description="Offline feature table: one event-timestamped feature row per reading.",
    )
    def features(warehouse: DuckDBResource) -> dg.MaterializeResult:
        columns = ", ".join(f'"{c}"' for c in source_columns)
        with warehouse.get_connection() as conn:
            readings = conn.sql(f"SELECT {columns} FROM {spec.name}.stg_readings").pl()
            table = compute_features(readings, spec)
            conn.register("computed_features", table.to_arrow())
            conn.sql(f"CREATE OR REPLACE TABLE {features_table(spec)} AS SELECT * FROM computed_features")
            conn.unregister("computed_features")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(table),
                "entities": table[spec.entity].n_unique(),
                "features": spec.features.feature_names(),
                "first_event": str(table[EVENT_TIMESTAMP].min()),
                "last_event": str(table[EVENT_TIMESTAMP].max()),
            }
        )

    @dg.asset(
        key=[spec.name, "online_features"],
        group_name=spec.name,
        deps=[features_key],
        pool=WAREHOUSE_POOL,
        kinds={"json"},
        description="Latest feature vector per entity, in the online store serving reads.",
    )
    def online_features(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        vectors = latest_vectors(read_features(warehouse, spec), spec)
        store = FileOnlineStore(platform.settings.online_store_dir)
        count = store.write(spec.name, vectors, spec.entity)
        now = dt.datetime.now(dt.UTC)
        ages = [(now - t).total_seconds() for t in vectors[EVENT_TIMESTAMP]]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": count,
                "max_feature_age_s": max(ages) if ages else 0.0,
                "min_feature_age_s": min(ages) if ages else 0.0,
                "store": dg.MetadataValue.path(str(store.path(spec.name))),
            }
        )

    return [features, online_features]
