"""Point-in-time joins: training rows get the feature values known at their timestamp, never later."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP


def point_in_time_join(
    spine: pl.DataFrame,
    features: pl.DataFrame,
    entity: str,
    timestamp: str,
    ttl: dt.timedelta | None = None,
) -> pl.DataFrame:
    """For each spine row (entity, timestamp, labels...), the latest feature row of the same entity
    whose event time is at or before the row's timestamp (an ASOF backward join).

    With ``ttl``, a feature row older than ``ttl`` at the spine's timestamp is not used: the
    features of that spine row are null, as they would be missing at serving time.
    """
    right = features.rename({EVENT_TIMESTAMP: "feature_event_timestamp"}).sort("feature_event_timestamp")
    joined = spine.sort(timestamp).join_asof(
        right,
        left_on=timestamp,
        right_on="feature_event_timestamp",
        by=entity,
        strategy="backward",
        tolerance=ttl,
        check_sortedness=False,
    )
    return joined
