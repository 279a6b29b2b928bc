"""Batch feature computation: the use case's feature definitions as polars expressions."""

from __future__ import annotations

import polars as pl

from ml_platform.partitions import grain
from ml_platform.spec import UseCaseSpec

EVENT_TIMESTAMP = "event_timestamp"


def event_grain(spec: UseCaseSpec) -> str:
    """SQL: the grain (UTC day, or hour for hourly partitions) of a feature row, which its
    partition holds."""
    return grain(spec).of(EVENT_TIMESTAMP)


def compute_features(rows: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """One feature row per input row: ``entity``, ``event_timestamp`` and every declared feature.

    ``rows`` holds typed rows with the entity, the timestamp and the features' source columns.
    """
    entity, ts = spec.entity, spec.timestamp
    return order_by_entity_and_time(rows, entity, ts).select(
        pl.col(entity),
        pl.col(ts).alias(EVENT_TIMESTAMP),
        *[f.polars(entity, ts).alias(f.name) for f in spec.features.features],
    )


def compute_features_on_cluster(
    rows: pl.DataFrame, spec: UseCaseSpec, address: str
) -> tuple[pl.DataFrame, list[str]]:
    """``compute_features`` over the cluster: whole entities per Ray task (every feature looks at
    one entity's rows only), the parts put together in the order one process gives. Also the
    node each part ran on."""
    from ml_platform.distributed import cluster_cpus, entity_shards, spread

    shards = entity_shards(rows, spec.entity, 2 * cluster_cpus(address))
    if not shards:
        return compute_features(rows, spec), []
    parts = spread(address, compute_features, shards, spec)
    return pl.concat([frame for frame, _ in parts]), [node for _, node in parts]


def order_by_entity_and_time(rows: pl.DataFrame, entity: str, ts: str) -> pl.DataFrame:
    """Rows by entity, then event time: a sort by time, then a stable sort by the entity as an
    enum of its sorted values. (A two-column sort with a string key is several times slower in
    polars; the entity column is then flagged sorted so `.over(entity)` takes its fast path.)"""
    names = rows[entity].unique().drop_nulls().sort()
    ordered = rows.sort(ts).sort(pl.col(entity).cast(pl.Enum(names)), maintain_order=True, nulls_last=True)
    return ordered.with_columns(pl.col(entity).set_sorted())


def latest_vectors(features: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The newest feature row of each entity."""
    return features.sort(EVENT_TIMESTAMP).group_by(spec.entity, maintain_order=True).last()
