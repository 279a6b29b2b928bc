"""A use case nobody here shipped, declared in the user's own repository, through the whole loop.

Readings of electricity meters from 2014 in a schema unlike the sensor example's (integer and
categorical columns, an optional column that is always empty, its own table name, hourly
partitions), one file of
bad data among good ones, and one label per reading posted through the serving endpoint: ingest,
staging, features, training, the gate, the champion, serving by entity and by rows, the
prediction log, drift and live performance, all through real Dagster runs and Ray Serve.
"""

from __future__ import annotations

import threading
import time

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.metadata import latest_metadata
from ml_platform.settings import load_settings
from ml_platform.usecases import use_cases

from .conftest import Platform

METERS = """\
name: meters
description: Electricity meters recorded in 2014; tampering is labelled reading by reading.
entity: meter_id
timestamp: read_at
table: meter_readings
columns:
  - {name: meter_id, dtype: string}
  - {name: read_at, dtype: timestamp}
  - {name: kwh, dtype: float, min_value: 0, max_value: 100000}
  - {name: phase, dtype: integer, min_value: 1, max_value: 3}
  - {name: tariff, dtype: string, allowed_values: [day, night]}
  - {name: humidity, dtype: float, required: false}
expectations: {key: [meter_id, read_at], max_bad_share: 0.1}
features:
  features:
    - {kind: value, column: kwh}
    - {kind: rolling, column: kwh, agg: mean, rows: 12}
    - {kind: diff_from_mean, column: kwh, rows: 12}
    - {kind: value, column: phase}
    - {kind: value, column: humidity}
    - {kind: is_value, column: tariff, value: night}
  ttl: 5000d
model:
  algorithm: isolation_forest
  params: {n_estimators: 100, contamination: 0.03}
  trials: 2
  training_rows: 1500
gate:
  min_metrics: {roc_auc: 0.7}
drift: {columns: [kwh, humidity]}
labels: {kind: event_labels, column: tampered, missing: negative}
monitoring: {label_lateness: 1d, min_labelled_rows: 1}
partitions_start: 2014-05-01
partitions: hourly
# A deployment of its own, scaled by its load alone (quick to react, for the test).
serving:
  autoscaling:
    min_replicas: 1
    max_replicas: 2
    target_ongoing_requests: 1
    upscale_delay_s: 1
    look_back_period_s: 2
    metrics_interval_s: 0.5
    downscale_delay_s: 600
  num_cpus: 0.25
"""
# The three days' 72 hourly partitions, backfilled in one run.
ALL_HOURS = {
    "dagster/asset_partition_range_start": "2014-05-01-00:00",
    "dagster/asset_partition_range_end": "2014-05-03-23:00",
}
TIMES = pd.date_range("2014-05-01", "2014-05-03 23:55", freq="5min", tz="UTC")
GOOD, BAD = ("m-1", "m-2"), "m-3"
TAMPERED_EVERY = 40


def keys(*names: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(["meters", name]) for name in names]


def meter_file(meter: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kwh = 50 + 10 * np.sin(np.arange(len(TIMES)) / 24) + rng.normal(0, 1, len(TIMES))
    tampered = np.arange(len(TIMES)) % TAMPERED_EVERY == TAMPERED_EVERY - 1
    tampered[-1] = meter == "m-2"  # the newest reading, the one served by entity, is labelled
    kwh[tampered] *= 6
    return pd.DataFrame(
        {
            "meter_id": meter,
            "read_at": TIMES.strftime("%Y-%m-%d %H:%M:%S"),  # no offset: UTC
            "kwh": kwh.round(3),
            "phase": [1 + i % 3 for i in range(len(TIMES))],
            "tariff": ["day" if 6 <= t.hour < 22 else "night" for t in TIMES],
            "tampered": tampered,
        }
    )


@pytest.fixture(scope="module")
def loop(tmp_path_factory, ray_cluster):
    repo = tmp_path_factory.mktemp("user-repo")
    (repo / "meters.yaml").write_text(METERS)
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_HOME", str(tmp_path_factory.mktemp("meters-home")))
    mp.setenv("ML_PLATFORM_USE_CASES", str(repo / "meters.yaml"))
    settings = load_settings()
    spec = use_cases(settings)["meters"]
    platform = Platform(settings, build_definitions(settings, [spec]), dg.DagsterInstance.ephemeral())
    landing = settings.landing_dir_for("meters")
    landing.mkdir(parents=True)
    truth = pd.concat([meter_file(meter, seed) for seed, meter in enumerate(GOOD)])
    for meter in GOOD:
        truth[truth.meter_id == meter].drop(columns="tampered").to_csv(landing / f"{meter}.csv", index=False)
    bad = meter_file(BAD, 9).drop(columns="tampered").assign(kwh=-1.0)  # a broken export
    bad.to_csv(landing / f"{BAD}.csv", index=False)
    yield platform, spec, truth
    mp.undo()
    from ray import serve

    from ml_platform.serving.deploy import APP_NAME

    # Scaled out, the meters deployment would hold its replicas' CPUs for its downscale delay
    # (600 s) and starve the next module's tuning trials on the shared cluster.
    serve.delete(APP_NAME)


def materialize(platform: Platform, names: list[str], **kwargs):
    return dg.materialize(
        platform.defs.assets,
        selection=keys(*names),
        instance=platform.instance,
        resources=platform.defs.resources,
        **kwargs,
    )


def test_the_meters_use_case_goes_through_the_whole_loop(loop):
    from ml_platform.serving.deploy import deploy

    platform, spec, truth = loop
    settings = platform.settings
    ingest = materialize(
        platform,
        [spec.raw_name, spec.quarantine_name, spec.staged_name, "features"],
        tags=ALL_HOURS,
    )
    checks = {e.check_name: e for e in ingest.get_asset_check_evaluations()}
    assert checks["bad_share"].passed  # the bad file is set apart whole; the good ones go on
    isolated = str(checks["bad_share"].metadata)
    assert f"{BAD}.csv" in isolated and "range:kwh" in isolated
    with platform.defs.resources["warehouse"].get_connection() as conn:
        staged = dict(
            conn.sql("SELECT meter_id, count(*) FROM meters.stg_meter_readings GROUP BY 1").fetchall()
        )
        quarantined = conn.sql("SELECT count(*) FROM meters.meter_readings_quarantine").fetchall()[0][0]
        hours = conn.sql("SELECT count(DISTINCT partition_hour) FROM meters.stg_meter_readings").fetchall()
        night = conn.sql("SELECT avg(tariff_is_night) FROM meters.features").fetchall()[0][0]
    assert staged == {m: len(TIMES) for m in GOOD} and quarantined == len(TIMES) and hours == [(72,)]
    assert night == pytest.approx(8 / 24)  # the categorical column, one-hot: 22:00 to 06:00

    # Serving is up before any model: the labels route takes the readings' labels, positives only
    # (`missing: negative`), in two posts of the kind a labelling tool sends.
    deploy(settings)
    url = f"{settings.serve_url}/v1/labels/meters"
    positives = truth[truth.tampered]
    bodies = [
        [
            {"meter_id": r.meter_id, "read_at": f"{r.read_at}Z".replace(" ", "T"), "tampered": 1}
            for r in part.itertuples()
        ]
        for part in (positives.iloc[::2], positives.iloc[1::2])
    ]
    refused = httpx.post(url, json=[{**bodies[0][0], "tampered": "yes"}], timeout=30)
    assert refused.status_code == 422 and "label 0: field 'tampered'" in refused.json()["error"]
    for body in bodies:
        posted = httpx.post(url, json={"labels": body}, timeout=30)
        assert posted.status_code == 202, posted.text
        assert posted.json()["accepted"] == len(body)
    sensor = next(s for s in platform.defs.sensors if s.name == "meters_landing_sensor")
    context = dg.build_sensor_context(
        instance=platform.instance,
        definitions=platform.defs,
        resources={"platform": platform.defs.resources["platform"]},
    )
    requests = [r for r in sensor.evaluate_tick(context).run_requests if r.run_key.startswith("labels:")]
    assert len(requests) == 2  # one run per labels file, over the hours of the days it covers
    ranges = {tuple(r.tags[t] for t in ALL_HOURS) for r in requests}
    assert ranges == {tuple(ALL_HOURS.values())}
    labels = materialize(platform, ["raw_labels"], tags=ALL_HOURS)
    assert latest_metadata(platform.instance, keys("raw_labels")[0])["dagster/row_count"] == len(positives)
    assert labels.success

    trained = materialize(
        platform, ["online_features", "training_set", "model", "model_evaluation", "champion", "deployment"]
    )
    assert trained.success
    failed = [e.check_name for e in trained.get_asset_check_evaluations() if not e.passed]
    assert failed == []
    training = latest_metadata(platform.instance, keys("training_set")[0])
    assert training["dagster/row_count"] == 1500  # the row-count window, counted from the newest row
    dropped = (len(GOOD) * len(TIMES) - 1500) // len(GOOD)  # the oldest readings of each meter
    assert training["first_event"] == str(TIMES[dropped]) and training["test_positive_events"] >= 5
    evaluation = latest_metadata(platform.instance, keys("model_evaluation")[0])
    assert evaluation["roc_auc"] > 0.9
    assert latest_metadata(platform.instance, keys("champion")[0])["champion_version"] == "1"

    by_entity = httpx.post(
        f"{settings.serve_url}/v1/models/meters/predict", json={"meter_id": "m-2"}, timeout=30
    )
    assert by_entity.status_code == 200, by_entity.text
    served = by_entity.json()
    assert served["model_version"] == "1" and served["feature_event_timestamp"].startswith("2014-05-03T23:55")
    assert served["is_anomaly"] is True  # the tampered newest reading
    normal = httpx.post(
        f"{settings.serve_url}/v1/models/meters/predict", json={"meter_id": "m-1"}, timeout=30
    )
    assert normal.status_code == 200 and normal.json()["is_anomaly"] is False
    # By rows: the optional column's feature may be left out.
    row = {name: 50.0 for name in spec.features.feature_names()} | {"phase": 2.0, "tariff_is_night": 1.0}
    del row["humidity"]
    by_rows = httpx.post(
        f"{settings.serve_url}/v1/models/meters/predict", json={"instances": [row]}, timeout=30
    )
    assert by_rows.status_code == 200, by_rows.text
    unknown = httpx.post(f"{settings.serve_url}/v1/models/meters/predict", json={"meter_id": BAD}, timeout=30)
    assert unknown.status_code == 404 and BAD in unknown.json()["error"]

    time.sleep(2.5)  # the prediction log is flushed every second, off the request path
    monitored = materialize(platform, ["predictions", "drift_report", "live_performance"])
    assert monitored.success
    logged = latest_metadata(platform.instance, keys("predictions")[0])
    assert logged["dagster/row_count"] == 3
    drift = latest_metadata(platform.instance, keys("drift_report")[0])
    assert drift["no_data_columns"] == ["humidity"] and "drift_score/kwh" in drift
    live = latest_metadata(platform.instance, keys("live_performance")[0])
    # The two vectors served by entity are judged (one tampered, one not); the row is not.
    assert live["labelled"] == 2 and live["live/rows"] == 2 and live["live/anomaly_share"] == 0.5
    assert live["live/roc_auc"] == 1.0
    live_checks = {e.check_name: e.passed for e in monitored.get_asset_check_evaluations()}
    assert live_checks["live_performance_slo"] is True


def test_the_meters_use_case_scales_in_a_deployment_of_its_own(loop):
    """After the loop above: meters is scored by its own Serve deployment, which autoscales under
    load while the shared one (serving the other use cases) keeps its one replica."""
    from ray import serve

    from ml_platform.serving.deploy import APP_NAME
    from ml_platform.status import serving as serving_status

    platform, _, _ = loop
    settings = platform.settings

    def running() -> dict[str, int]:
        deployments = serve.status().applications[APP_NAME].deployments
        return {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}

    assert running() == {"ModelServer": 1, "ModelServer_meters": 1}
    metadata = httpx.get(f"{settings.serve_url}/v2/models/meters", timeout=30).json()
    assert metadata["versions"] == ["1"] and metadata["parameters"]["deployment"] == "ModelServer_meters"
    assert "meters v1 (ModelServer_meters)" in serving_status(settings, ["meters"]).detail
    # The shared deployment answers for the use cases without a champion as before.
    other = httpx.get(f"{settings.serve_url}/v2/models/sensor_anomaly", timeout=30)
    assert other.status_code == 503, other.text

    answers: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=settings.serve_url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/v1/models/meters/predict", json={"meter_id": "m-2"})
                answers.append(response.status_code)

    clients = [threading.Thread(target=client) for _ in range(6)]
    loaded = time.monotonic()
    for thread in clients:
        thread.start()
    try:
        deadline = loaded + 90
        while running().get("ModelServer_meters", 0) < 2:
            assert time.monotonic() < deadline, f"meters did not scale out: {running()}"
            time.sleep(0.5)
        print(f"meters scaled out {time.monotonic() - loaded:.1f} s into the load, {len(answers)} answers")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    assert running() == {"ModelServer": 1, "ModelServer_meters": 2}
    assert answers and set(answers) == {200}


def test_the_spec_file_lives_outside_the_package(loop):
    from ml_platform.settings import REPO_ROOT
    from ml_platform.usecases import discover

    found = discover(load_settings().use_cases)
    origin = found["meters"].origin
    assert origin.endswith("meters.yaml") and not origin.startswith(str(REPO_ROOT))
    assert sorted(found) == ["card_fraud", "meters", "sensor_anomaly"]
