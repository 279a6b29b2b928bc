"""The whole loop on the embedded default: landed files -> served champion -> drift -> one retrain."""

import datetime as dt
import json
import time
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import pytest

from ml_platform.automation.sensors import RETRAIN_ASSETS
from ml_platform.metadata import latest_metadata
from ml_platform.serving.log import read_prediction_log
from ml_platform.training import registry
from ml_platform.usecases.sensor_anomaly import SPEC
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, redeliver_drifted

from .conftest import DAYS, FIRST_DAY, SENSORS, USE_CASE, key, keys, land_days, make_platform

READINGS_PER_DAY = 24 * 60 // 5
TRAIN_AND_SERVE = [
    "online_features",
    "training_set",
    "model",
    "model_evaluation",
    "champion",
    "deployment",
]
LAST_DAY = FIRST_DAY + dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, ray_cluster):
    platform = make_platform(tmp_path_factory.mktemp("home"))
    land_days(platform, FIRST_DAY, DAYS)
    results = [
        platform.ingest(FIRST_DAY, LAST_DAY),
        platform.materialize(TRAIN_AND_SERVE),
    ]
    platform.results = results
    return platform


def predict(platform, body=None, content=None, **kwargs) -> httpx.Response:
    url = f"{platform.settings.serve_url}/v1/models/{USE_CASE}/predict"
    return httpx.post(url, json=body, content=content, timeout=30, **kwargs)


def test_whole_graph_materializes_with_every_check_passing(platform):
    evaluations = [e for r in platform.results for e in r.get_asset_check_evaluations()]
    assert evaluations, "no asset checks ran"
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert failed == []
    checked = {e.asset_key for e in evaluations}
    assert {key("raw_readings"), key("stg_readings"), key("model_evaluation")} <= checked
    for name in ["raw_readings", "readings_quarantine", "stg_readings", "features", *TRAIN_AND_SERVE]:
        assert platform.instance.get_latest_materialization_event(key(name)) is not None, name


def test_tables_report_row_counts(platform):
    raw = platform.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key("raw_readings"), asset_partitions=[FIRST_DAY.isoformat()]),
        limit=1,
    ).records[0]
    assert raw.asset_materialization.metadata["dagster/row_count"].value == SENSORS * READINGS_PER_DAY * DAYS
    assert latest_metadata(platform.instance, key("readings_quarantine"))["dagster/row_count"] == 0
    features = latest_metadata(platform.instance, key("features"))
    assert features["dagster/row_count"] == SENSORS * READINGS_PER_DAY * DAYS
    assert latest_metadata(platform.instance, key("online_features"))["dagster/row_count"] == SENSORS


def test_model_is_registered_evaluated_and_champion(platform):
    model = latest_metadata(platform.instance, key("model"))
    evaluation = latest_metadata(platform.instance, key("model_evaluation"))
    assert evaluation["model_version"] == model["model_version"]
    assert evaluation["roc_auc"] >= 0.7
    # RAY_ADDRESS names the session's one-node cluster: every trial ran there as a Ray task.
    assert len(model["trial_nodes"]) == 1 and "ray_node" in model["trials"]
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    assert champion is not None and champion.version == model["model_version"]
    assert champion.sha256 == model["artifact_sha256"]
    run = registry.configure(platform.settings).get_run(model["mlflow_run_id"])
    assert run.data.params["seed"] == "42"
    assert run.data.tags["training_content_sha256"]
    assert "test_roc_auc" in run.data.metrics


def test_served_prediction_comes_from_the_champion(platform):
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    response = predict(platform, {"sensor_id": "s-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == champion.version
    assert body["sensor_id"] == "s-1"
    assert isinstance(body["anomaly_score"], float)
    assert body["is_anomaly"] == (body["anomaly_score"] > 0)
    assert len(body["prediction_id"]) == 32

    batch = predict(platform, {"instances": [{"sensor_id": "s-2"}, {"sensor_id": "s-3"}]}).json()
    assert [p["sensor_id"] for p in batch["predictions"]] == ["s-2", "s-3"]
    assert len({p["prediction_id"] for p in batch["predictions"]}) == 2


def test_bad_requests_get_clear_4xx(platform):
    unknown = predict(platform, {"sensor_id": "no-such-sensor"})
    assert unknown.status_code == 404
    assert "no-such-sensor" in unknown.json()["error"]
    malformed = predict(platform, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    assert "JSON" in malformed.json()["error"]
    wrong_shape = predict(platform, {"sensor": "s-1"})
    assert wrong_shape.status_code == 422
    assert "sensor_id" in wrong_shape.json()["error"]
    health = httpx.get(f"{platform.settings.serve_url}/v2/health/ready", timeout=10)
    assert health.json() == {"ready": True}


def post_events(platform, body) -> httpx.Response:
    return httpx.post(f"{platform.settings.serve_url}/v1/events/{USE_CASE}", json=body, timeout=30)


def test_posted_reading_updates_online_features_and_lands(platform):
    before = predict(platform, {"sensor_id": "s-2"}).json()
    newer = dt.datetime.fromisoformat(before["feature_event_timestamp"]) + dt.timedelta(minutes=5)
    reading = {"sensor_id": "s-2", "timestamp": newer.isoformat(), "value": 61.5, "vibration": 1.1}
    response = post_events(platform, reading)
    assert response.status_code == 202 and response.json() == {"accepted": 1}
    # Acknowledged means applied: the very next prediction uses the new reading's features.
    after = predict(platform, {"sensor_id": "s-2"}).json()
    assert after["feature_event_timestamp"] == newer.isoformat()
    assert after["feature_age_s"] >= 0
    landed = [
        json.loads(line)
        for path in platform.landing.glob("events_*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert reading in landed


def test_bad_events_are_refused_whole_with_the_field_named(platform):
    good = {"sensor_id": "s-3", "timestamp": dt.datetime.now(dt.UTC).isoformat(), "value": 1.0}
    response = post_events(platform, [good, {**good, "value": "high"}])
    assert response.status_code == 422
    assert "event 1" in response.json()["error"] and "'value'" in response.json()["error"]
    assert post_events(platform, {"sensor_id": "s-3"}).status_code == 422
    unknown = httpx.post(f"{platform.settings.serve_url}/v1/events/nope", json=good, timeout=30)
    assert unknown.status_code == 404


def test_posted_labels_land_as_a_file_the_landing_sensor_loads(platform):
    """A post states the windows of its days, like a landed file: newer, it wins for those days.
    It restates the day's true windows, so the later tests train on the same labels."""
    from ml_platform.ingestion.labels import label_files, labels_table, read_label_file

    from .conftest import day_range_tags

    labels_dir = platform.settings.labels_dir_for(USE_CASE)
    ((generated, *_),) = label_files(labels_dir)
    start, end = (
        dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) for d in (LAST_DAY, LAST_DAY + dt.timedelta(1))
    )
    true = read_label_file(generated, SPEC).filter((pl.col("start") < end) & (pl.col("end") >= start))
    windows = [{"sensor_id": e, "start": s.isoformat(), "end": f.isoformat()} for e, s, f in true.iter_rows()]
    assert windows, "the generator writes windows on every day"
    url = f"{platform.settings.serve_url}/v1/labels/{USE_CASE}"
    day = LAST_DAY.isoformat()
    bad = [{**windows[0], "end": "x"}]
    refused = httpx.post(url, json={"first_day": day, "last_day": day, "windows": bad}, timeout=30)
    assert refused.status_code == 422 and "window 0: field 'end'" in refused.json()["error"]
    posted = httpx.post(url, json={"first_day": day, "last_day": day, "windows": windows}, timeout=30)
    assert posted.status_code == 202, posted.text
    body = posted.json()
    assert body["accepted"] == len(windows) and body["days"] == [day, day]
    landed = labels_dir / body["file"]
    assert landed.is_file()

    result, _ = platform.tick(platform.sensor("landing_sensor"))
    (request,) = [r for r in result.run_requests if r.run_key.startswith(f"labels:{landed.name}")]
    assert request.tags["dagster/asset_partition_range_start"] == day
    platform.materialize(["raw_labels"], tags=day_range_tags(LAST_DAY, LAST_DAY))
    with platform.defs.resources["warehouse"].get_connection() as conn:
        stored = conn.sql(
            f'SELECT sensor_id, start, "end", source_file FROM {labels_table(SPEC)} WHERE label_day = ?',
            params=[LAST_DAY],
        ).pl()
    assert set(stored["source_file"]) == {str(landed)}
    assert stored.drop("source_file").sort("sensor_id", "start").equals(true.sort("sensor_id", "start"))


def test_features_older_than_the_ttl_are_refused(platform):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    reading = {"sensor_id": "s-stale", "timestamp": old.isoformat(), "value": 50.0}
    assert post_events(platform, reading).status_code == 202
    response = predict(platform, {"sensor_id": "s-stale"})
    assert response.status_code == 409
    assert "TTL" in response.json()["error"] and "s-stale" in response.json()["error"]


def wait_until_logged(platform, ids: list[str], timeout_s: float = 10) -> list[dict]:
    """The log is written off the request path and flushed every second."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_prediction_log(platform.settings.serving_log_dir, USE_CASE)
        if set(ids) <= {r["prediction_id"] for r in records} or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_prediction_log_is_ingested_once(platform):
    ids = [predict(platform, {"sensor_id": f"s-{i}"}).json()["prediction_id"] for i in (1, 2, 4)]
    logged = wait_until_logged(platform, ids)
    assert sum(r["prediction_id"] in ids for r in logged) == len(ids)  # exactly one row each
    platform.materialize(["predictions"])
    first = latest_metadata(platform.instance, key("predictions"))
    platform.materialize(["predictions"])
    second = latest_metadata(platform.instance, key("predictions"))
    assert first["dagster/row_count"] >= len(ids)
    assert second["new_rows"] == 0 and second["dagster/row_count"] == first["dagster/row_count"]
    with platform.defs.resources["warehouse"].get_connection() as conn:
        found = conn.sql(
            f"SELECT count(*) FROM {USE_CASE}.predictions WHERE prediction_id IN ?", params=[ids]
        ).fetchall()[0][0]
    assert found == len(ids)


def test_monitors_read_the_prediction_log(platform):
    from ml_platform.features.online_store import make_online_store

    # Serve s-5 a vector that differs from the offline table: the skew check must name it.
    store = make_online_store(platform.settings)
    state = store.state(USE_CASE, "s-5")
    state.vector = {**state.vector, "value_mean_12": state.vector["value_mean_12"] + 1.0}
    store.update(USE_CASE, "s-5", lambda _: (state, True))
    # The SLO judges the champion on requests from its settle period on, after its promotion.
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    settled = registry.promoted_at(platform.settings, USE_CASE, champion.version) + SPEC.monitoring.slo_settle
    time.sleep(max(0.0, (settled - dt.datetime.now(dt.UTC)).total_seconds()))
    ids = [predict(platform, {"sensor_id": s}).json()["prediction_id"] for s in ("s-1", "s-5", "s-6")]
    wait_until_logged(platform, ids)
    result = platform.materialize(["predictions", "live_performance", "feature_skew", "serving_slo"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    skewed = checks["online_offline_skew"]
    assert skewed.passed is False and skewed.metadata["skewed_features"].value == ["value_mean_12"]
    assert latest_metadata(platform.instance, key("feature_skew"))["compared_rows"] >= 3
    slo = latest_metadata(platform.instance, key("serving_slo"))
    assert slo["champion/p99_ms"] > 0 and slo["champion/requests"] >= 3
    assert checks["serving_slo"].passed
    live = latest_metadata(platform.instance, key("live_performance"))
    assert live["predictions"] >= 3 and 0 <= live["label_coverage"] <= 1
    # Put the true vector back for the tests that follow.
    platform.materialize(["online_features"])


def test_clean_data_shows_no_drift(platform):
    platform.materialize(["drift_report"])
    report = latest_metadata(platform.instance, key("drift_report"))
    assert report["dataset_drift"] is False
    assert 0 <= report["drift_share"] < 0.5
    assert all(isinstance(report[f"drift_score/{c}"], float) for c in ("value", "vibration"))
    # The verdicts on every row agree with Evidently's on the report's sample.
    assert report["report_sample_agreement"] >= 0.9
    assert report["tests"]["value"] == "Wasserstein distance (normed)"
    html = report["report"]
    text = Path(html).read_text()
    assert html.endswith(".html") and "<html" in text
    assert all(column in text for column in ("value_mean_12", "vibration"))


def test_drifted_batch_requests_exactly_one_retrain(platform):
    # Handle the clean report first, as the running sensor would have.
    _, cursor = platform.tick(platform.sensor("retrain_sensor"), None)
    drift_from = LAST_DAY - dt.timedelta(days=1)
    # The outside system re-delivers the last two days, shifted: a new version of each file.
    redeliver_drifted(platform.landing, [drift_from, LAST_DAY], SensorDataConfig(sensors=SENSORS))
    platform.ingest(drift_from, LAST_DAY)
    platform.materialize(["online_features", "drift_report"])
    report = latest_metadata(platform.instance, key("drift_report"))
    assert report["dataset_drift"] is True, report
    assert report["report_sample_agreement"] >= 0.9

    result, cursor = platform.tick(platform.sensor("retrain_sensor"), cursor)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    assert request.run_key.startswith(f"retrain:{USE_CASE}:champion-v{champion.version}:features-")
    assert report["report_id"] in request.tags["ml_platform/reasons"]
    assert set(request.asset_selection) == set(keys(*RETRAIN_ASSETS))

    again, _ = platform.tick(platform.sensor("retrain_sensor"), cursor)
    assert again.run_requests == []
    assert "no drift" in again.skip_message


def test_retrain_requested_by_drift_runs_through_the_gate(platform):
    before = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    platform.materialize(list(RETRAIN_ASSETS))
    after = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    assert int(after.version) == int(before.version) + 1
    assert registry.alias_ref(platform.settings, USE_CASE, registry.PREVIOUS).version == before.version
    client = registry.configure(platform.settings)
    moved = json.loads(client.get_model_version(USE_CASE, after.version).tags["champion.moved"])
    assert moved["from_version"] == before.version and moved["reason"] == "passed the evaluation gate"
    assert registry.history(platform.settings, USE_CASE)[-1]["to_version"] == after.version
    assert predict(platform, {"sensor_id": "s-1"}).json()["model_version"] == after.version
