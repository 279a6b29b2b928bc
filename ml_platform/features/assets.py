"""The offline feature table (incremental by partition) and the online store snapshot."""

import datetime as dt

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.automation.conditions import after_any_update, follow_upstream
from ml_platform.distributed import nodes_metadata, spread_rows
from ml_platform.features.compute import (
    EVENT_TIMESTAMP,
    compute_features,
    compute_features_on_cluster,
    event_grain,
    latest_vectors,
)
from ml_platform.features.online import OnlineFeatures
from ml_platform.features.online_store import make_online_store
from ml_platform.metadata import markdown_table
from ml_platform.partitions import GrainValue, grain, partition_grains, time_partitions
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.settings import Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import replace_range
from ml_platform.upstream import unbuilt_partitions

PARITY_TOLERANCE = 1e-9


def features_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.features"


def staged_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.{spec.staged_name}"


def asset_keys(spec: UseCaseSpec) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    """The staged table's key and the two feature assets' keys (offline, online)."""
    return tuple(dg.AssetKey([spec.name, name]) for name in (spec.staged_name, "features", "online_features"))


def read_features(warehouse: DuckDBResource, spec: UseCaseSpec) -> pl.DataFrame:
    with warehouse.get_connection() as conn:
        return conn.sql(f"SELECT * FROM {features_table(spec)}").pl()


def _quoted(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def compute_span(
    conn, spec: UseCaseSpec, first: GrainValue, last: GrainValue, settings: Settings
) -> tuple[pl.DataFrame, list[str]]:
    """Features of the events of grains (days, or hours) ``first..last``, their windows fed by the
    lookback before; also the Ray nodes that computed them (none when computed in this process)."""
    start, end = grain(spec).span(first, last)
    # Features read numbers (integer and boolean columns as DOUBLE, a boolean as 0 / 1) or, with
    # is_value, text, as online.
    sources = [
        f'"{c}"' if c in spec.text_column_names else f'CAST("{c}" AS DOUBLE) AS "{c}"'
        for c in spec.features.source_columns()
    ]
    selected = ", ".join([_quoted([spec.entity, spec.timestamp]), *sources])
    rows = conn.sql(
        f"""SELECT {selected} FROM {staged_table(spec)}
            WHERE "{spec.timestamp}" >= ? AND "{spec.timestamp}" < ?""",
        params=[start - spec.features.offline_lookback, end],
    ).pl()
    if spread_rows(settings, len(rows)):
        features, nodes = compute_features_on_cluster(rows, spec, settings.ray_address)
    else:
        features, nodes = compute_features(rows, spec), []
    return features.filter(pl.col(EVENT_TIMESTAMP) >= start), nodes


def _parity_check(
    spec: UseCaseSpec,
    online: dict[str, dict],
    offline: pl.DataFrame,
    online_times: dict[str, dt.datetime] | None = None,
) -> dg.AssetCheckResult:
    """The online path's vector of each entity equals the offline table's newest row.

    An entity whose staged events are newer than that row (a day re-staged while events stream in,
    its features waiting for their own run) is not compared now: the features run that follows
    updates this asset again, and that run compares it."""
    worst, mismatches, ahead = 0.0, [], []
    for row in offline.iter_rows(named=True):
        entity = row[spec.entity]
        staged = (online_times or {}).get(entity)
        built = row[EVENT_TIMESTAMP]
        if staged is not None and staged > (built if built.tzinfo else built.replace(tzinfo=dt.UTC)):
            ahead.append(str(entity))
            continue
        vector = online.get(entity, {})
        for name in spec.features.feature_names():
            a, b = vector.get(name), row[name]
            if (a is None) != (b is None):
                mismatches.append({"entity": entity, "feature": name, "online": a, "offline": b})
            elif a is not None:
                worst = max(worst, abs(a - b))
                # Relative beyond 1: a z-score of a near-flat window is large, and so is its rounding.
                if abs(a - b) > PARITY_TOLERANCE * max(1.0, abs(a), abs(b)):
                    mismatches.append({"entity": entity, "feature": name, "online": a, "offline": b})
    return dg.AssetCheckResult(
        check_name="online_offline_parity",
        passed=not mismatches,
        metadata={
            "max_abs_difference": worst,
            "mismatches": markdown_table(mismatches[:20]),
            "compared_entities": len(offline) - len(ahead),
            "not_compared_staging_ahead": ", ".join(ahead) or "none",
        },
    )


def build_features(
    spec: UseCaseSpec,
    instance: dg.DagsterInstance,
    partition_keys: list[str],
    grains: tuple[GrainValue, GrainValue],
    warehouse: DuckDBResource,
    settings: Settings,
) -> dg.MaterializeResult:
    """The feature rows of the events staged in ``grains`` (first and last day, or hour),
    replacing those."""
    staged_key, features_key, _ = asset_keys(spec)
    # A range may hold days with no data; a range with no staged day at all is a mistake.
    unbuilt = unbuilt_partitions(
        instance, features_key, [staged_key], partition_keys, only_if_none_built=True
    )
    if unbuilt:
        raise dg.Failure("; ".join(unbuilt))
    first, last = grains
    table = features_table(spec)
    with warehouse.get_connection() as conn:
        computed, nodes = compute_span(conn, spec, first, last, settings)
        replace_range(conn, event_grain(spec), first, last, {table: computed})
        total = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(computed),
            "table_rows": total,
            "entities": computed[spec.entity].n_unique(),
            "features": spec.features.feature_names(),
            "lookback": str(spec.features.offline_lookback),
            **nodes_metadata(nodes),
        }
    )


def build_online_features(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings
) -> dg.MaterializeResult:
    """Each entity's newest vector, and the recent events its windows still reach, written to the
    online store; checked against the offline table's newest rows."""
    online = OnlineFeatures(spec)
    columns = [spec.entity, spec.timestamp, *online.columns]
    with warehouse.get_connection() as conn:
        # Each entity's events that a window of its newest event can still reach.
        tail = conn.sql(
            f"""SELECT {_quoted(columns)} FROM (
                    SELECT *, row_number() OVER w AS back, max("{spec.timestamp}") OVER w2 AS newest
                    FROM {staged_table(spec)}
                    WINDOW w AS (PARTITION BY "{spec.entity}" ORDER BY "{spec.timestamp}" DESC),
                           w2 AS (PARTITION BY "{spec.entity}"))
                WHERE back <= {online.keep_rows}
                   OR "{spec.timestamp}" > newest - INTERVAL {online.keep_micros} MICROSECOND
                ORDER BY "{spec.entity}", "{spec.timestamp}" """
        ).pl()
        newest = latest_vectors(conn.sql(f"SELECT * FROM {features_table(spec)}").pl(), spec)
    states = {
        str(entity): online.state_from_events(group[spec.timestamp].to_list(), group.to_dicts())
        for (entity,), group in tail.group_by(spec.entity, maintain_order=True)
    }
    store = make_online_store(settings)
    count = store.write_snapshot(spec.name, states)
    now = dt.datetime.now(dt.UTC)
    ages = {e: (now - s.event_timestamp).total_seconds() for e, s in states.items()}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "store": store.describe(),
            "max_feature_age_s": max(ages.values(), default=0.0),
            "min_feature_age_s": min(ages.values(), default=0.0),
            "feature_age_s": markdown_table(
                [{"entity": e, "age_s": round(a, 1)} for e, a in sorted(ages.items())]
            ),
            "ttl_s": spec.features.ttl.total_seconds(),
        },
        check_results=[
            _parity_check(
                spec,
                {e: s.vector for e, s in states.items()},
                newest,
                {e: s.event_timestamp for e, s in states.items()},
            )
        ],
    )


def build_feature_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    staged_key, features_key, online_key = asset_keys(spec)

    @dg.asset(
        key=features_key,
        group_name=spec.name,
        deps=[staged_key],
        partitions_def=time_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"polars", "duckdb"},
        automation_condition=follow_upstream(),
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=spec.expectations.fresh_within),
        description="Offline feature table: one event-timestamped feature row per event, by day.",
    )
    def features(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        keys, grains = context.partition_keys, partition_grains(context, spec)
        return build_features(spec, context.instance, keys, grains, warehouse, platform.settings)

    @dg.asset(
        key=online_key,
        group_name=spec.name,
        deps=[features_key],
        pool=WAREHOUSE_POOL,
        kinds={"sqlite", "redis"},
        automation_condition=after_any_update(),
        description="Latest feature vector per entity (and its recent events) in the online store.",
        check_specs=[
            dg.AssetCheckSpec(
                "online_offline_parity",
                asset=online_key,
                blocking=True,
                description=(
                    f"Online vectors equal the offline newest rows (within {PARITY_TOLERANCE}, relative "
                    "for values beyond 1)."
                ),
            )
        ],
    )
    def online_features(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        return build_online_features(spec, warehouse, platform.settings)

    return [features, online_features]
