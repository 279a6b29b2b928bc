"""Ten partition runs launched at once all succeed and never open the warehouse at the same time;
a run killed while it writes a partition leaves that partition whole."""

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_platform.home import child_env, prepare_home
from ml_platform.resources.platform import WAREHOUSE_LOCKED, WAREHOUSE_UNLOCKED
from ml_platform.settings import REPO_ROOT

from .conftest import FIRST_DAY, land_days, make_platform

pytestmark = pytest.mark.integration  # ten Dagster runs launched at once

RUNS = 10
WAREHOUSE_STEPS = ("sensor_anomaly__raw_readings", "sensor_anomaly__readings_quarantine")


def test_ten_partition_runs_at_once_all_succeed(tmp_path):
    platform = make_platform(tmp_path / "home")
    prepare_home(platform.settings)  # dagster.yaml: every pool holds one slot
    land_days(platform, FIRST_DAY, RUNS)
    days = [(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(RUNS)]
    dagster = str(Path(sys.executable).with_name("dagster"))
    select = "sensor_anomaly/raw_readings,sensor_anomaly/readings_quarantine"
    processes = [
        subprocess.Popen(
            [
                dagster,
                "asset",
                "materialize",
                "-m",
                "ml_platform.definitions",
                "--select",
                select,
                "--partition",
                day,
            ],
            cwd=REPO_ROOT,
            env=child_env(platform.settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for day in days
    ]
    outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in processes]
    failed = [
        (day, out[-2000:]) for day, p, out in zip(days, processes, outputs, strict=True) if p.returncode
    ]
    assert failed == []

    with dg.DagsterInstance.from_config(str(platform.settings.dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == RUNS and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        holds = []
        for run in runs:
            steps = {
                r.dagster_event.step_key
                for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            }
            assert set(WAREHOUSE_STEPS) <= steps
            # Within one run steps are sequential, so lock and unlock messages alternate.
            messages = [
                (r.timestamp, r.user_message)
                for r in instance.all_logs(run.run_id)
                if r.dagster_event is None and "warehouse write lock" in r.user_message
            ]
            taken = [t for t, m in messages if WAREHOUSE_LOCKED in m]
            released = [t for t, m in messages if WAREHOUSE_UNLOCKED in m]
            assert len(taken) == len(released) >= len(WAREHOUSE_STEPS)
            holds += [(a, b, run.run_id) for a, b in zip(taken, released, strict=True)]
        holds.sort()
        # One writer: no process opened the warehouse before the previous holder let go.
        overlaps = [(a, b) for a, b in itertools.pairwise(holds) if b[0] < a[1]]
        assert overlaps == []
        for day in days:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(["sensor_anomaly", "raw_readings"]), asset_partitions=[day]
                ),
                limit=1,
            ).records
            assert records and records[0].asset_materialization.metadata["dagster/row_count"].value > 0


def _lock_holder(lock: Path) -> int | None:
    """The pid holding an flock on ``lock``, from /proc/locks."""
    inode = str(lock.stat().st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[5].rsplit(":", 1)[-1] == inode:
            return int(fields[4])
    return None


def _written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar for pid {pid}")


def _day_rows(platform, day: str) -> tuple[int, int]:
    """Rows of ``day`` in raw_readings, and how many of them share a key with another."""
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(
            f"""SELECT count(*), count(*) - count(DISTINCT (sensor_id, timestamp))
                FROM sensor_anomaly.raw_readings WHERE partition_date = '{day}'"""
        ).fetchall()[0]


def test_a_run_killed_while_it_writes_a_partition_leaves_the_old_rows_or_the_new(tmp_path):
    platform = make_platform(tmp_path / "home")
    prepare_home(platform.settings)
    land_days(platform, FIRST_DAY, 1)
    day = FIRST_DAY.isoformat()
    platform.materialize(["raw_readings"], partition_key=day)
    old, _ = _day_rows(platform, day)
    # A second, large file for the same day: re-materializing the day writes ~20 MB for a second.
    sensors, minutes = 2000, 1440
    start = dt.datetime.combine(FIRST_DAY, dt.time(), tzinfo=dt.UTC)
    pl.DataFrame(
        {
            "sensor_id": [f"bulk-{i // minutes}" for i in range(sensors * minutes)],
            "timestamp": pl.datetime_range(
                start, start + dt.timedelta(minutes=minutes - 1), "1m", eager=True, time_zone="UTC"
            ).to_list()
            * sensors,
            "value": [float(i % 97) for i in range(sensors * minutes)],
        }
    ).write_parquet(platform.landing / f"bulk_{day}.parquet")
    new = old + sensors * minutes

    lock = platform.settings.warehouse_path.with_name("warehouse.duckdb.writer.lock")
    run = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "ml_platform.definitions",
        ]
        + ["--select", "sensor_anomaly/raw_readings", "--partition", day],
        cwd=REPO_ROOT,
        env=child_env(platform.settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _lock_holder(lock) != run.pid:
        assert run.poll() is None and time.monotonic() < deadline, "the run never took the warehouse lock"
        time.sleep(0.01)
    base = _written_bytes(run.pid)
    while _written_bytes(run.pid) - base < 4_000_000:  # well into writing the day's rows
        assert run.poll() is None, "the run finished before it could be killed mid-write"
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()

    assert _lock_holder(lock) is None  # the kernel released the dead writer's lock
    rows, duplicates = _day_rows(platform, day)  # the warehouse opens (DuckDB replays its WAL)
    assert rows in (old, new) and duplicates == 0, f"{rows} rows: neither the old {old} nor the new {new}"
    platform.materialize(["raw_readings"], partition_key=day)
    assert _day_rows(platform, day) == (new, 0)
