"""Each supervised task through the whole graph, from a user's own YAML specs: a binary classifier
(pump failures from 2015, per-event 0 / 1 labels landed as a file) and a regression (store
visitors' spending from 2013, numeric labels posted through the endpoint). Ingest, staging,
features, training with the task's estimator, the gate with the task's metrics, the champion,
Ray Serve by entity and by rows (v1 and v2), batch predictions that agree with online ones, the
prediction log, drift of the task's score, and live performance from the labels."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.metadata import latest_metadata
from ml_platform.settings import load_settings
from ml_platform.tasks.classification import threshold_of
from ml_platform.usecases import use_cases

from .conftest import Platform, day_range_tags

FAILURES = """\
name: failures
description: Pump failures, labelled reading by reading once the maintenance report is in.
entity: pump_id
timestamp: at
table: pump_readings
columns:
  - {name: pump_id, dtype: string}
  - {name: at, dtype: timestamp}
  - {name: pressure, dtype: float, min_value: 0, max_value: 50}
  - {name: temperature, dtype: float}
  - {name: mode, dtype: string, allowed_values: [eco, boost]}
expectations: {key: [pump_id, at]}
features:
  features:
    - {kind: value, column: pressure}
    - {kind: value, column: temperature}
    - {kind: rolling, column: temperature, agg: mean, rows: 6}
    - {kind: is_value, column: mode, value: boost}
  ttl: 5000d
model:
  task: binary_classification
  algorithm: logistic_regression
  params: {C: 1.0}
  search_space: {C: [0.1, 1.0]}
  trials: 2
  threshold_objective: f1
gate:
  min_metrics: {roc_auc: 0.75}
  max_metrics: {brier: 0.2}
  max_regression: {roc_auc: 0.05, log_loss: 0.1}
  per_entity: true
  scope_min_metrics: {roc_auc: 0.55}
drift: {columns: [pressure, temperature]}
labels: {kind: event_labels, column: failed}
monitoring: {label_lateness: 1d, min_labelled_rows: 1, min_live_metrics: {roc_auc: 0.5}}
partitions_start: 2015-03-01
"""
SPENDING = """\
name: spending
description: What a store's visitors spend in an hour, known once the tills are reconciled.
entity: store_id
timestamp: hour
table: store_hours
columns:
  - {name: store_id, dtype: string}
  - {name: hour, dtype: timestamp}
  - {name: visitors, dtype: integer, min_value: 0}
  - {name: promo, dtype: boolean}
expectations: {key: [store_id, hour]}
features:
  features:
    - {kind: value, column: visitors}
    - {kind: rolling, column: visitors, agg: mean, rows: 24}
    - {kind: value, column: promo}
    - {kind: hour_of_day}
  ttl: 10000d
model:
  task: regression
  algorithm: hist_gradient_boosting
  params: {max_iter: 60}
  trials: 1
gate:
  min_metrics: {r2: 0.6}
  max_metrics: {rmse: 60}
  max_regression: {mae: 5}
  baseline: {algorithm: ridge, features: [visitors_mean_24]}
drift: {columns: [visitors]}
labels: {kind: event_labels, column: spent}
monitoring: {label_lateness: 1d, min_labelled_rows: 1, max_live_metrics: {mae: 100}}
partitions_start: 2013-01-01
"""
FAULTS = """\
name: faults
description: Which fault a motor shows, diagnosed reading by reading by the maintenance crew.
entity: motor_id
timestamp: at
table: motor_readings
columns:
  - {name: motor_id, dtype: string}
  - {name: at, dtype: timestamp}
  - {name: vibration, dtype: float, min_value: 0}
  - {name: current, dtype: float}
expectations: {key: [motor_id, at]}
features:
  features:
    - {kind: value, column: vibration}
    - {kind: value, column: current}
    - {kind: rolling, column: vibration, agg: mean, rows: 6}
  ttl: 5000d
model:
  task: multiclass_classification
  classes: [healthy, bearing, electrical]
  algorithm: logistic_regression
  search_space: {C: [0.1, 1.0]}
  trials: 2
gate:
  min_metrics: {macro_f1: 0.6, roc_auc: 0.8}
  max_metrics: {log_loss: 0.8}
  max_regression: {accuracy: 0.05}
drift: {columns: [vibration, current]}
labels: {kind: event_labels, column: fault}
monitoring: {label_lateness: 1d, min_labelled_rows: 1, min_live_metrics: {accuracy: 0.5}}
partitions_start: 2016-06-01
"""
PUMPS = [f"p-{i}" for i in range(6)]
PUMP_TIMES = pd.date_range("2015-03-01", "2015-03-03 23:50", freq="10min", tz="UTC")
MOTORS = [f"m-{i}" for i in range(6)]
MOTOR_TIMES = pd.date_range("2016-06-01", "2016-06-03 23:50", freq="10min", tz="UTC")
STORES = [f"s-{i}" for i in range(6)]
STORE_TIMES = pd.date_range("2013-01-01", "2013-01-07 23:00", freq="1h", tz="UTC")


def pump_readings() -> pd.DataFrame:
    """Failures get likelier with heat, pressure and boost mode: about 6% of the readings."""
    rng = np.random.default_rng(11)
    frames = []
    for pump in PUMPS:
        n = len(PUMP_TIMES)
        temperature = 60 + np.cumsum(rng.normal(0, 0.6, n)) * 0.3 + rng.normal(0, 3, n)
        pressure = np.clip(20 + rng.normal(0, 4, n), 0, 50)
        boost = rng.random(n) < 0.3
        logit = -4.2 + 0.35 * (temperature - 60) + 0.25 * (pressure - 20) + 1.2 * boost
        failed = rng.random(n) < 1 / (1 + np.exp(-logit))
        frames.append(
            pd.DataFrame(
                {
                    "pump_id": pump,
                    "at": PUMP_TIMES.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "pressure": pressure.round(3),
                    "temperature": temperature.round(3),
                    "mode": np.where(boost, "boost", "eco"),
                    "failed": failed.astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def motor_readings() -> pd.DataFrame:
    """A worn bearing shakes, an electrical fault draws current; most readings are healthy."""
    rng = np.random.default_rng(13)
    frames = []
    for motor in MOTORS:
        n = len(MOTOR_TIMES)
        fault = rng.choice(["healthy", "bearing", "electrical"], size=n, p=[0.6, 0.25, 0.15])
        vibration = np.clip(rng.normal(2.0, 0.6, n) + 2.0 * (fault == "bearing"), 0, None)
        current = rng.normal(10.0, 1.0, n) + 3.0 * (fault == "electrical")
        frames.append(
            pd.DataFrame(
                {
                    "motor_id": motor,
                    "at": MOTOR_TIMES.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "vibration": vibration.round(3),
                    "current": current.round(3),
                    "fault": fault,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def store_hours() -> pd.DataFrame:
    """Spending follows visitors, more so with a promotion."""
    rng = np.random.default_rng(12)
    frames = []
    for store in STORES:
        n = len(STORE_TIMES)
        daily = 30 + 25 * np.sin((STORE_TIMES.hour.to_numpy() - 6) / 24 * 2 * np.pi)
        visitors = np.maximum(0, rng.poisson(np.maximum(daily, 1)))
        promo = rng.random(n) < 0.2
        spent = 4.0 * visitors + 40.0 * promo + rng.normal(0, 8, n)
        frames.append(
            pd.DataFrame(
                {
                    "store_id": store,
                    "hour": STORE_TIMES.strftime("%Y-%m-%d %H:%M:%S"),  # no offset: UTC
                    "visitors": visitors,
                    "promo": np.where(promo, "true", "false"),
                    "spent": spent.round(2),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def loop(tmp_path_factory, ray_cluster):
    repo = tmp_path_factory.mktemp("user-repo")
    (repo / "failures.yaml").write_text(FAILURES)
    (repo / "spending.yaml").write_text(SPENDING)
    (repo / "faults.yaml").write_text(FAULTS)
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_HOME", str(tmp_path_factory.mktemp("tasks-home")))
    names = ("failures", "spending", "faults")
    mp.setenv("ML_PLATFORM_USE_CASES", ",".join(str(repo / f"{name}.yaml") for name in names))
    settings = load_settings()
    found = use_cases(settings)
    specs = [found[name] for name in names]
    platform = Platform(settings, build_definitions(settings, specs), dg.DagsterInstance.ephemeral())
    pumps, stores, motors = pump_readings(), store_hours(), motor_readings()
    landing = settings.landing_dir_for("failures")
    (landing / "labels").mkdir(parents=True)
    pumps.drop(columns="failed").to_csv(landing / "pumps.csv", index=False)
    pumps[["pump_id", "at", "failed"]].to_csv(
        landing / "labels" / "failures_2015-03-01_2015-03-03.csv", index=False
    )
    landing = settings.landing_dir_for("spending")
    landing.mkdir(parents=True)
    stores.drop(columns="spent").to_csv(landing / "stores.csv", index=False)
    landing = settings.landing_dir_for("faults")
    (landing / "labels").mkdir(parents=True)
    motors.drop(columns="fault").to_csv(landing / "motors.csv", index=False)
    motors[["motor_id", "at", "fault"]].to_csv(
        landing / "labels" / "faults_2016-06-01_2016-06-03.csv", index=False
    )
    from ml_platform.serving.deploy import deploy

    deploy(settings)
    yield platform, pumps, stores, motors
    mp.undo()


def materialize(platform: Platform, use_case: str, names: list[str], **kwargs):
    return dg.materialize(
        platform.defs.assets,
        selection=[dg.AssetKey([use_case, n]) for n in names],
        instance=platform.instance,
        resources=platform.defs.resources,
        **kwargs,
    )


def metadata(platform: Platform, use_case: str, name: str) -> dict:
    return latest_metadata(platform.instance, dg.AssetKey([use_case, name]))


def train_and_serve(platform: Platform, use_case: str, first: dt.date, last: dt.date) -> None:
    spec = use_cases(platform.settings)[use_case]
    ingested = materialize(
        platform,
        use_case,
        [spec.raw_name, spec.quarantine_name, spec.staged_name, "features", "raw_labels"],
        tags=day_range_tags(first, last),
    )
    assert ingested.success
    trained = materialize(
        platform, use_case, ["online_features", "training_set", "model", "model_evaluation", "champion"]
    )
    failed = [e.check_name for e in trained.get_asset_check_evaluations() if not e.passed]
    assert trained.success and failed == []
    assert metadata(platform, use_case, "champion")["champion_version"] == "1"


def predict(platform: Platform, use_case: str, body: dict) -> dict:
    answer = httpx.post(f"{platform.settings.serve_url}/v1/models/{use_case}/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_until_served(platform: Platform, use_case: str, body: dict) -> dict:
    """The replicas follow the registry: the new champion serves within a few seconds."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = httpx.post(
            f"{platform.settings.serve_url}/v1/models/{use_case}/predict", json=body, timeout=30
        )
        if answer.status_code == 200:
            return answer.json()
        time.sleep(1)
    raise AssertionError(f"{use_case} not served: {answer.text}")


def champion_model(platform: Platform, use_case: str):
    from ml_platform.tasks import task_of
    from ml_platform.training import registry

    spec = use_cases(platform.settings)[use_case]
    ref = registry.alias_ref(platform.settings, use_case, registry.CHAMPION)
    return registry.load_verified_model(ref, platform.settings.run_dir / "model_cache", task_of(spec))


def batch_row(platform: Platform, use_case: str, entity: str, at: str) -> dict:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        table = f"{use_case}.batch_predictions"
        spec = use_cases(platform.settings)[use_case]
        query = f"SELECT * FROM {table} WHERE {spec.entity} = ? AND event_timestamp = CAST(? AS TIMESTAMPTZ)"
        return conn.sql(query, params=[entity, at]).pl().to_dicts()[0]


def newest_feature_row(platform: Platform, use_case: str, entity: str) -> dict:
    """The entity's newest row of the offline feature table, as full feature values a caller sends."""
    spec = use_cases(platform.settings)[use_case]
    with platform.defs.resources["warehouse"].get_connection() as conn:
        query = f"SELECT * FROM {use_case}.features WHERE {spec.entity} = ?"
        row = conn.sql(f"{query} ORDER BY event_timestamp DESC LIMIT 1", params=[entity]).pl()
    return row.select(spec.features.feature_names()).to_dicts()[0]


def test_a_binary_classifier_goes_through_the_whole_loop(loop):
    platform, pumps, _, _ = loop
    first, last = dt.date(2015, 3, 1), dt.date(2015, 3, 3)
    train_and_serve(platform, "failures", first, last)
    model = metadata(platform, "failures", "model")
    assert model["task"] == "binary_classification" and 0 < model["threshold"] < 1
    assert model["threshold_chosen_by"].startswith("best F1 on validation")
    evaluation = metadata(platform, "failures", "model_evaluation")
    assert evaluation["roc_auc"] > 0.8 and 0 < evaluation["brier"] < 0.2 and evaluation["log_loss"] > 0
    assert {"precision", "recall", "f1", "average_precision", "calibration_error"} <= set(evaluation)
    assert "sensor_id" not in evaluation["per_entity"] and "pump_id=p-0" in evaluation["per_entity"]
    assert "mean_probability" in evaluation["calibration"] and str(evaluation["calibration_plot"]).endswith(
        ".png"
    )

    # By entity: the newest reading's features from the online store, the class at the threshold.
    threshold = threshold_of(champion_model(platform, "failures"))
    served = wait_until_served(platform, "failures", {"pump_id": "p-3"})
    assert served["model_version"] == "1" and served["feature_event_timestamp"].startswith("2015-03-03T23:50")
    assert 0 <= served["probability"] <= 1
    assert served["predicted_label"] == int(served["probability"] >= threshold)
    assert "anomaly_score" not in served and "is_anomaly" not in served
    # Batch and online agree on the same feature row; so do full rows sent by the caller.
    materialize(platform, "failures", ["batch_predictions"], partition_key=last.isoformat())
    batch = batch_row(platform, "failures", "p-3", served["feature_event_timestamp"])
    assert batch["probability"] == pytest.approx(served["probability"], abs=1e-12)
    assert batch["predicted_label"] == served["predicted_label"]
    by_rows = predict(platform, "failures", {"instances": [newest_feature_row(platform, "failures", "p-3")]})
    assert by_rows["predictions"][0]["probability"] == pytest.approx(served["probability"], abs=1e-12)
    # A payment-like event sent with the request: scored on the entity's history as if it had just
    # arrived, without storing it; once it is posted as an event, the entity answers the same.
    event = {
        "pump_id": "p-3",
        "at": "2015-03-04T00:00:00Z",
        "pressure": 45.0,
        "temperature": 80.0,
        "mode": "boost",
    }
    scored = predict(platform, "failures", event)
    assert scored["feature_event_timestamp"].startswith("2015-03-04T00:00")
    assert scored["probability"] > served["probability"]  # hotter, higher pressure, boost
    assert (
        predict(platform, "failures", {"pump_id": "p-3"})["probability"] == served["probability"]
    )  # not stored
    posted = httpx.post(f"{platform.settings.serve_url}/v1/events/failures", json=event, timeout=30)
    assert posted.status_code == 202, posted.text
    after = predict(platform, "failures", {"pump_id": "p-3"})
    assert after["probability"] == pytest.approx(scored["probability"], abs=1e-12)
    refused = httpx.post(
        f"{platform.settings.serve_url}/v1/models/failures/predict",
        json={**event, "mode": "turbo"},
        timeout=30,
    )
    assert refused.status_code == 422 and "'mode' is 'turbo'" in refused.json()["error"]
    # Open Inference Protocol v2: the task's output tensors.
    v2 = httpx.post(
        f"{platform.settings.serve_url}/v2/models/failures/infer",
        json={"inputs": [{"name": "pump_id", "shape": [1], "datatype": "BYTES", "data": ["p-3"]}]},
        timeout=30,
    ).json()
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probability"]["datatype"] == "FP64" and outputs["predicted_label"]["datatype"] == "INT64"
    assert outputs["predicted_label"]["data"] == [after["predicted_label"]]  # p-3 now at the posted event
    described = httpx.get(f"{platform.settings.serve_url}/v2/models/failures", timeout=30).json()
    assert [o["name"] for o in described["outputs"]] == ["probability", "predicted_label", "prediction_id"]

    for pump in PUMPS[:3]:  # p-3's newest vector is now the posted event's
        predict(platform, "failures", {"pump_id": pump})
    monitored = materialize(platform, "failures", ["predictions", "drift_report", "live_performance"])
    assert monitored.success
    with platform.defs.resources["warehouse"].get_connection() as conn:
        logged = conn.sql("SELECT probability, predicted_label FROM failures.predictions").fetchall()
    assert len(logged) >= len(PUMPS) + 1 and all(0 <= p <= 1 and c in (0, 1) for p, c in logged)
    drift = metadata(platform, "failures", "drift_report")
    assert "drift_score/probability" in drift  # prediction drift of the task's score
    live = metadata(platform, "failures", "live_performance")
    # The served readings the landed file labels (the posted event of 2015-03-04 has no label).
    assert live["labelled"] == 4 and live["live/rows"] == 4 and "live/brier" in live


def test_a_regression_goes_through_the_whole_loop(loop):
    platform, _, stores, _ = loop
    first, last = dt.date(2013, 1, 1), dt.date(2013, 1, 7)
    # Labels posted through the endpoint, as numbers; a label that is not one is refused whole.
    url = f"{platform.settings.serve_url}/v1/labels/spending"
    labels = [
        {"store_id": r.store_id, "hour": f"{r.hour}Z".replace(" ", "T"), "spent": r.spent}
        for r in stores.itertuples()
    ]
    refused = httpx.post(url, json=[{**labels[0], "spent": "a lot"}], timeout=30)
    assert refused.status_code == 422 and "must be a finite number" in refused.json()["error"]
    posted = httpx.post(url, json={"labels": labels}, timeout=30)
    assert posted.status_code == 202 and posted.json()["accepted"] == len(labels)

    train_and_serve(platform, "spending", first, last)
    evaluation = metadata(platform, "spending", "model_evaluation")
    assert evaluation["r2"] > 0.6 and 0 < evaluation["mae"] < evaluation["rmse"] < 60
    assert "roc_auc" not in evaluation and "compared_positive_events" not in evaluation
    assert evaluation["baseline/rmse"] > evaluation["rmse"]  # the hourly mean alone misses promotions

    served = wait_until_served(platform, "spending", {"store_id": "s-2"})
    assert set(served) >= {"prediction", "prediction_id", "model_version"} and "probability" not in served
    materialize(platform, "spending", ["batch_predictions"], partition_key=last.isoformat())
    batch = batch_row(platform, "spending", "s-2", served["feature_event_timestamp"])
    assert batch["prediction"] == pytest.approx(served["prediction"], abs=1e-9)
    newest = stores[stores.store_id == "s-2"].iloc[-1]
    assert abs(served["prediction"] - newest.spent) < 40  # the newest hour, from its visitors
    by_rows = predict(platform, "spending", {"instances": [newest_feature_row(platform, "spending", "s-2")]})
    assert by_rows["predictions"][0]["prediction"] == pytest.approx(served["prediction"], abs=1e-9)

    for store in STORES:
        predict(platform, "spending", {"store_id": store})
    monitored = materialize(platform, "spending", ["predictions", "drift_report", "live_performance"])
    assert monitored.success
    assert "drift_score/prediction" in metadata(platform, "spending", "drift_report")
    live = metadata(platform, "spending", "live_performance")
    assert live["labelled"] == len(STORES) and 0 < live["live/mae"] < 40
    checks = {e.check_name: e.passed for e in monitored.get_asset_check_evaluations()}
    assert checks["live_performance_slo"] is True


def test_a_multiclass_classifier_goes_through_the_whole_loop(loop):
    import tritonclient.grpc as triton_grpc

    platform, _, _, motors = loop
    classes = ["healthy", "bearing", "electrical"]
    # A posted label that is not one of the classes is refused whole, naming them.
    refused = httpx.post(
        f"{platform.settings.serve_url}/v1/labels/faults",
        json=[{"motor_id": "m-0", "at": "2016-06-01T00:00:00Z", "fault": "rusty"}],
        timeout=30,
    )
    assert refused.status_code == 422 and "one of the classes healthy, bearing, electrical" in refused.text

    train_and_serve(platform, "faults", dt.date(2016, 6, 1), dt.date(2016, 6, 3))
    assert metadata(platform, "faults", "model")["task"] == "multiclass_classification"
    assert metadata(platform, "faults", "training_set")["label_classes"] == 3
    evaluation = metadata(platform, "faults", "model_evaluation")
    assert evaluation["macro_f1"] > 0.6 and evaluation["roc_auc"] > 0.8 and 0 < evaluation["log_loss"] < 0.8
    assert 0 < evaluation["brier"] < 2 and evaluation["accuracy"] > 0.6
    assert "predicted_bearing" in str(evaluation["confusion_matrix"])

    # By entity: a probability per class, the likeliest class and its probability.
    served = wait_until_served(platform, "faults", {"motor_id": "m-2"})
    probabilities = [served[f"probability_{c}"] for c in classes]
    assert sum(probabilities) == pytest.approx(1.0) and served["probability"] == max(probabilities)
    assert served["predicted_class"] == classes[int(np.argmax(probabilities))]
    # Readings of each kind are told apart: a shaking motor, one drawing current, a quiet one.
    for fault, reading in (
        ("bearing", {"vibration": 4.5, "current": 10.0}),
        ("electrical", {"vibration": 2.0, "current": 14.0}),
        ("healthy", {"vibration": 2.0, "current": 10.0}),
    ):
        row = {"vibration": reading["vibration"], "current": reading["current"], "vibration_mean_6": 2.5}
        assert predict(platform, "faults", row)["predicted_class"] == fault
    # Batch and online agree; v2 over HTTP and gRPC answer the class as BYTES.
    materialize(platform, "faults", ["batch_predictions"], partition_key="2016-06-03")
    batch = batch_row(platform, "faults", "m-2", served["feature_event_timestamp"])
    assert batch["predicted_class"] == served["predicted_class"]
    for c in classes:
        assert batch[f"probability_{c}"] == pytest.approx(served[f"probability_{c}"], abs=1e-12)
    by_rows = predict(platform, "faults", {"instances": [newest_feature_row(platform, "faults", "m-2")]})
    assert by_rows["predictions"][0]["predicted_class"] == served["predicted_class"]
    for c in classes:
        assert by_rows["predictions"][0][f"probability_{c}"] == pytest.approx(
            served[f"probability_{c}"], abs=1e-12
        )
    client = triton_grpc.InferenceServerClient(platform.settings.grpc_address)
    ids = triton_grpc.InferInput("motor_id", [1], "BYTES")
    ids.set_data_from_numpy(np.array([b"m-2"], dtype=object))
    answer = client.infer("faults", [ids])
    assert answer.as_numpy("predicted_class").tolist() == [served["predicted_class"].encode()]
    assert answer.as_numpy("probability_bearing")[0] == pytest.approx(
        served["probability_bearing"], abs=1e-12
    )

    for motor in MOTORS:
        predict(platform, "faults", {"motor_id": motor})
    monitored = materialize(platform, "faults", ["predictions", "drift_report", "live_performance"])
    assert monitored.success
    assert "drift_score/probability" in metadata(platform, "faults", "drift_report")
    live = metadata(platform, "faults", "live_performance")
    # Each motor's newest reading, served by entity and labelled by the landed file.
    newest = motors.groupby("motor_id").tail(1).set_index("motor_id")["fault"]
    logged = {r["motor_id"]: r["predicted_class"] for r in _predictions(platform, "faults")}
    accuracy = np.mean([logged[m] == newest[m] for m in MOTORS])
    assert live["labelled"] == len(MOTORS) and live["live/accuracy"] == pytest.approx(accuracy)
    assert "live/log_loss" in live and "live/macro_f1" in live


def _predictions(platform: Platform, use_case: str) -> list[dict]:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        return conn.sql(f"SELECT * FROM {use_case}.predictions").pl().to_dicts()
