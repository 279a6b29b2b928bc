"""Declarative description of a use case.

A use case is data: which columns arrive, which rules they must satisfy, which features are
computed, how the model is trained and gated, and how drift is judged. The platform turns a
``UseCaseSpec`` into Dagster assets, checks and sensors; adding a use case adds no platform code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ml_platform.features.definitions import Feature, source_columns

# Column types holding numbers: the ones min_value / max_value apply to.
NUMBER_DTYPES = ("float", "integer")
# How a use case's rows are partitioned in time (the warehouse stores them by day either way).
PARTITIONS = ("daily", "hourly", "monthly")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "string" | "timestamp" | "float" | "integer" | "boolean"
    required: bool = True
    min_value: float | None = None
    max_value: float | None = None
    allowed_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expectations:
    """Row-level rules; rows that break one go to quarantine with the rule's name."""

    key: tuple[str, ...]
    # The largest share of a partition's rows that may be quarantined before the blocking
    # check fails the run: a few bad rows are normal, a mostly-bad file is an incident.
    max_bad_share: float = 0.05
    # Event times later than now + this are impossible (clock skew allowance).
    max_future: dt.timedelta = dt.timedelta(hours=1)
    # Event times before this day are rejected; None means the first partition's day.
    timestamp_floor: str | None = None
    # Rows per daily partition: more than the maximum fails the run, fewer than the minimum warns
    # (a day still landing is short).
    min_rows_per_partition: int = 0
    max_rows_per_partition: int | None = None
    # Raw and staged data older than this is stale in the UI (freshness policy).
    fresh_within: dt.timedelta = dt.timedelta(hours=26)


@dataclass(frozen=True)
class LandingFiles:
    """Files dropped into ``$ML_PLATFORM_HOME/landing/<use case>/`` (CSV, Parquet, JSON lines, .gz)."""

    kind: str = "files"


@dataclass(frozen=True)
class PostgresTable:
    """A PostgreSQL table or query, read day by day through its timestamp column.

    ``dsn_env`` names the environment variable holding the connection string, so the spec
    carries no credentials.
    """

    timestamp_column: str
    table: str | None = None
    query: str | None = None  # a SELECT; filtered by the timestamp column around it
    dsn_env: str = "ML_PLATFORM_POSTGRES_DSN"
    kind: str = "postgres"


@dataclass(frozen=True)
class HttpJsonApi:
    """A JSON API pulled page by page for a time window.

    Each page is ``GET url?{start_param}=..&{end_param}=..&{page_param}=N&{page_size_param}=M``
    answering a JSON object whose ``items_field`` is a list of records; an empty list ends.
    """

    url: str
    items_field: str = "items"
    start_param: str = "start"
    end_param: str = "end"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = 1000
    first_page: int = 1
    kind: str = "http"


Source = LandingFiles | PostgresTable | HttpJsonApi


@dataclass(frozen=True)
class AnomalyWindows:
    """Labels as windows of trouble per entity (entity, ``start``, ``end``): an event inside a
    window is positive, any other event of a day the labels cover is negative. A labels file (or
    ``POST /v1/labels``) states every window of the days it covers; the newest one per day wins."""


@dataclass(frozen=True)
class EventLabels:
    """One label per event, joined on the entity and the spec's timestamp column, with the label in
    ``column`` (1/0, true/false). Labels add up across files and posts; the newest per event wins.

    ``missing`` says what an event without a label is once ``monitoring.label_lateness`` has
    passed: ``unlabelled`` (never trained, tested or judged on) or ``negative`` (labels arrive for
    positives only, as chargebacks do)."""

    column: str = "label"
    missing: str = "unlabelled"


Labels = AnomalyWindows | EventLabels


@dataclass(frozen=True)
class FeatureSpec:
    """Features per entity in event-time order (see ``ml_platform.features.definitions``)."""

    features: tuple[Feature, ...]
    # Serving refuses a feature vector older than this (409): stale features give silent wrong answers.
    ttl: dt.timedelta = dt.timedelta(days=2)
    # History read before a day to compute that day's windows offline; must cover the largest window.
    offline_lookback: dt.timedelta = dt.timedelta(days=1)

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def source_columns(self) -> list[str]:
        return source_columns(self.features)


@dataclass(frozen=True)
class ModelSpec:
    """Which task, which estimator of that task (see ``ml_platform.tasks``), and how it is searched,
    fit and split in time."""

    algorithm: str  # an estimator of the task: "isolation_forest", "logistic_regression", ...
    task: str = "anomaly_detection"  # | "binary_classification" | "multiclass_classification" | "regression"
    # Multiclass classification: the classes, in the order the outputs list them.
    classes: tuple[str, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    # Candidate values per parameter; the search tries at most `trials` combinations (seeded),
    # always including `params` itself, each fit on the train window and scored on validation.
    search_space: dict[str, tuple] = field(default_factory=dict)
    trials: int = 6
    # The metric the search compares trials on; None: the task's default.
    selection_metric: str | None = None
    # Classification: the threshold is chosen on validation for this objective ("f1",
    # "recall_at_precision" or "precision_at_recall", the latter two with this floor).
    threshold_objective: str = "f1"
    threshold_floor: float = 0.5
    # The training window, counted back from the newest data (not from today): these many days,
    # or, when `training_rows` is set, that many of the newest rows instead.
    training_days: int = 7
    training_rows: int | None = None
    # At least these many of each entity's newest rows, reaching back before the window when an
    # entity reports rarely: a sparse entity's history is not cut to a handful of rows. Set, it
    # also splits each entity by its own time, so every entity is validated and tested on its
    # newest rows even when entities were recorded over different periods.
    min_entity_rows: int | None = None
    # Consecutive windows in time: train, then validation, then test (no shuffling across time).
    validation_fraction: float = 0.15
    test_fraction: float = 0.25
    seed: int = 42


@dataclass(frozen=True)
class Slice:
    """Rows grouped by a column's value, or by bins of a numeric column (`bins` edges)."""

    name: str
    column: str
    bins: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Baseline:
    """A plain model the candidate must beat on the same test rows: an estimator of the task
    (default params unless given) on a few of the declared features (all when empty)."""

    algorithm: str
    params: dict[str, object] = field(default_factory=dict)
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateSpec:
    """What a candidate must show on held-out data before it becomes champion."""

    # Floors of metrics where higher is better, ceilings of errors (mae, rmse, log_loss, brier).
    min_metrics: dict[str, float] = field(default_factory=dict)
    max_metrics: dict[str, float] = field(default_factory=dict)
    # Largest allowed drop below the champion (same test rows), overall and on every slice: the
    # candidate is refused where it falls further *and* the rows leave no doubt about it (the
    # `confidence` interval of a paired bootstrap over positive events lies below zero).
    max_regression: dict[str, float] = field(default_factory=dict)
    # A scope (all test rows, or one slice) with fewer positive events (anomaly windows, or
    # positive rows without windows) than this is shown but not judged: it cannot tell.
    min_positive_events: int = 5
    confidence: float = 0.95
    slices: tuple[Slice, ...] = ()
    # Floors (and ceilings of errors) every slice group must meet, and every entity when
    # `per_entity` is on: a model useless on some entities cannot pass on a pooled figure. A scope
    # with fewer than `min_positive_events` is shown but not judged.
    per_entity: bool = False
    scope_min_metrics: dict[str, float] = field(default_factory=dict)
    scope_max_metrics: dict[str, float] = field(default_factory=dict)
    # Trained on the same train rows and scored on the same test rows; the candidate must do at
    # least as well on the selection metric (a blocking check).
    baseline: Baseline | None = None
    # Behaviour: small noise (noise_scale x each feature's std) flips at most this share of decisions.
    noise_scale: float = 0.01
    max_flip_rate: float = 0.02


@dataclass(frozen=True)
class DriftSpec:
    window_days: int = 1
    # Features compared for drift; empty means every feature. Spread features (rolling std,
    # difference from the mean) move with each day's anomalies, so a spec may leave them out.
    columns: tuple[str, ...] = ()
    # Share of drifted features at which the dataset counts as drifted (Evidently's drift_share).
    drift_share: float = 0.5


@dataclass(frozen=True)
class MonitoringSpec:
    """Live performance, serving SLOs and when the platform retrains or rolls back by itself."""

    # Labels of an event are complete this long after it; younger predictions are not judged yet.
    label_lateness: dt.timedelta = dt.timedelta(hours=6)
    # Live performance below these floors, or errors (mae, rmse, log_loss, brier) above these
    # ceilings, on matured, labelled predictions fails a check and asks for a retrain.
    min_live_metrics: dict[str, float] = field(default_factory=dict)
    max_live_metrics: dict[str, float] = field(default_factory=dict)
    min_labelled_rows: int = 50
    # Serving SLOs per model version over the recent window.
    slo_window: dt.timedelta = dt.timedelta(hours=1)
    max_p99_ms: float = 250.0
    max_error_rate: float = 0.01
    # A new champion's latency is judged on requests that started this long after it was promoted
    # (requests queued while replicas load it finish on it, slowed by the load, not by the model),
    # and only once it answered this many of them (a p99 of a few requests is their maximum).
    slo_settle: dt.timedelta = dt.timedelta(seconds=30)
    min_slo_requests: int = 200
    # Retraining: a champion older than this is retrained; at most one retrain per cool-down,
    # and only with at least this many new rows since the champion's training data.
    champion_max_age: dt.timedelta = dt.timedelta(days=7)
    retrain_cooldown: dt.timedelta = dt.timedelta(hours=1)
    min_new_rows: int = 1000
    # After a promotion, a champion whose live metric falls behind the previous one's by more than
    # this is rolled back.
    rollback_margin: float = 0.05


@dataclass(frozen=True)
class ServingSpec:
    """A Ray Serve deployment of the use case's own, sized apart from the others: its replicas
    load only its models and score only its requests. Use cases without one share the service's
    deployment (``ML_PLATFORM_SERVE_REPLICAS`` / ``ML_PLATFORM_SERVE_AUTOSCALING``)."""

    replicas: int = 1
    # Ray Serve's own autoscaling_config (min_replicas, max_replicas, target_ongoing_requests,
    # ...): replicas by load instead of ``replicas``.
    autoscaling: dict[str, Any] = field(default_factory=dict)
    num_cpus: float = 0.5


@dataclass(frozen=True)
class UseCaseSpec:
    name: str
    description: str
    entity: str
    timestamp: str
    columns: tuple[Column, ...]
    expectations: Expectations
    features: FeatureSpec
    model: ModelSpec
    gate: GateSpec
    drift: DriftSpec
    partitions_start: str  # first day of the partitions, YYYY-MM-DD
    sources: tuple[Source, ...] = (LandingFiles(),)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    # None: served by the shared deployment.
    serving: ServingSpec | None = None
    labels: Labels = field(default_factory=AnomalyWindows)
    # What one input row is called: its tables are raw_<table>, <table>_quarantine, stg_<table>.
    table: str = "events"
    # MQTT topics the consumer also takes events from, beside ml_platform/<name>/events.
    topic_aliases: tuple[str, ...] = ()
    # One of PARTITIONS: a month of old recordings is one partition with "monthly"; "hourly"
    # stores rows by hour, so an hour's run replaces that hour only.
    partitions: str = "daily"

    @property
    def raw_name(self) -> str:
        return f"raw_{self.table}"

    @property
    def quarantine_name(self) -> str:
        return f"{self.table}_quarantine"

    @property
    def staged_name(self) -> str:
        return f"stg_{self.table}"

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def label_columns(self) -> tuple[str, ...]:
        """The columns of a labels file (and of a posted label) of this use case."""
        if isinstance(self.labels, EventLabels):
            return (self.entity, self.timestamp, self.labels.column)
        return (self.entity, "start", "end")

    @property
    def text_column_names(self) -> frozenset[str]:
        """Columns whose values stay text for features (``is_value``), not cast to numbers."""
        return frozenset(c.name for c in self.columns if c.dtype == "string")

    @property
    def numeric_columns(self) -> list[Column]:
        return [c for c in self.columns if c.dtype in NUMBER_DTYPES]
