"""Card fraud: each card payment is scored as it happens; frauds are confirmed days later."""

import datetime as dt

from ml_platform.features.definitions import DiffFromMean, HourOfDay, IsValue, Rolling, Value
from ml_platform.spec import (
    Baseline,
    Column,
    DriftSpec,
    EventLabels,
    Expectations,
    FeatureSpec,
    GateSpec,
    ModelSpec,
    MonitoringSpec,
    UseCaseSpec,
)

MERCHANTS = ("grocery", "fuel", "electronics", "travel", "online")

SPEC = UseCaseSpec(
    name="card_fraud",
    description="Supervised: card payments scored for fraud; chargebacks confirm frauds days later.",
    entity="card_id",
    timestamp="at",
    columns=(
        Column("card_id", "string"),
        Column("at", "timestamp"),
        Column("amount", "float", min_value=0.0, max_value=50_000.0),
        Column("merchant", "string", allowed_values=MERCHANTS),
        Column("foreign", "boolean"),
    ),
    expectations=Expectations(key=("card_id", "at"), max_bad_share=0.05),
    features=FeatureSpec(
        features=(
            Value("amount"),
            Rolling("amount", "mean", rows=20),
            DiffFromMean("amount", rows=20),
            Rolling("amount", "count", period="1h"),
            Value("foreign"),
            *(IsValue("merchant", m) for m in MERCHANTS[1:]),
            HourOfDay(),
        ),
        ttl=dt.timedelta(days=30),
        offline_lookback=dt.timedelta(days=14),
    ),
    model=ModelSpec(
        task="binary_classification",
        algorithm="hist_gradient_boosting",
        params={"max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 15},
        search_space={"learning_rate": (0.05, 0.1), "max_leaf_nodes": (15, 31)},
        trials=3,
        threshold_objective="f1",
        training_days=14,
        seed=42,
    ),
    gate=GateSpec(
        min_metrics={"roc_auc": 0.8, "average_precision": 0.2},
        max_metrics={"brier": 0.05},
        max_regression={"roc_auc": 0.03, "average_precision": 0.08},
        # A payment's amount against the card's usual amount alone, as a plain model.
        baseline=Baseline("logistic_regression", features=("amount", "amount_diff_mean_20")),
    ),
    drift=DriftSpec(window_days=1, columns=("amount", "amount_mean_20", "foreign"), drift_share=0.5),
    partitions_start="2025-01-01",
    table="payments",
    # Chargebacks: only frauds are reported; a payment without one after 3 days was not a fraud.
    labels=EventLabels(column="fraud", missing="negative"),
    monitoring=MonitoringSpec(
        label_lateness=dt.timedelta(days=3),
        min_live_metrics={"average_precision": 0.2},
        min_labelled_rows=200,
        champion_max_age=dt.timedelta(days=7),
        retrain_cooldown=dt.timedelta(hours=1),
        min_new_rows=500,
    ),
)
