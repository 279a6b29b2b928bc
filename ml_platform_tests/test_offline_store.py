"""The offline table is built day by day with the lookback it needs; the online snapshot can live
in Redis by configuration alone."""

import datetime as dt
import uuid

import polars as pl
import pytest
import redis

from ml_platform.features.compute import EVENT_TIMESTAMP, compute_features
from ml_platform.features.online_store import RedisOnlineStore
from ml_platform.metadata import latest_metadata

from .conftest import (
    FIRST_DAY,
    USE_CASE,
    day_range_tags,
    key,
    land_days,
    make_platform,
    materialize_on_cluster,
)

DAYS = 3
LAST = FIRST_DAY + dt.timedelta(days=DAYS - 1)


def _features(platform) -> pl.DataFrame:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(f"SELECT * FROM {USE_CASE}.features ORDER BY sensor_id, {EVENT_TIMESTAMP}").pl()


def _staged(platform) -> pl.DataFrame:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(f"SELECT * FROM {USE_CASE}.stg_readings").pl()


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    namespace = f"mlp-test-{uuid.uuid4().hex[:8]}"
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_ONLINE_STORE", "redis://127.0.0.1:6379/0")
    mp.setenv("ML_PLATFORM_ONLINE_NAMESPACE", namespace)
    platform = make_platform(tmp_path_factory.mktemp("offline-home"))
    mp.undo()
    land_days(platform, FIRST_DAY, DAYS)
    # Days one at a time, as daily runs would: each day's windows reach into the day before.
    for offset in range(DAYS):
        day = FIRST_DAY + dt.timedelta(days=offset)
        platform.materialize(
            ["raw_readings", "readings_quarantine", "stg_readings", "features"], tags=day_range_tags(day, day)
        )
    yield platform
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    for redis_key in client.scan_iter(f"{namespace}:*"):
        client.delete(redis_key)


def test_day_by_day_features_equal_a_full_recompute(platform):
    from ml_platform.usecases import get_use_case

    spec = get_use_case(USE_CASE)
    incremental = _features(platform)
    full = compute_features(
        _staged(platform).select(spec.entity, spec.timestamp, *spec.features.source_columns()), spec
    )
    full = full.sort("sensor_id", EVENT_TIMESTAMP)
    assert len(incremental) == len(full) > 0
    for name in spec.features.feature_names():
        a, b = incremental[name], full[name]
        assert (a.is_null() == b.is_null()).all(), name
        assert ((a - b).abs().fill_null(0) <= 1e-9).all(), name


def test_features_spread_over_the_ray_cluster_equal_those_built_in_process(platform, ray_cluster):
    before = _features(platform)
    # Whole entities per Ray task, on the cluster's node(s); put together as one process builds them.
    materialize_on_cluster(platform, ray_cluster, ["features"], tags=day_range_tags(FIRST_DAY, LAST))
    assert _features(platform).equals(before)


def test_recomputing_a_day_touches_only_that_day(platform):
    before = _features(platform)
    result = platform.materialize(["features"], partition_key=LAST.isoformat())
    after = _features(platform)
    assert before.equals(after)  # same inputs, same rows: nothing duplicated or dropped
    rows = result.get_asset_materialization_events()[0].materialization.metadata["dagster/row_count"].value
    last_day = after.filter(pl.col(EVENT_TIMESTAMP).dt.date() == LAST)
    assert rows == len(last_day) < len(after)


def test_online_snapshot_goes_to_redis_by_configuration(platform):
    result = platform.materialize(["online_features"])
    parity = result.get_asset_check_evaluations()[0]
    assert parity.check_name == "online_offline_parity" and parity.passed
    metadata = latest_metadata(platform.instance, key("online_features"))
    assert metadata["store"].startswith("redis://")
    store = RedisOnlineStore("redis://127.0.0.1:6379/0", platform.settings.online_store_namespace)
    assert store.entities(USE_CASE) == ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"]
    newest = _features(platform).filter(pl.col("sensor_id") == "s-4").sort(EVENT_TIMESTAMP).tail(1)
    vector = store.get(USE_CASE, "s-4")
    assert vector.event_timestamp == newest[EVENT_TIMESTAMP][0]
    assert vector.features["value_mean_72"] == pytest.approx(newest["value_mean_72"][0], abs=1e-9)
