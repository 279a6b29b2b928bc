"""Each task's pieces alone: metrics equal scikit-learn's (plain and weighted), the threshold is
chosen for its objective, labels are read as the task reads them, a spec asking a task for what it
does not have is refused naming the field, and a fitted model answers its declared outputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import (
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
)

from ml_platform.spec import Baseline, EventLabels, ModelSpec
from ml_platform.spec_file import UseCaseError, validate
from ml_platform.tasks import TASKS
from ml_platform.tasks.classification import calibration, choose_threshold
from ml_platform.usecases import get_use_case

CLASSIFIER, REGRESSION = TASKS["binary_classification"], TASKS["regression"]
MULTICLASS = TASKS["multiclass_classification"]
CLASSES = ("healthy", "bearing", "electrical")
SENSORS = get_use_case("sensor_anomaly")


def test_classification_metrics_equal_scikit_learn_plain_and_weighted():
    rng = np.random.default_rng(1)
    labels = (rng.random(3000) < 0.05).astype(int)
    probabilities = np.clip(rng.beta(1, 12, 3000) + 0.4 * labels * rng.random(3000), 0, 1)
    decided = probabilities >= 0.2
    found = CLASSIFIER.evaluate(probabilities, decided, labels, None)
    assert found["log_loss"] == pytest.approx(log_loss(labels, probabilities))
    assert found["brier"] == pytest.approx(brier_score_loss(labels, probabilities))
    for name, metric in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert found[name] == pytest.approx(metric(labels, decided))
    weights = rng.integers(0, 3, size=3000).astype(float)
    weighted = CLASSIFIER.weighted(probabilities, decided, labels, weights[None, :])
    assert weighted["log_loss"][0] == pytest.approx(log_loss(labels, probabilities, sample_weight=weights))
    assert weighted["brier"][0] == pytest.approx(
        brier_score_loss(labels, probabilities, sample_weight=weights)
    )


def test_regression_metrics_equal_scikit_learn_plain_and_weighted():
    rng = np.random.default_rng(2)
    labels = rng.normal(50, 10, 1000)
    predictions = labels + rng.normal(0, 4, 1000)
    found = REGRESSION.evaluate(predictions, None, labels, None)
    assert found["mae"] == pytest.approx(mean_absolute_error(labels, predictions))
    assert found["rmse"] == pytest.approx(np.sqrt(mean_squared_error(labels, predictions)))
    assert found["r2"] == pytest.approx(r2_score(labels, predictions))
    weights = rng.integers(0, 4, size=1000).astype(float)
    weighted = REGRESSION.weighted(predictions, None, labels, weights[None, :])
    assert weighted["mae"][0] == pytest.approx(
        mean_absolute_error(labels, predictions, sample_weight=weights)
    )
    assert weighted["r2"][0] == pytest.approx(r2_score(labels, predictions, sample_weight=weights))


def test_multiclass_metrics_equal_scikit_learn_plain_and_in_every_resample():
    from sklearn.metrics import accuracy_score, roc_auc_score

    task = MULTICLASS.for_spec(as_task("multiclass_classification", "random_forest", classes=CLASSES))
    rng = np.random.default_rng(6)
    labels = rng.choice(CLASSES, size=2000, p=[0.7, 0.2, 0.1]).astype(object)
    truth = np.stack([labels == c for c in CLASSES], axis=1)
    probabilities = rng.dirichlet(np.ones(3), 2000) + 1.5 * truth * rng.random((2000, 1))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    decided = task.decisions(None, probabilities)
    # scikit-learn reads probability columns in the classes' sorted order.
    order, ordered = np.argsort(CLASSES), sorted(CLASSES)
    found = task.evaluate(probabilities, decided, labels, None)
    assert found["accuracy"] == pytest.approx(accuracy_score(labels, decided))
    assert found["macro_f1"] == pytest.approx(f1_score(labels, decided, average="macro"))
    assert found["log_loss"] == pytest.approx(log_loss(labels, probabilities[:, order], labels=ordered))
    assert found["roc_auc"] == pytest.approx(
        roc_auc_score(labels, probabilities[:, order], multi_class="ovr", labels=ordered)
    )
    assert found["brier"] == pytest.approx(np.mean(((probabilities - truth) ** 2).sum(axis=1)))
    assert found["label_share/bearing"] == pytest.approx(np.mean(labels == "bearing"))
    # Each bootstrap resample (rows drawn 0, 1, 2 ... times) equals the metric on those rows repeated.
    weights = rng.poisson(1.0, size=(3, 2000)).astype(float)
    weighted = task.weighted(probabilities, decided, labels, weights)
    for r in range(3):
        rows = np.repeat(np.arange(2000), weights[r].astype(int))
        drawn, drawn_probabilities = labels[rows], probabilities[rows][:, order]
        assert weighted["macro_f1"][r] == pytest.approx(f1_score(drawn, decided[rows], average="macro"))
        assert weighted["roc_auc"][r] == pytest.approx(
            roc_auc_score(drawn, drawn_probabilities, multi_class="ovr", labels=ordered)
        )
        assert weighted["log_loss"][r] == pytest.approx(log_loss(drawn, drawn_probabilities, labels=ordered))
    matrix = task.diagnostics(probabilities, labels)["confusion_matrix"]
    assert sum(row[f"predicted_{c}"] for row in matrix for c in CLASSES) == 2000
    assert matrix[1]["label"] == "bearing" and matrix[1]["predicted_bearing"] == np.sum(
        (labels == "bearing") & (decided == "bearing")
    )


def test_a_multiclass_model_gives_every_declared_class_a_probability():
    spec = as_task("multiclass_classification", "logistic_regression", classes=CLASSES)
    task = MULTICLASS.for_spec(spec)
    assert task is MULTICLASS.for_spec(spec)  # one task per set of classes
    assert [o.name for o in task.outputs] == [
        "predicted_class",
        "probability",
        "probability_healthy",
        "probability_bearing",
        "probability_electrical",
    ]
    rng = np.random.default_rng(7)
    features = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    # No row is "electrical": the model has never seen it, and answers it with probability 0.
    labels = np.where(features["a"] > 0.5, "bearing", "healthy").astype(object)
    model = task.fit(task.build("logistic_regression", {}, seed=0), features, labels)
    answers = task.answers(model, task.scores(model, features.head(4)))
    for answer in answers:
        assert answer["probability_electrical"] == 0.0
        assert answer["probability_healthy"] + answer["probability_bearing"] == pytest.approx(1.0)
        assert answer["predicted_class"] in ("healthy", "bearing") and isinstance(
            answer["predicted_class"], str
        )
        assert answer["probability"] == max(answer[f"probability_{c}"] for c in CLASSES)
    assert task.unusable_labels(np.array(["bearing"] * 5, dtype=object)).endswith(
        "at least two classes are needed"
    )
    text = pl.DataFrame({"label": [" bearing", "healthy", "Bearing", "rusty", ""]})
    assert text.select(task.parse_labels(pl.col("label")))["label"].to_list() == [
        "bearing",
        "healthy",
        None,
        None,
        None,
    ]
    assert task.json_label("electrical") == "electrical" and task.json_label(1) is None


def test_the_threshold_is_chosen_for_the_stated_objective():
    rng = np.random.default_rng(3)
    labels = (rng.random(800) < 0.1).astype(int)
    probabilities = np.round(np.clip(0.3 * labels + rng.random(800) * 0.7, 0, 1), 3)

    def at(threshold: float) -> tuple[float, float, float]:
        decided = probabilities >= threshold
        return (
            precision_score(labels, decided, zero_division=0),
            recall_score(labels, decided),
            f1_score(labels, decided),
        )

    best_f1, how = choose_threshold(probabilities, labels, "f1", 0.5)
    assert how.startswith("best F1")
    assert at(best_f1)[2] >= max(at(t)[2] for t in np.linspace(0.05, 0.95, 91)) - 1e-12
    strict, how = choose_threshold(probabilities, labels, "recall_at_precision", 0.6)
    precision, recall, _ = at(strict)
    assert precision >= 0.6 and how.startswith("recall_at_precision >= 0.6")
    assert all(at(t)[1] <= recall + 1e-12 for t in np.unique(probabilities) if at(t)[0] >= 0.6)
    wide, _ = choose_threshold(probabilities, labels, "precision_at_recall", 0.95)
    assert at(wide)[1] >= 0.95
    # The most probable row is a negative: no threshold reaches a precision of 1.
    top_negative = np.array([0.9, 0.8, 0.7, 0.2, 0.1]), np.array([0, 1, 1, 0, 0])
    impossible, how = choose_threshold(*top_negative, "recall_at_precision", 0.999)
    assert (
        impossible == choose_threshold(*top_negative, "f1", 0.5)[0] == 0.7 and "no threshold reached" in how
    )


def test_calibration_bins_hold_every_row():
    rng = np.random.default_rng(4)
    probabilities = rng.random(500)
    labels = (rng.random(500) < probabilities).astype(int)
    rows = calibration(probabilities, labels)
    assert sum(r["rows"] for r in rows) == 500
    assert all(abs(r["mean_probability"] - r["positive_share"]) < 0.2 for r in rows)  # calibrated data


def test_labels_are_read_as_each_task_reads_them():
    text = pl.DataFrame({"label": [" 1", "true", "0", "False", "yes", "2.5", "-3", "1e3", "nan", ""]})
    binary = text.select(CLASSIFIER.parse_labels(pl.col("label")))["label"].to_list()
    assert binary == [1, 1, 0, 0, None, None, None, None, None, None]
    numbers = text.select(REGRESSION.parse_labels(pl.col("label")))["label"].to_list()
    assert numbers == [1.0, None, 0.0, None, None, 2.5, -3.0, 1000.0, None, None]
    assert CLASSIFIER.json_label(True) == 1 and CLASSIFIER.json_label(2) is None
    assert REGRESSION.json_label(2) == 2.0 and REGRESSION.json_label(True) is None
    assert REGRESSION.json_label(float("inf")) is None


def as_task(task: str, algorithm: str, **model):
    return dataclasses.replace(
        SENSORS,
        model=ModelSpec(algorithm=algorithm, task=task, **model),
        gate=dataclasses.replace(
            SENSORS.gate,
            min_metrics={},
            max_regression={},
            scope_min_metrics={},
            baseline=None,
            per_entity=False,
        ),
        labels=EventLabels(column="label"),
        monitoring=dataclasses.replace(SENSORS.monitoring, min_live_metrics={}),
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: dataclasses.replace(s, model=ModelSpec("lasso", task="regression")), "model.algorithm"),
        (lambda s: dataclasses.replace(s, model=ModelSpec("ridge", task="forecasting")), "model.task"),
        (
            lambda s: dataclasses.replace(s, gate=dataclasses.replace(s.gate, min_metrics={"rmse": 3.0})),
            "gate.min_metrics.rmse",
        ),
        (
            lambda s: dataclasses.replace(s, gate=dataclasses.replace(s.gate, max_metrics={"r2": 0.5})),
            "gate.max_metrics.r2",
        ),
        (
            lambda s: dataclasses.replace(s, gate=dataclasses.replace(s.gate, min_metrics={"roc_auc": 0.7})),
            "gate.min_metrics.roc_auc",
        ),
        (lambda s: dataclasses.replace(s, labels=SENSORS.labels), "labels"),
        (
            lambda s: dataclasses.replace(
                s, gate=dataclasses.replace(s.gate, baseline=Baseline("isolation_forest"))
            ),
            "gate.baseline.algorithm",
        ),
        (
            lambda s: dataclasses.replace(
                s, gate=dataclasses.replace(s.gate, baseline=Baseline("ridge", features=("valu",)))
            ),
            "gate.baseline.features[0]",
        ),
        (
            lambda s: dataclasses.replace(s, labels=EventLabels(column="label", missing="negative")),
            "labels.missing",
        ),
    ],
)
def test_a_spec_asking_its_task_for_what_it_lacks_is_refused_naming_the_field(change, field):
    regression = as_task("regression", "ridge")
    validate(regression, "test")  # the base is fine
    with pytest.raises(UseCaseError, match=rf"use case 'sensor_anomaly': .*{re.escape(field)}:"):
        validate(change(regression), "spec.yaml")


def test_a_fitted_model_answers_the_task_outputs_and_nothing_else():
    rng = np.random.default_rng(5)
    features = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    labels = (features["a"] + rng.normal(0, 0.5, 400) > 1).astype(int).to_numpy()
    for task, algorithm, y in (
        (CLASSIFIER, "hist_gradient_boosting", labels),
        (REGRESSION, "random_forest", features["a"].to_numpy() * 3),
    ):
        model = task.fit(task.build(algorithm, {}, seed=0), features, y)
        model, _ = task.finalize(model, features, y, features, y, as_task(task.name, algorithm))
        answers = task.answers(model, task.scores(model, features.head(3)))
        assert [list(a) for a in answers] == [[o.name for o in task.outputs]] * 3
        assert all(type(v) in (float, int, bool) for a in answers for v in a.values())


def gate_case(per_entity_floor: float | None = None, baseline=None):
    """A classifier spec over two features, a and b, of four entities (b is noise)."""
    from ml_platform.features.definitions import Value
    from ml_platform.spec import Column, FeatureSpec

    spec = as_task("binary_classification", "hist_gradient_boosting", trials=1)
    gate = dataclasses.replace(
        spec.gate,
        slices=(),
        min_positive_events=5,
        per_entity=per_entity_floor is not None,
        scope_min_metrics={"roc_auc": per_entity_floor} if per_entity_floor is not None else {},
        baseline=baseline,
        max_flip_rate=1.0,
    )
    columns = (
        Column("sensor_id", "string"),
        Column("timestamp", "timestamp"),
        Column("a", "float"),
        Column("b", "float"),
    )
    return dataclasses.replace(
        spec, columns=columns, features=FeatureSpec((Value("a"), Value("b"))), gate=gate
    )


def gate_rows(seed: int, n: int = 4000) -> pl.DataFrame:
    """Labels follow a; entity e-3 lives on a range of a of its own (a around 5)."""
    from ml_platform.training.dataset import LABEL, WINDOW

    rng = np.random.default_rng(seed)
    entity = np.array([f"e-{i % 4}" for i in range(n)])
    own_range = np.where(entity == "e-3", 5.0, 0.0)
    a, b = rng.normal(size=n) + own_range, rng.normal(size=n)
    label = (a - own_range + rng.normal(0, 0.5, n) > 1.2).astype(np.int8)
    start = dt.datetime(2020, 1, 1)
    return pl.DataFrame(
        {
            "sensor_id": entity,
            "event_timestamp": pl.datetime_range(
                start, start + dt.timedelta(minutes=n - 1), "1m", eager=True
            ),
            "a": a,
            "b": b,
            LABEL: label,
            WINDOW: pl.Series([None] * n, dtype=pl.String),
        }
    )


def fitted(spec, train: pl.DataFrame, labels=None):
    from ml_platform.training.dataset import LABEL

    task = TASKS[spec.model.task]
    model = task.build(spec.model.algorithm, {}, seed=0)
    return task.fit(
        model, train.select("a", "b").to_pandas(), train[LABEL].to_numpy() if labels is None else labels
    )


def test_the_per_entity_gate_refuses_a_model_good_pooled_and_useless_on_one_entity():
    from ml_platform.training.gate import PER_SCOPE, judge

    spec = gate_case(per_entity_floor=0.7)
    train, test = gate_rows(1), gate_rows(2)
    labels = train["label"].to_numpy().copy()
    e3 = (train["sensor_id"] == "e-3").to_numpy()
    labels[e3] = np.random.default_rng(0).permutation(labels[e3])  # it learnt nothing about e-3
    result = judge(fitted(spec, train, labels), None, None, test, spec)
    assert result.overall["roc_auc"] > 0.8  # the pooled figure alone would pass
    check = result.check(PER_SCOPE)
    assert check.passed is False and "sensor_id=e-3" in check.metadata["missed"].value
    assert (
        result.scopes["sensor_id=e-3"]["roc_auc"] < 0.65 and result.scopes["sensor_id=e-0"]["roc_auc"] > 0.9
    )
    fair = judge(fitted(spec, train), None, None, test, spec)  # good on every entity
    assert fair.check(PER_SCOPE).passed, fair.check(PER_SCOPE).metadata
    assert fair.check(PER_SCOPE).metadata["judged_scopes"] == 4


def test_the_baseline_check_refuses_a_model_worse_than_its_baseline():
    from ml_platform.training.gate import BASELINE, judge

    spec = gate_case(baseline=Baseline("logistic_regression", features=("a",)))
    train, test = gate_rows(3), gate_rows(4)
    shuffled = np.random.default_rng(0).permutation(train["label"].to_numpy())
    worse = judge(fitted(spec, train, labels=shuffled), None, None, test, spec, train)
    check = worse.check(BASELINE)
    assert check.passed is False and check.metadata["baseline"] > check.metadata["candidate"]
    assert worse.baseline["average_precision"] == check.metadata["baseline"]
    better = judge(fitted(spec, train), None, None, test, spec, train)
    assert better.check(BASELINE).passed


def test_a_row_of_the_entity_and_some_columns_is_an_event_to_score():
    from ml_platform.serving.protocols import RequestError, Signature, predict_rows
    from ml_platform.usecases import get_use_case

    signature = Signature.of(get_use_case("card_fraud"))
    (row,), flat = predict_rows(signature, {"card_id": "c-1", "amount": 12.5, "merchant": "fuel"})
    assert (
        flat and row.event == {"card_id": "c-1", "amount": 12.5, "merchant": "fuel"} and row.features is None
    )
    (row,), _ = predict_rows(signature, {"card_id": "c-1"})
    assert row.entity == "c-1" and row.event is None and row.features is None
    every_feature = {name: 1.0 for name in signature.names}
    (row,), _ = predict_rows(signature, {"card_id": "c-1", **every_feature})
    assert row.features == every_feature and row.event is None
    with pytest.raises(RequestError, match="unknown field\\(s\\) colour"):
        predict_rows(signature, {"card_id": "c-1", "amount": 1.0, "colour": "red"})
