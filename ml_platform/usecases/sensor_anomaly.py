"""Sensor anomaly detection: readings per sensor, an IsolationForest scores each new reading."""

from ml_platform.spec import (
    Column,
    DriftSpec,
    Expectations,
    FeatureSpec,
    GateSpec,
    ModelSpec,
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
    features=FeatureSpec(columns=("value",), windows=(12, 72), passthrough=("temperature", "vibration")),
    model=ModelSpec(
        algorithm="isolation_forest",
        params={"n_estimators": 200, "contamination": 0.02, "max_samples": 512},
        training_days=7,
        test_fraction=0.25,
        seed=42,
    ),
    gate=GateSpec(min_metrics={"roc_auc": 0.7, "average_precision": 0.1}),
    drift=DriftSpec(
        window_days=1,
        columns=("value", "temperature", "vibration", "value_ma_12", "value_ma_72"),
        drift_share=0.5,
    ),
    partitions_start="2025-01-01",
)
