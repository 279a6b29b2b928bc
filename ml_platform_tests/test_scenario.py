"""The closed loop, unattended: drifted data lands on a running platform (Dagster daemon, Ray
Serve) and the platform alone detects the drift, retrains once, gates, promotes and switches
serving with no failed request. Sensor intervals are shortened to 5 s."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.home import child_env, prepare_home
from ml_platform.scenario import run_drift_scenario
from ml_platform.settings import REPO_ROOT, load_settings

from .conftest import DAYS, FIRST_DAY, Platform, land_days

TRAIN_AND_SERVE = ["online_features", "training_set", "model", "model_evaluation", "champion", "deployment"]


@pytest.fixture(scope="module")
def running_platform(tmp_path_factory, ray_cluster):
    home = tmp_path_factory.mktemp("scenario-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_HOME", str(home))
    mp.setenv("ML_PLATFORM_SENSOR_INTERVAL_S", "5")
    settings = load_settings()
    prepare_home(settings)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    platform = Platform(settings, build_definitions(settings), instance)
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    platform.materialize(TRAIN_AND_SERVE)
    platform.materialize(["predictions", "drift_report"])  # as make demo leaves it
    log = (home / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**child_env(settings), **{k: v for k, v in os.environ.items() if k.startswith("RAY")}},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield platform
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        instance.dispose()
        mp.undo()


def test_drift_is_detected_retrained_once_promoted_and_served_without_a_failed_request(running_platform):
    settings = running_platform.settings
    result = run_drift_scenario(settings, timeout_s=600, log=print)
    assert result.drift_report["dataset_drift"] is True
    assert result.retrain_runs == 1
    assert int(result.champion_after) == int(result.champion_before) + 1
    assert result.failed_requests == []
    assert result.versions_served == {result.champion_before, result.champion_after}
    assert result.requests > 50
    runs = running_platform.instance.get_runs(dg.RunsFilter(tags={"ml_platform/trigger": "retrain"}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert "drift report" in runs[0].tags["ml_platform/reasons"]
