"""Shared fixtures: one Ray cluster per session, one materialized platform home per module."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest

# No usage pings from tests; set before any library reads them.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ml_platform.serving.cluster import free_port, start_local_cluster, stop_local_cluster  # noqa: E402
from ml_platform.settings import Settings, load_settings  # noqa: E402
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, write_sensor_data  # noqa: E402

USE_CASE = "sensor_anomaly"
# Data ends yesterday, so features are younger than the use case's TTL. Each day is seeded by its
# date: the same day always holds the same readings.
DAYS = 10
FIRST_DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS)
SENSORS = 6


# What one landing run materializes over its days (the landing sensor's selection).
INGESTION = ["raw_readings", "readings_quarantine", "stg_readings", "features"]


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey([USE_CASE, name])


def keys(*names: str) -> list[dg.AssetKey]:
    return [key(n) for n in names]


def requested_partitions(request: dg.RunRequest) -> tuple[str, str]:
    """The first and last partition a run request asks for (one, or a range)."""
    if request.partition_key:
        return request.partition_key, request.partition_key
    tags = request.tags
    return tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]


def day_range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


@dataclass
class Platform:
    """A platform home with its settings, definitions and Dagster instance."""

    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def materialize(self, names: list[str], *, raise_on_error: bool = True, **kwargs):
        return dg.materialize(
            self.defs.assets,
            selection=keys(*names),
            instance=self.instance,
            resources=self.defs.resources,
            raise_on_error=raise_on_error,
            **kwargs,
        )

    def ingest(self, first: dt.date, last: dt.date, *, labels: bool = True, raise_on_error: bool = True):
        """Load the days' readings (and their labels, which must have landed) up to features."""
        return self.materialize(
            [*INGESTION, *(["raw_labels"] if labels else [])],
            tags=day_range_tags(first, last),
            raise_on_error=raise_on_error,
        )

    def sensor(self, name: str) -> dg.SensorDefinition:
        """The use case's sensor ``name`` (e.g. ``landing_sensor``)."""
        return next(s for s in self.defs.sensors if s.name == f"{USE_CASE}_{name}")

    def tick(self, sensor: dg.SensorDefinition, cursor: str | None = None):
        """One evaluation of ``sensor`` on this platform: its result and the cursor it left."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            resources={"platform": self.defs.resources["platform"]},
        )
        return sensor.evaluate_tick(context), context.cursor

    def run_requests(
        self, sensor: dg.SensorDefinition, cursor: str | None = None
    ) -> tuple[list[dg.RunRequest], str | None]:
        """The runs one evaluation of ``sensor`` asks for (none when it skipped), and its cursor."""
        result, cursor = self.tick(sensor, cursor)
        return list(result.run_requests or []), cursor

    @property
    def landing(self) -> Path:
        return self.settings.landing_dir_for(USE_CASE)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """One local Ray head for the whole session; every home's settings point at it."""
    run_home = tmp_path_factory.mktemp("ray-home")
    os.environ["ML_PLATFORM_SERVE_PORT"] = str(free_port())
    os.environ["ML_PLATFORM_GRPC_PORT"] = str(free_port())
    os.environ["ML_PLATFORM_HOME"] = str(run_home)
    settings = load_settings()
    process = start_local_cluster(settings)
    address = (settings.run_dir / "ray_address").read_text().strip()
    os.environ["RAY_ADDRESS"] = address
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    stop_local_cluster(settings, process)
    os.environ.pop("RAY_ADDRESS", None)


POSTGRES_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of its own on the local server (names are unique: earlier runs may
    have left theirs), as the URL Dagster's storage takes; dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_platform(home: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> Platform:
    from ml_platform.definitions import build_definitions

    os.environ["ML_PLATFORM_HOME"] = str(home)
    settings = load_settings()
    return Platform(settings, build_definitions(settings), dg.DagsterInstance.ephemeral())


def materialize_on_cluster(platform: Platform, ray_address: str, names: list[str], **kwargs) -> None:
    """Materialize ``names`` in the same home and instance with settings that send every feature
    build and batch scoring to the Ray cluster at ``ray_address``, however few the rows; check
    that the materialization names nodes of that cluster as where the work ran."""
    import ray

    from ml_platform.definitions import build_definitions

    settings = replace(platform.settings, ray_address=ray_address, ray_min_rows=1)
    result = Platform(settings, build_definitions(settings), platform.instance).materialize(names, **kwargs)
    metadata = {
        k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    assert metadata["ray_nodes"] and set(metadata["ray_nodes"]) <= {
        n["NodeID"] for n in ray.nodes() if n["Alive"]
    }


def land_days(platform: Platform, first: dt.date, days: int, **config) -> list[Path]:
    return write_sensor_data(platform.landing, SensorDataConfig(sensors=6, days=days, start=first, **config))


# Fixtures that run the platform for real: Dagster runs over a materialized home, a Ray cluster,
# the demo. A test using none of them is in the fast tier (`make test-fast`).
INTEGRATION_FIXTURES = {
    "platform",
    "ray_cluster",
    "running_platform",
    "loop",
    "mqtt_setup",
    "pg_table",
    "api",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
