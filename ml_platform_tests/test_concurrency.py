"""Ten partition runs launched at once all succeed and never open the warehouse at the same time."""

import datetime as dt
import itertools
import subprocess
import sys
from pathlib import Path

import dagster as dg
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
