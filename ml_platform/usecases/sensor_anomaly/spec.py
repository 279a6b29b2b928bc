"""Sensor anomaly detection: readings per sensor, an IsolationForest scores each new reading."""

import datetime as dt

from ml_platform.features.definitions import DiffFromMean, HourOfDay, Lag, Rolling, Value, ZScore
from ml_platform.spec import (
    Baseline,
    Column,
    DriftSpec,
    Expectations,
    FeatureSpec,
    GateSpec,
    ModelSpec,
    MonitoringSpec,
    Slice,
    UseCaseSpec,
)

SPEC = UseCaseSpec(
    name="sensor_anomaly",
    description="Unsupervised anomaly detection on sensor readings (value, temperature, vibration).",
    entity="sensor_id",
    timestamp="timestamp",
    columns=(
        Column("sensor_id", "string"),
        Column("timestamp", "timestamp"),
        Column("value", "float", min_value=-1_000.0, max_value=1_000.0),
        Column("temperature", "float", required=False, min_value=-50.0, max_value=150.0),
        Column("vibration", "float", required=False, min_value=0.0, max_value=100.0),
    ),
    expectations=Expectations(key=("sensor_id", "timestamp"), max_bad_share=0.05),
    features=FeatureSpec(
        features=(
            Value("value"),
            Value("temperature"),
            Value("vibration"),
            Rolling("value", "mean", rows=12),
            DiffFromMean("value", rows=12),
            Rolling("value", "std", rows=12),
            Rolling("value", "mean", rows=72),
            DiffFromMean("value", rows=72),
            Rolling("value", "std", rows=72),
            Rolling("vibration", "max", period="1h"),
            Lag("value", 1),
            HourOfDay(),
            # Each reading against its own sensor's last hour, 6 hours and day: sensors of other
            # levels and spreads look alike to one model (bench/anomaly.py measures the gain).
            ZScore("value", rows=12),
            ZScore("value", rows=72),
            ZScore("value", rows=288),
        ),
        ttl=dt.timedelta(days=3),
        offline_lookback=dt.timedelta(days=2),  # the 288-reading window is a day at 5 minutes
    ),
    model=ModelSpec(
        algorithm="isolation_forest",
        params={"n_estimators": 200, "contamination": 0.02, "max_samples": 512},
        search_space={"n_estimators": (100, 200), "max_samples": (256, 512), "contamination": (0.01, 0.02)},
        trials=4,
        selection_metric="average_precision",
        training_days=7,
        validation_fraction=0.15,
        test_fraction=0.25,
        seed=42,
    ),
    gate=GateSpec(
        min_metrics={"roc_auc": 0.7, "average_precision": 0.1},
        # f1 at the served threshold: what `is_anomaly` answers, which ranking metrics do not see.
        max_regression={"roc_auc": 0.02, "average_precision": 0.05, "f1": 0.1},
        slices=(Slice("time_of_day", "hour_of_day", bins=(0, 6, 12, 18, 24)),),
        # Every sensor with enough anomaly events is judged on its own, and the model must beat a
        # plain IsolationForest on the value and its 12-reading mean and difference.
        per_entity=True,
        scope_min_metrics={"roc_auc": 0.7},
        baseline=Baseline(
            "isolation_forest", {"n_estimators": 100}, ("value", "value_mean_12", "value_diff_mean_12")
        ),
        noise_scale=0.01,
        max_flip_rate=0.02,
    ),
    drift=DriftSpec(
        window_days=1,
        columns=("value", "temperature", "vibration", "value_mean_12", "value_mean_72"),
        drift_share=0.5,
    ),
    partitions_start="2025-01-01",
    table="readings",
    topic_aliases=("ml_platform/sensor_anomaly/readings",),  # the topic of releases before 0.3
    monitoring=MonitoringSpec(
        label_lateness=dt.timedelta(hours=6),
        min_live_metrics={"recall": 0.2},
        min_labelled_rows=50,
        slo_window=dt.timedelta(hours=1),
        max_p99_ms=250.0,
        max_error_rate=0.01,
        champion_max_age=dt.timedelta(days=7),
        retrain_cooldown=dt.timedelta(hours=1),
        min_new_rows=1000,
        rollback_margin=0.05,
    ),
)
