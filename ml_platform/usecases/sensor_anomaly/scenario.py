"""`ml-platform scenario drift`: drifted data lands on a running platform, and the platform alone
notices, retrains, gates, promotes and switches serving, while traffic keeps flowing.

It needs a running home (``make demo``: Dagster daemon, serving, a champion). It only lands data
and watches; every decision is taken by the platform's sensors, automation and gate.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from ml_platform.settings import Settings
from ml_platform.usecases.scenarios import (
    ScenarioError,
    ScenarioResult,
    Story,
    Traffic,
    auth_headers,
    finish,
    latest,
    retrain_and_promotion,
    retrain_runs,
    serving_champion,
    wait,
)
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, redeliver_drifted

USE_CASE = "sensor_anomaly"


def land_drifted_days(landing: Path, days: int = 2) -> list[Path]:
    """Re-deliver the last ``days`` landed days with shifted readings (new versions of the files)."""
    files = sorted(landing.glob("readings_????-??-??.csv"))[-days:]
    if len(files) < days:
        raise ScenarioError(f"{landing} holds fewer than {days} days of readings")
    sensors = pl.read_csv(files[-1], columns=["sensor_id"])["sensor_id"].n_unique()
    chosen = [dt.date.fromisoformat(path.stem.removeprefix("readings_")) for path in files]
    return redeliver_drifted(landing, chosen, SensorDataConfig(sensors=sensors))


def run_drift_scenario(
    settings: Settings, timeout_s: float = 900, log: Callable[[str], None] = print
) -> ScenarioResult:
    step = Story(log)
    champion, served = serving_champion(settings, USE_CASE)
    predict_url = f"{settings.serve_url}/v1/models/{USE_CASE}/predict"
    step(f"champion v{champion} is serving ({served}); starting traffic")
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        started = time.time()
        retrains_before = len(retrain_runs(instance, USE_CASE))
        sensors = [f"s-{i}" for i in range(1, 4)]
        with Traffic(predict_url, "sensor_id", sensors, auth_headers(settings)) as traffic:
            landed = land_drifted_days(settings.landing_dir_for(USE_CASE))
            step(f"landed drifted versions of {', '.join(p.name for p in landed)}")
            report = wait(
                "a drift report showing drift",
                lambda: (
                    (r := latest(instance, USE_CASE, "drift_report", started))
                    and r.get("dataset_drift")
                    and r
                ),
                timeout_s,
            )
            step(
                f"drift report {report['report_id']}: drift share {report['drift_share']:.2f}, "
                f"drifted {', '.join(report['drifted_columns'])}"
            )
            after = retrain_and_promotion(
                instance, settings, USE_CASE, champion, retrains_before, traffic, step, timeout_s
            )
            time.sleep(3)
        retrains = len(retrain_runs(instance, USE_CASE)) - retrains_before
    return finish(step, traffic, champion, after, report, retrains)
