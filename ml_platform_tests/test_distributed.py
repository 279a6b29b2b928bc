"""Splitting a feature build into parts of whole entities loses nothing and changes nothing: the
parts' features, put together, are one process's (what Ray tasks over a cluster rely on)."""

import datetime as dt

import polars as pl
import pytest

from ml_platform.distributed import entity_shards
from ml_platform.features.compute import compute_features
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generated_days

from .test_gate import SPEC

START = dt.date(2025, 3, 1)


@pytest.fixture(scope="module")
def readings() -> pl.DataFrame:
    rows, _ = generated_days(SensorDataConfig(sensors=7, days=2, start=START, anchor=START))
    # One reading whose sensor is missing, as a bad upstream could leave it.
    return pl.concat([rows, rows.head(1).with_columns(pl.lit(None, pl.String).alias(SPEC.entity))])


@pytest.mark.parametrize("shards", [1, 2, 3, 7, 20])
def test_parts_hold_whole_entities_in_order_and_every_row(readings, shards):
    parts = entity_shards(readings, SPEC.entity, shards)
    assert 1 <= len(parts) <= min(shards, 7)
    assert sum(len(p) for p in parts) == len(readings)
    entities = [p[SPEC.entity].drop_nulls().unique().sort().to_list() for p in parts]
    flat = [e for names in entities for e in names]
    assert flat == sorted(flat) and len(flat) == len(set(flat)) == 7  # each entity in one part, in order
    assert parts[-1][SPEC.entity].null_count() == 1  # the row without one, where a sort puts it


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_features_of_the_parts_put_together_equal_one_build(readings, shards):
    whole = compute_features(readings, SPEC)
    parts = [compute_features(p, SPEC) for p in entity_shards(readings, SPEC.entity, shards)]
    assert pl.concat(parts).equals(whole)
