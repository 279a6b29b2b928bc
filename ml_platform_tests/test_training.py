"""Training, the gate and the registry: only a better, tested, reproducible model reaches users."""

import dataclasses
import datetime as dt
import pickle
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from ml_platform.cli import main
from ml_platform.home import prepare_home
from ml_platform.metadata import describe_failed_check, failed_checks, latest_metadata
from ml_platform.tasks import task_of
from ml_platform.training import registry
from ml_platform.training.assets import build_training_assets
from ml_platform.training.evaluate import model_input
from ml_platform.training.steps import GATE_PASSED_TAG, read_split
from ml_platform.usecases import get_use_case

from .conftest import (
    DAYS,
    FIRST_DAY,
    USE_CASE,
    day_range_tags,
    key,
    land_days,
    make_platform,
    materialize_on_cluster,
)

SPEC = get_use_case(USE_CASE)
TASK = task_of(SPEC)
TRAIN = ["training_set", "model", "model_evaluation", "champion"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    platform = make_platform(tmp_path_factory.mktemp("training-home"))
    prepare_home(platform.settings)
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    platform.materialize(["training_set"])
    return platform


def train_with(platform, spec, names=TRAIN):
    """Materialize the training assets as built from ``spec`` (a variant of the use case)."""
    return dg.materialize(
        build_training_assets(spec),
        selection=[key(n) for n in names],
        instance=platform.instance,
        resources=platform.defs.resources,
        raise_on_error=False,
    )


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def features_and_labels(platform, split="test"):
    frame = read_split(platform.defs.resources["warehouse"], SPEC, split)
    return model_input(frame.to_pandas(), SPEC.features.feature_names()), frame["label"].to_numpy()


def test_a_better_candidate_is_promoted(platform):
    # A weak champion, registered and promoted by hand.
    train, _ = features_and_labels(platform, "train")
    weak = dataclasses.replace(
        SPEC.model, params={"n_estimators": 1, "max_samples": 4, "contamination": 0.02}
    )
    ref = registry.log_candidate(
        platform.settings,
        SPEC,
        TASK.build(weak.algorithm, weak.params, weak.seed).fit(train),
        train.head(5),
        {},
        {},
        {},
    )
    registry.move_alias(platform.settings, USE_CASE, ref.version, registry.CHAMPION, "test setup", "test")

    result = train_with(platform, SPEC)
    assert result.success
    assert all(e.passed for e in checks(result).values())
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    assert int(champion.version) == int(ref.version) + 1
    assert registry.alias_ref(platform.settings, USE_CASE, registry.PREVIOUS).version == ref.version
    move = registry.history(platform.settings, USE_CASE)[-1]
    assert move["to_version"] == champion.version and move["by"].startswith("dagster run ")
    metadata = latest_metadata(platform.instance, key("model"))
    assert metadata["mlflow_run"].startswith(platform.settings.mlflow_ui_url)
    run = registry.configure(platform.settings).get_run(metadata["mlflow_run_id"])
    assert run.data.tags["training_content_sha256"] and run.data.tags["library.scikit-learn"]
    assert run.data.params["seed"] == str(SPEC.model.seed) and "selected_on" in run.data.params


# A deliberately weak model, judged only by the comparison with the champion.
WORSE = dataclasses.replace(
    SPEC,
    model=dataclasses.replace(
        SPEC.model, params={"n_estimators": 2, "max_samples": 8, "contamination": 0.02}, search_space={}
    ),
    gate=dataclasses.replace(SPEC.gate, min_metrics={}),
)


def test_a_worse_candidate_is_stopped_by_the_gate(platform):
    before = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    result = train_with(platform, WORSE)
    assert not result.success
    gate = checks(result)["not_worse_than_champion"]
    assert gate.passed is False
    assert "average_precision" in gate.metadata["regressions"].value
    # The refusal explains itself: the rows compared, and champion against candidate per metric.
    test_rows = latest_metadata(platform.instance, key("training_set"))["test_rows"]
    assert gate.metadata["compared_rows"].value == test_rows
    assert gate.metadata["compared_positive_events"].value >= SPEC.gate.min_positive_events
    assert gate.metadata["champion_version"].value == before.version
    assert (
        gate.metadata["candidate/average_precision"].value < gate.metadata["champion/average_precision"].value
    )
    assert "| overall | average_precision |" in gate.metadata["comparison"].value
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert key("champion") not in materialized
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION) == before
    candidate = latest_metadata(platform.instance, key("model"))["model_version"]
    tags = registry.configure(platform.settings).get_model_version(USE_CASE, candidate).tags
    assert tags[GATE_PASSED_TAG] == "false"


def test_rollback_restores_the_previous_model(platform, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(platform.settings.home))
    # Nothing serves this home: with the session's cluster named, the command would wait for
    # serving to switch (whatever another module left serving on the port decided the outcome).
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    previous = registry.alias_ref(platform.settings, USE_CASE, registry.PREVIOUS)
    outcome = CliRunner().invoke(main, ["rollback", USE_CASE, "--reason", "test rollback"])
    assert outcome.exit_code == 0, outcome.output
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version == previous.version
    assert registry.alias_ref(platform.settings, USE_CASE, registry.PREVIOUS).version == champion.version
    move = registry.history(platform.settings, USE_CASE)[-1]
    assert move["reason"] == "test rollback" and move["by"].startswith("ml-platform cli")
    with dg.DagsterInstance.from_config(str(platform.settings.dagster_home)) as instance:
        shown = latest_metadata(instance, key("champion"))
    assert shown["champion_version"] == previous.version and shown["reason"] == "test rollback"

    # And back: promote picks the newest version that passed the gate.
    outcome = CliRunner().invoke(main, ["promote", USE_CASE])
    assert outcome.exit_code == 0, outcome.output
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version == champion.version


def test_retraining_is_reproducible(platform):
    versions = []
    for _ in range(2):
        result = train_with(platform, SPEC, ["model", "model_evaluation"])
        assert result.success
        versions.append(latest_metadata(platform.instance, key("model_evaluation")))
    first, second = versions
    assert first["model_version"] != second["model_version"]
    for metric in ("roc_auc", "average_precision", "precision", "recall", "f1", "window_recall"):
        assert first[metric] == second[metric], metric
    test, _ = features_and_labels(platform)
    cache = platform.settings.model_cache
    scores = [
        TASK.scores(
            registry.load_verified_model(registry.model_ref(platform.settings, USE_CASE, v), cache, TASK),
            test,
        )
        for v in (first["model_version"], second["model_version"])
    ]
    assert np.array_equal(scores[0], scores[1])


def artifact_dir(source: str) -> Path:
    """Where the registry's file store keeps a model version's artifacts (``models:/<id>``)."""
    import mlflow

    return Path(urlparse(mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location).path)


class _Marker:
    """Unpickling this creates a file: the sign that an artifact ran code on load."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_tampered_or_pickled_artifacts_are_refused(platform, tmp_path):
    train, _ = features_and_labels(platform, "train")
    settings = platform.settings
    marker = tmp_path / "code-ran-on-load"

    # A version whose artifact is a pickle: its sha256 is right, its format is not loaded.
    import mlflow

    registry.configure(settings)
    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings, USE_CASE)):
        info = mlflow.sklearn.log_model(
            TASK.build(SPEC.model.algorithm, SPEC.model.params, SPEC.model.seed).fit(train),
            name="model",
            serialization_format="pickle",
            registered_model_name=USE_CASE,
            pip_requirements=[],
        )
    version = str(info.registered_model_version)
    stored = artifact_dir(registry.configure(settings).get_model_version(USE_CASE, version).source)
    next(stored.glob("*.pkl")).write_bytes(pickle.dumps(_Marker(str(marker))))
    sha = registry.artifact_digest(stored)
    registry.configure(settings).set_model_version_tag(USE_CASE, version, registry.SHA_TAG, sha)
    with pytest.raises(registry.ArtifactIntegrityError, match="only skops artifacts"):
        registry.load_verified_model(
            registry.model_ref(settings, USE_CASE, version), tmp_path / "cache", TASK
        )
    assert not marker.exists()

    # A skops artifact changed after registration: its sha256 no longer matches.
    champion = registry.alias_ref(settings, USE_CASE, registry.CHAMPION)
    skops_file = artifact_dir(champion.source) / "model.skops"
    original = skops_file.read_bytes()
    try:
        skops_file.write_bytes(original + b"\0")
        with pytest.raises(registry.ArtifactIntegrityError, match="does not match the recorded"):
            registry.load_verified_model(champion, tmp_path / "cache2", TASK)
        assert list((tmp_path / "cache2" / USE_CASE).iterdir()) == []  # no copy of it kept, whole or half
    finally:
        skops_file.write_bytes(original)

    # A cached copy changed on disk is fetched again, whole, before anything loads it.
    registry.load_verified_model(champion, tmp_path / "cache3", TASK)
    cached = tmp_path / "cache3" / USE_CASE / champion.version / "model.skops"
    cached.write_bytes(b"\0")
    registry.load_verified_model(champion, tmp_path / "cache3", TASK)
    assert cached.read_bytes() == original
    assert [p.name for p in (tmp_path / "cache3" / USE_CASE).iterdir()] == [champion.version]


def test_an_artifact_holding_a_type_the_project_does_not_trust_is_refused(platform, tmp_path):
    """skops loads whatever type it is told to trust: the project's list is the only one it is told,
    never one read from the artifact. A function reference is code a load would call."""
    import operator

    import mlflow
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    train, _ = features_and_labels(platform, "train")
    steps = [("negate", FunctionTransformer(operator.neg)), ("model", IsolationForest(n_estimators=5))]
    settings = platform.settings
    registry.configure(settings)
    # Registered by another client that trusted the function; its sha256 is recorded and right.
    with mlflow.start_run(experiment_id=registry.ensure_experiment(settings, USE_CASE)):
        info = mlflow.sklearn.log_model(
            Pipeline(steps).fit(train),
            name="model",
            serialization_format="skops",
            skops_trusted_types=[*TASK.trusted_types, "_operator.neg"],
            registered_model_name=USE_CASE,
            pip_requirements=[],
        )
    version = str(info.registered_model_version)
    stored = artifact_dir(registry.configure(settings).get_model_version(USE_CASE, version).source)
    registry.configure(settings).set_model_version_tag(
        USE_CASE, version, registry.SHA_TAG, registry.artifact_digest(stored)
    )
    ref = registry.model_ref(settings, USE_CASE, version)
    with pytest.raises(
        registry.ArtifactIntegrityError,
        match=r"not trusted by the project for anomaly_detection: \['_operator.neg'\]",
    ):
        registry.load_verified_model(ref, tmp_path / "cache", TASK)


def test_batch_predictions_score_a_day_with_the_champion(platform):
    day = (FIRST_DAY + dt.timedelta(days=DAYS - 1)).isoformat()
    platform.materialize(["batch_predictions"], partition_key=day)
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    with platform.defs.resources["warehouse"].get_connection() as conn:
        rows = conn.sql(
            f"""SELECT count(*), count(DISTINCT prediction_id), min(model_version), max(model_version)
                FROM {USE_CASE}.batch_predictions"""
        ).fetchall()[0]
        features = conn.sql(
            f"SELECT count(*) FROM {USE_CASE}.features WHERE CAST(event_timestamp AS DATE) = DATE '{day}'"
        ).fetchall()[0][0]
    assert rows == (features, features, champion.version, champion.version)


def test_batch_predictions_spread_over_the_ray_cluster_equal_those_scored_in_process(platform, ray_cluster):
    tags = day_range_tags(FIRST_DAY + dt.timedelta(days=DAYS - 2), FIRST_DAY + dt.timedelta(days=DAYS - 1))
    query = f"SELECT sensor_id, event_timestamp, anomaly_score FROM {USE_CASE}.batch_predictions ORDER BY ALL"

    def scored() -> pl.DataFrame:
        with platform.defs.resources["warehouse"].get_connection() as conn:
            return conn.sql(query).pl()

    platform.materialize(["batch_predictions"], tags=tags)
    in_process = scored()
    # One Ray task per day, each loading and verifying the champion where it runs.
    materialize_on_cluster(platform, ray_cluster, ["batch_predictions"], tags=tags)
    assert len(in_process) > 0 and scored().equals(in_process)


def _retrain_sensor(platform, **monitoring):
    from ml_platform.automation.sensors import build_retrain_sensor

    spec = dataclasses.replace(SPEC, monitoring=dataclasses.replace(SPEC.monitoring, **monitoring))
    return build_retrain_sensor(spec, 30)


def test_drift_and_staleness_together_ask_for_one_retrain_with_a_stable_key(platform):
    platform.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=key("drift_report"),
            metadata={"report_id": "test-report-1", "dataset_drift": True, "drift_share": 0.8},
        )
    )
    sensor = _retrain_sensor(platform, champion_max_age=dt.timedelta(0), min_new_rows=0)
    first, cursor = platform.tick(sensor)
    assert len(first.run_requests) == 1
    reasons = first.run_requests[0].tags["ml_platform/reasons"]
    assert "test-report-1" in reasons and "older than" in reasons  # both events, one run

    # A daemon that died before saving its cursor evaluates the same tick again: same key, which
    # Dagster launches only once.
    repeated, _ = platform.tick(sensor)
    assert [r.run_key for r in repeated.run_requests] == [first.run_requests[0].run_key]

    # Once handled, the drift event does not ask again (staleness alone still would).
    fresh_sensor = _retrain_sensor(platform, min_new_rows=0)
    after, _ = platform.tick(fresh_sensor, cursor)
    assert after.run_requests == [] and "no drift" in after.skip_message


def test_retrain_waits_for_the_cool_down_and_for_new_data(platform):
    stale = dict(champion_max_age=dt.timedelta(0))
    too_little, _ = platform.tick(_retrain_sensor(platform, min_new_rows=10**9, **stale))
    assert too_little.run_requests == [] and "new rows" in too_little.skip_message

    platform.materialize(
        ["training_set"], tags={"ml_platform/trigger": "retrain", "ml_platform/use_case": USE_CASE}
    )
    cooling, _ = platform.tick(
        _retrain_sensor(platform, min_new_rows=0, retrain_cooldown=dt.timedelta(hours=1), **stale)
    )
    assert cooling.run_requests == [] and "cool-down" in cooling.skip_message
    cooled, _ = platform.tick(
        _retrain_sensor(platform, min_new_rows=0, retrain_cooldown=dt.timedelta(0), **stale)
    )
    assert len(cooled.run_requests) == 1


def test_champion_guard_rolls_back_a_champion_doing_worse_live(platform):
    champion = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    previous = registry.alias_ref(platform.settings, USE_CASE, registry.PREVIOUS)
    platform.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=key("live_performance"),
            metadata={"champion_version": champion.version, "gap_vs_previous/recall": -0.3},
        )
    )
    platform.materialize(["champion_guard"])
    decision = latest_metadata(platform.instance, key("champion_guard"))
    assert decision["rolled_back"] is True and "recall" in decision["reasons"]
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version == previous.version
    move = registry.history(platform.settings, USE_CASE)[-1]
    assert move["by"].startswith("champion_guard run") and "recall" in move["reason"]

    # The rolled-back-to champion has no live record of its own yet: the guard leaves it be.
    platform.materialize(["champion_guard"])
    assert latest_metadata(platform.instance, key("champion_guard"))["rolled_back"] is False
    registry.move_alias(
        platform.settings, USE_CASE, champion.version, registry.CHAMPION, "test restore", "test"
    )


def test_a_refused_retrain_is_not_asked_for_again_until_the_data_changes(platform):
    from ml_platform.automation.sensors import STATE_TAG

    sensor = _retrain_sensor(
        platform, champion_max_age=dt.timedelta(0), min_new_rows=0, retrain_cooldown=dt.timedelta(0)
    )
    asked, _ = platform.tick(sensor)
    (request,) = asked.run_requests
    refused = dg.materialize(
        build_training_assets(WORSE),
        selection=[key(n) for n in ("model", "model_evaluation", "champion")],
        instance=platform.instance,
        resources=platform.defs.resources,
        tags=request.tags,
        raise_on_error=False,
    )
    assert not refused.success

    again, _ = platform.tick(sensor)
    assert again.run_requests == []
    assert "already made" in again.skip_message and refused.run_id[:8] in again.skip_message
    assert f"{USE_CASE}/model_evaluation not_worse_than_champion" in again.skip_message
    failed = {c.check_name: c for c in failed_checks(platform.instance, refused.run_id)}
    # Worse than the champion, and so (a two-tree model) worse than the plain baseline too (and,
    # on some sensors, below the per-sensor floor; at its threshold, maybe no right flag at all).
    assert (
        {"not_worse_than_champion", "better_than_baseline"}
        <= set(failed)
        <= {
            "not_worse_than_champion",
            "better_than_baseline",
            "gate_per_scope",
            "gate_operating_point",
        }
    )
    shown = describe_failed_check(failed["not_worse_than_champion"], ("compared_rows", "comparison"))
    assert "not_worse_than_champion failed" in shown and "| overall | average_precision |" in shown

    # New data is a new state: the sensor asks again.
    platform.ingest(FIRST_DAY + dt.timedelta(days=DAYS - 1), FIRST_DAY + dt.timedelta(days=DAYS - 1))
    renewed, _ = platform.tick(sensor)
    (new_request,) = renewed.run_requests
    assert new_request.tags[STATE_TAG] != request.tags[STATE_TAG]


def _serve_log(
    platform, version: str, frame, scores, latency_ms: float, answered_at: dt.datetime | None = None
) -> None:
    """Prediction log records as a replica writes them, for ``frame``'s rows served by ``version``
    and answered ``answered_at`` (default: now)."""
    import uuid

    from ml_platform.serving.log import PredictionLogWriter

    names = SPEC.features.feature_names()
    now = (answered_at or dt.datetime.now(dt.UTC)).isoformat()
    records = [
        {
            "prediction_id": uuid.uuid4().hex,
            "sensor_id": row["sensor_id"],
            "feature_event_timestamp": row["event_timestamp"].isoformat(),
            "anomaly_score": float(score),
            "is_anomaly": bool(score > 0),
            "model_version": version,
            "served_by": "champion",
            "route": "predict",
            "requested_at": now,
            "latency_ms": latency_ms,
            "features": {n: row[n] for n in names},
        }
        for row, score in zip(frame.iter_rows(named=True), scores, strict=True)
    ]
    writer = PredictionLogWriter(platform.settings.serving_log_dir)
    writer.append(USE_CASE, records)
    writer.close()


def test_a_champion_worse_live_is_caught_by_live_performance_and_rolled_back(platform):
    """A real worse model is made champion and serves the labelled test rows (its prediction log);
    live_performance scores the previous champion on the very rows it served, finds the gap, and the
    guard rolls back. Then a champion over the latency SLO is rolled back through serving_slo."""
    good = registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION)
    test = read_split(platform.defs.resources["warehouse"], SPEC, "test").filter(
        pl.col("event_timestamp") < dt.datetime.now(dt.UTC) - dt.timedelta(hours=7)
    )
    features = model_input(test.to_pandas(), SPEC.features.feature_names())
    # Fit on the anomalies only: to this model anomalies look normal, so it misses them.
    positives = features[test["label"].to_numpy() == 1]
    worse = registry.log_candidate(
        platform.settings,
        SPEC,
        TASK.build(SPEC.model.algorithm, SPEC.model.params, SPEC.model.seed).fit(positives),
        features.head(5),
        {},
        {},
        {},
    )
    registry.move_alias(platform.settings, USE_CASE, worse.version, registry.CHAMPION, "test", "test")
    pipeline = registry.load_verified_model(worse, platform.settings.model_cache, TASK)
    _serve_log(platform, worse.version, test, TASK.scores(pipeline, features), latency_ms=5.0)

    result = platform.materialize(["predictions", "live_performance", "serving_slo", "champion_guard"])
    live = latest_metadata(platform.instance, key("live_performance"))
    assert live["champion_version"] == worse.version and live["previous_version"] == good.version
    assert live["live/rows"] >= SPEC.monitoring.min_labelled_rows
    assert live["gap_vs_previous/recall"] < -SPEC.monitoring.rollback_margin
    live_checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert live_checks["not_worse_than_previous"] is False
    assert live_checks["live_performance_slo"] is False  # recall far under the spec's 0.2
    assert live_checks["serving_slo"] is True
    decision = latest_metadata(platform.instance, key("champion_guard"))
    assert decision["rolled_back"] is True and "live recall" in decision["reasons"]
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version == good.version

    # The SLO branch: the good model made champion again after the worse, now slow in serving.
    registry.move_alias(platform.settings, USE_CASE, worse.version, registry.CHAMPION, "test", "test")
    registry.move_alias(platform.settings, USE_CASE, good.version, registry.CHAMPION, "test", "test")
    good_pipeline = registry.load_verified_model(good, platform.settings.model_cache, TASK)
    slow, monitoring = SPEC.monitoring.max_p99_ms * 3, SPEC.monitoring
    assert len(test) >= monitoring.min_slo_requests
    # Requests that started while replicas switched to it (right after the promotion) are not its
    # latency: queued behind the model's loading, they are not judged, and nothing is rolled back.
    good_scores = TASK.scores(good_pipeline, features)
    _serve_log(platform, good.version, test, good_scores, latency_ms=slow)
    platform.materialize(["predictions", "serving_slo", "champion_guard"])
    slo = latest_metadata(platform.instance, key("serving_slo"))
    assert slo["champion_version"] == good.version and slo["champion/requests"] == 0
    assert latest_metadata(platform.instance, key("champion_guard"))["rolled_back"] is False
    # Slow once it has settled (answered after the settle period; the log's times are the replica's).
    settled = registry.promoted_at(platform.settings, USE_CASE, good.version) + monitoring.slo_settle
    answered = settled + dt.timedelta(milliseconds=slow + 1000)
    _serve_log(platform, good.version, test, good_scores, latency_ms=slow, answered_at=answered)
    result = platform.materialize(["predictions", "serving_slo", "champion_guard"])
    slo = latest_metadata(platform.instance, key("serving_slo"))
    assert slo["champion_version"] == good.version and slo["champion/p99_ms"] == slow
    assert slo["champion/requests"] == len(test)
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["serving_slo"] is False
    decision = latest_metadata(platform.instance, key("champion_guard"))
    assert decision["rolled_back"] is True and "p99" in decision["reasons"]
    assert registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version == worse.version
    registry.move_alias(platform.settings, USE_CASE, good.version, registry.CHAMPION, "test restore", "test")


def test_a_new_homes_tracking_store_is_a_copy_of_an_empty_one_made_once(tmp_path, monkeypatch):
    from ml_platform.settings import load_settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = (load_settings({"ML_PLATFORM_HOME": str(tmp_path / name)}) for name in ("a", "b"))
    client = registry.configure(first)
    (template,) = (tmp_path / "cache" / "ml_platform").glob("mlflow-*.db")
    made = template.read_bytes()
    assert client.get_experiment("0").artifact_location == (first.mlflow_artifacts_dir / "0").as_uri()
    registry.ensure_experiment(first, USE_CASE)
    run = client.create_run(client.get_experiment_by_name(USE_CASE).experiment_id)

    # The second home's store is a copy of the same template, not of the first home's.
    other = registry.configure(second)
    assert other.get_experiment("0").artifact_location == (second.mlflow_artifacts_dir / "0").as_uri()
    assert other.get_experiment_by_name(USE_CASE) is None and template.read_bytes() == made
    # A store that exists is kept as it is.
    assert registry.configure(first).get_run(run.info.run_id).info.run_id == run.info.run_id

    # No cache to write to: MLflow makes the store itself.
    monkeypatch.setenv("XDG_CACHE_HOME", str(template))  # a file, not a folder
    third = load_settings({"ML_PLATFORM_HOME": str(tmp_path / "c")})
    assert registry.configure(third).search_experiments()[0].name == "Default"
