"""Concept drift closes the loop, unattended: on a running platform (Dagster daemon, Ray Serve), the
days after the card payments history are replayed with frauds of a new kind, their chargebacks
arrive late, and the platform alone sees live performance fall below the spec's floor, retrains
once, gates on recent labelled payments, promotes and switches serving with no failed request.
Sensors tick every 5 s and the monitors every minute (``ML_PLATFORM_MONITOR_CRON``)."""

import datetime as dt
import subprocess

import dagster as dg
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.home import prepare_home
from ml_platform.settings import load_settings
from ml_platform.usecases.card_fraud import EXAMPLE, HISTORY_ENDS_DAYS_AGO
from ml_platform.usecases.card_fraud.scenario import run_concept_drift_scenario
from ml_platform.usecases.card_fraud.spec import SPEC

from .conftest import day_range_tags
from .test_scenario import start_daemon

INGEST = [SPEC.raw_name, SPEC.quarantine_name, "raw_labels", SPEC.staged_name, "features"]
TRAIN_AND_SERVE = ["online_features", "training_set", "model", "model_evaluation", "champion", "deployment"]


def keys(*names: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([SPEC.name, n]) for n in names]


@pytest.fixture(scope="module")
def payments_platform(tmp_path_factory, ray_cluster):
    home = tmp_path_factory.mktemp("concept-drift-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_HOME", str(home))
    mp.setenv("ML_PLATFORM_SENSOR_INTERVAL_S", "5")
    mp.setenv("ML_PLATFORM_MONITOR_CRON", "* * * * *")
    settings = load_settings()
    prepare_home(settings)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    defs = build_definitions(settings, [SPEC])

    def materialize(names: list[str], **kwargs) -> None:
        result = dg.materialize(
            defs.assets, selection=keys(*names), instance=instance, resources=defs.resources, **kwargs
        )
        assert result.success

    landed = EXAMPLE.land(settings.landing_dir_for(SPEC.name))  # as make demo lands it
    assert len(landed) == 22  # 21 days and one chargebacks file
    last = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=HISTORY_ENDS_DAYS_AGO)
    materialize(INGEST, tags=day_range_tags(last - dt.timedelta(days=20), last))
    materialize(TRAIN_AND_SERVE)
    materialize(["predictions", "drift_report"])
    daemon = start_daemon(settings, home)
    try:
        yield settings, instance
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        instance.dispose()
        mp.undo()


def test_concept_drift_is_seen_in_late_labels_retrained_promoted_and_served(payments_platform):
    settings, instance = payments_platform
    result = run_concept_drift_scenario(settings, timeout_s=900, log=print)

    live = result.trigger  # what made the platform retrain: the champion's live figures
    assert [m["metric"] for m in live["missed"]] == ["average_precision"]
    assert live["average_precision"] < 0.2 and live["rows"] >= SPEC.monitoring.min_labelled_rows
    assert result.retrain_runs == 1
    assert int(result.champion_after) == int(result.champion_before) + 1
    assert result.failed_requests == []
    assert result.versions_served == {result.champion_before, result.champion_after}
    (run,) = instance.get_runs(
        dg.RunsFilter(tags={"ml_platform/use_case": SPEC.name, "ml_platform/trigger": "retrain"})
    )
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert "live average_precision below the SLO" in run.tags["ml_platform/reasons"]
    # The new champion was judged on the replayed, relabelled payments, and beat the old one there.
    evaluation = instance.get_latest_materialization_event(dg.AssetKey([SPEC.name, "model_evaluation"]))
    metadata = {k: v.value for k, v in evaluation.asset_materialization.metadata.items()}
    assert metadata["average_precision"] >= 0.2
