"""Batch feature computation: the use case's feature definitions as polars expressions."""

from __future__ import annotations

import polars as pl

from ml_platform.spec import UseCaseSpec

EVENT_TIMESTAMP = "event_timestamp"


def compute_features(readings: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """One feature row per reading: ``entity``, ``event_timestamp`` and every declared feature.

    ``readings`` holds typed rows with the entity, the timestamp and the features' source columns.
    """
    entity, ts = spec.entity, spec.timestamp
    ordered = readings.sort(entity, ts)
    return ordered.select(
        pl.col(entity),
        pl.col(ts).alias(EVENT_TIMESTAMP),
        *[f.polars(entity, ts).alias(f.name) for f in spec.features.features],
    )


def latest_vectors(features: pl.DataFrame, spec: UseCaseSpec) -> pl.DataFrame:
    """The newest feature row of each entity."""
    return features.sort(EVENT_TIMESTAMP).group_by(spec.entity, maintain_order=True).last()
