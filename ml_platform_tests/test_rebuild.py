"""The landing zone is the source of truth: the warehouse and the online store rebuild from it."""

import datetime as dt

import duckdb
import pytest

from ml_platform.features.assets import features_table, staged_table
from ml_platform.features.online_store import make_online_store
from ml_platform.ingestion.labels import labels_table
from ml_platform.training.steps import content_sha256
from ml_platform.usecases import get_use_case

from .conftest import FIRST_DAY, USE_CASE, land_days, make_platform

pytestmark = pytest.mark.integration  # a whole home ingested, deleted and rebuilt

SPEC = get_use_case(USE_CASE)
DAYS = 3


def snapshot(platform) -> dict:
    """Row counts of every table built from the landing zone, the feature table's content hash
    and every entity's online vector."""
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        count = {
            table: conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            for table in (
                f"{SPEC.name}.{SPEC.raw_name}",
                f"{SPEC.name}.{SPEC.quarantine_name}",
                staged_table(SPEC),
                labels_table(SPEC),
                features_table(SPEC),
            )
        }
        features = conn.sql(
            f"SELECT * FROM {features_table(SPEC)} ORDER BY {SPEC.entity}, event_timestamp"
        ).pl()
    store = make_online_store(platform.settings)
    online = {e: store.get(SPEC.name, e) for e in sorted(store.entities(SPEC.name))}
    return {"counts": count, "features": content_sha256(features), "online": online}


def test_the_warehouse_and_online_store_rebuild_from_what_landed(tmp_path):
    platform = make_platform(tmp_path / "home")
    land_days(platform, FIRST_DAY, DAYS)
    # A dirty file among the good ones: its bad rows are quarantined again, the same way.
    day = FIRST_DAY + dt.timedelta(days=1)
    (platform.landing / f"late_{day}.csv").write_text(
        "sensor_id,timestamp,value\n"
        f"s-late,{day}T01:00:00Z,12.5\n"
        f"s-late,{day}T01:05:00Z,twelve\n"
        f"s-late,{day}T01:10:00Z,99999\n"
    )
    last = FIRST_DAY + dt.timedelta(days=DAYS - 1)
    platform.ingest(FIRST_DAY, last)
    platform.materialize(["online_features"])
    built = snapshot(platform)
    assert built["counts"][f"{SPEC.name}.{SPEC.quarantine_name}"] >= 2 and len(built["online"]) >= 6

    platform.settings.warehouse_path.unlink()
    for path in platform.settings.online_store_dir.iterdir():
        path.unlink()
    landed = sorted((p.name, p.stat().st_mtime_ns) for p in platform.landing.rglob("*") if p.is_file())
    platform.ingest(FIRST_DAY, last)
    platform.materialize(["online_features"])

    assert snapshot(platform) == built
    # Rebuilding only read the landing zone: every landed file is as it was.
    assert (
        sorted((p.name, p.stat().st_mtime_ns) for p in platform.landing.rglob("*") if p.is_file()) == landed
    )
