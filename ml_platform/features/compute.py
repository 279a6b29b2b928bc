"""Feature definitions compiled to polars: rolling windows per entity, in event-time order."""

from __future__ import annotations

import polars as pl

from ml_platform.spec import UseCaseSpec

EVENT_TIMESTAMP = "event_timestamp"


def feature_expressions(spec: UseCaseSpec) -> list[pl.Expr]:
    entity = spec.entity
    expressions: list[pl.Expr] = []
    for column in spec.features.columns:
        for w in spec.features.windows:
            mean = pl.col(column).rolling_mean(w, min_samples=1).over(entity)
            expressions += [
                mean.alias(f"{column}_ma_{w}"),
                (pl.col(column) - mean).alias(f"{column}_diff_ma_{w}"),
                # A window holding a single reading has no spread: 0, not null.
                pl.col(column)
                .rolling_std(w, min_samples=2)
                .over(entity)
                .fill_null(0.0)
                .alias(f"{column}_std_{w}"),
            ]
    return expressions


def compute_features(readings: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """One feature row per reading: ``entity``, ``event_timestamp`` and ``spec.features`` columns.

    ``readings`` holds typed rows with the entity, the timestamp and the feature source columns.
    """
    ordered = readings.sort(spec.entity, spec.timestamp)
    return ordered.with_columns(feature_expressions(spec)).select(
        pl.col(spec.entity),
        pl.col(spec.timestamp).alias(EVENT_TIMESTAMP),
        *[pl.col(name) for name in spec.features.feature_names()],
    )


def latest_vectors(features: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The newest feature row of each entity."""
    return features.sort(EVENT_TIMESTAMP).group_by(spec.entity, maintain_order=True).last()
