"""What each monitoring asset records, as plain functions of the use case, the warehouse and the
settings: drift, live performance from delayed labels, training-serving skew, serving SLOs, and
the guard that rolls a promotion back. ``assets.py`` only declares them to Dagster."""

import datetime as dt
import json

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.assets import features_table, read_features
from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.ingestion.labels import labelled_days, read_labels
from ml_platform.metadata import markdown_table
from ml_platform.monitoring.performance import (
    gaps_vs_previous,
    judged_predictions,
    latency_summary,
    live_metrics,
    logged_answers,
    missed_live_slos,
    skew,
)
from ml_platform.serving.records import predictions_table
from ml_platform.settings import Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tables import table_exists
from ml_platform.tasks import task_of

SKEW_TOLERANCE = 1e-6
SKEW_SAMPLE = 500


def read_predictions(
    warehouse: DuckDBResource, spec: UseCaseSpec, since: dt.datetime | None = None
) -> pl.DataFrame:
    """Logged predictions with their served feature values as columns."""
    query = (
        f"SELECT * EXCLUDE (features), CAST(features AS VARCHAR) AS features FROM {predictions_table(spec)}"
    )
    with warehouse.get_connection() as conn:
        exists = conn.sql(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = 'predictions'",
            params=[spec.name],
        ).fetchall()[0][0]
        if not exists:
            return pl.DataFrame()
        frame = conn.sql(
            query + (" WHERE requested_at >= ?" if since else ""), params=[since] if since else None
        ).pl()
    if frame.is_empty():
        return frame
    names = spec.features.feature_names()
    values = pl.DataFrame(
        [{n: row.get(n) for n in names} for row in map(json.loads, frame["features"])],
        schema={n: pl.Float64 for n in names},
    )
    return pl.concat([frame.drop("features"), values], how="horizontal")


def day_ranges(days: list[dt.date]) -> str:
    """``2026-01-01..2026-01-03, 2026-01-05..2026-01-05`` for the days whose labels arrived."""
    ranges: list[list[dt.date]] = []
    for day in sorted(days):
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return ", ".join(f"{a}..{b}" for a, b in ranges)


def _has_values(column: pl.Series) -> bool:
    present = column.drop_nulls()
    if column.dtype.is_float():
        present = present.drop_nans()
    return not present.is_empty()


def _alias_scored(settings: Settings, spec: UseCaseSpec, alias: str, frame: pl.DataFrame):
    """The model under ``alias`` and its answers on ``frame``'s features as a ``Scored`` (None
    without such a model or rows)."""
    from ml_platform.training import registry
    from ml_platform.training.evaluate import features_of, score

    ref = registry.alias_ref(settings, spec.name, alias)
    if ref is None or frame.is_empty():
        return ref, None
    task = task_of(spec)
    model = registry.load_verified_model(ref, settings.model_cache, task)
    return ref, score(task, model, features_of(frame, spec))


class NothingToCompare(Exception):
    """A monitor with no data to judge yet (not a failure): the message says what is missing."""


def drift_report(spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings) -> dg.MaterializeResult:
    """The champion's train window against the newest ``drift.window_days`` of features.

    Raises ``NothingToCompare`` before any features, or with neither a champion nor a training set."""
    columns = list(spec.drift.columns) or spec.features.feature_names()
    from ml_platform.monitoring.drift import MAX_ROWS, run_drift_report
    from ml_platform.monitoring.fast_drift import column_drift
    from ml_platform.training import registry
    from ml_platform.training.steps import read_split, training_table

    with warehouse.get_connection() as conn:
        has_features = table_exists(conn, features_table(spec))
        has_training_set = table_exists(conn, training_table(spec))
    features = read_features(warehouse, spec) if has_features else None
    if features is None or features.is_empty():
        raise NothingToCompare(f"{spec.name}: no features yet; the drift report follows the first features")
    since = features[EVENT_TIMESTAMP].max() - dt.timedelta(days=spec.drift.window_days)
    current = features.filter(pl.col(EVENT_TIMESTAMP) > since)
    champion = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    tags = registry.configure(settings).get_run(champion.run_id).data.tags if champion else {}
    if tags.get("train_from") and tags.get("train_to"):
        window = (
            dt.datetime.fromisoformat(tags["train_from"]),
            dt.datetime.fromisoformat(tags["train_to"]),
        )
        reference = features.filter(pl.col(EVENT_TIMESTAMP).is_between(*window))
        reference_from = f"champion v{champion.version} train window {window[0]} .. {window[1]}"
    elif has_training_set:  # no champion yet: the current training set's train split
        reference = read_split(warehouse, spec, "train").select(features.columns)
        reference_from = "training_set train split (no champion yet)"
    else:
        raise NothingToCompare(
            f"{spec.name}: neither a champion nor a training set yet, so no reference to compare the "
            f"newest features with; the drift report follows the first training set"
        )
    compared = list(columns)
    _, ref_scored = _alias_scored(settings, spec, registry.CHAMPION, reference)
    _, cur_scored = _alias_scored(settings, spec, registry.CHAMPION, current)
    if ref_scored is not None and cur_scored is not None:  # prediction drift, same test
        task = task_of(spec)
        predicted = task.score_output
        reference = reference.with_columns(pl.Series(predicted, task.score_values(ref_scored.scores)))
        current = current.with_columns(pl.Series(predicted, task.score_values(cur_scored.scores)))
        compared.append(predicted)
    # A column with no value in either window (an optional column the data never has) cannot
    # drift: it is reported as having no data, and the others are judged.
    no_data = [c for c in compared if not (_has_values(reference[c]) and _has_values(current[c]))]
    compared = [c for c in compared if c not in no_data]
    if not compared:
        raise dg.Failure(
            description=f"{spec.name}: no drift column has values in both windows "
            f"(no data in {', '.join(no_data)}); declare drift.columns the data has",
            allow_retries=False,
        )
    # The verdict is computed on every row with Evidently's own tests (vectorized); Evidently
    # itself builds the HTML people read, on a bounded sample.
    result = column_drift(reference, current, compared, spec.drift.drift_share)
    report = run_drift_report(
        reference.select(compared).to_pandas(),
        current.select(compared).to_pandas(),
        compared,
        settings.reports_dir / spec.name,
        spec.drift.drift_share,
        seed=spec.model.seed,
    )
    sample_verdicts = {c.column: c.drifted for c in report.columns}
    agreeing = sum(sample_verdicts.get(c.column) == c.drifted for c in result.columns)
    return dg.MaterializeResult(
        metadata={
            "report_id": report.report_id,
            "dataset_drift": result.dataset_drift,
            "drift_share": result.drift_share,
            "drifted_columns": result.drifted_columns,
            "tests": {
                **{c.column: c.method for c in result.columns},
                **dict.fromkeys(no_data, "no data"),
            },
            "no_data_columns": no_data,
            "report": dg.MetadataValue.path(str(report.html_path)),
            "report_sample_rows": min(len(current), MAX_ROWS),
            "report_sample_agreement": agreeing / len(result.columns) if result.columns else 1.0,
            "reference": reference_from,
            "reference_rows": len(reference),
            "current_rows": len(current),
            "current_from": str(current[EVENT_TIMESTAMP].min()),
            "champion_version": champion.version if champion else "",
            **{f"drift_score/{c.column}": c.score for c in result.columns},
        }
    )


def live_performance(
    spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings
) -> dg.MaterializeResult:
    """Served predictions joined with their labels once matured: live metrics per version, and
    the champion against the previous one on the very rows the champion served."""
    monitoring = spec.monitoring
    from ml_platform.training import registry

    predictions = read_predictions(warehouse, spec)
    now = dt.datetime.now(dt.UTC)
    with warehouse.get_connection() as conn:
        labels, days = read_labels(conn, spec), labelled_days(conn, spec)
    if predictions.is_empty():
        labelled, stats = (
            predictions,
            {"predictions": 0.0, "matured": 0.0, "labelled": 0.0, "label_coverage": 0.0},
        )
    else:
        labelled, stats = judged_predictions(predictions, labels, spec, days, now)
    champion = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    task = task_of(spec)
    by_version = (
        {
            str(v): live_metrics(task, logged_answers(task, group), group)
            for (v,), group in labelled.group_by("model_version")
        }
        if not labelled.is_empty()
        else {}
    )
    current = by_version.get(champion.version, {"rows": 0.0}) if champion else {"rows": 0.0}
    enough = current.get("rows", 0) >= monitoring.min_labelled_rows
    slo_failures = missed_live_slos(spec, current)
    # The previous champion scored offline on the very rows the champion served.
    champion_rows = (
        labelled.filter(pl.col("model_version") == champion.version) if champion and enough else None
    )
    previous, previous_scored = (
        _alias_scored(settings, spec, registry.PREVIOUS, champion_rows)
        if champion_rows is not None
        else (None, None)
    )
    gaps = {}
    if previous_scored is not None:
        gaps = gaps_vs_previous(task, spec, current, live_metrics(task, previous_scored, champion_rows))
    worse = {m: g for m, g in gaps.items() if g < -monitoring.rollback_margin}
    return dg.MaterializeResult(
        metadata={
            **stats,
            "champion_version": champion.version if champion else "",
            "previous_version": previous.version if previous else "",
            **{f"live/{m}": v for m, v in current.items()},
            **{f"gap_vs_previous/{m}": g for m, g in gaps.items()},
            "by_version": markdown_table([{"version": v, **m} for v, m in sorted(by_version.items())]),
            "labels_cover": day_ranges(days),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="live_performance_slo",
                passed=not slo_failures,
                metadata={"failures": markdown_table(slo_failures), "enough_labelled_rows": enough},
            ),
            dg.AssetCheckResult(
                check_name="not_worse_than_previous",
                passed=not worse,
                metadata={
                    "gaps": markdown_table([{"metric": m, "gap": g} for m, g in gaps.items()]),
                    "margin": monitoring.rollback_margin,
                },
            ),
        ],
    )


def feature_skew(spec: UseCaseSpec, warehouse: DuckDBResource) -> dg.MaterializeResult:
    """Vectors served online against the offline table's rows for the same entity and time."""
    predictions = read_predictions(warehouse, spec)
    names = spec.features.feature_names()
    if predictions.is_empty():
        worst = {"compared_rows": 0.0}
    else:
        served = (
            predictions.filter(pl.col("feature_event_timestamp").is_not_null())
            .rename({"feature_event_timestamp": EVENT_TIMESTAMP})
            .unique(subset=[spec.entity, EVENT_TIMESTAMP], keep="first", maintain_order=True)
        )
        logged = served.sample(n=SKEW_SAMPLE, seed=spec.model.seed) if len(served) > SKEW_SAMPLE else served
        with warehouse.get_connection() as conn:
            conn.register("served_keys", logged.select(spec.entity, EVENT_TIMESTAMP).to_arrow())
            offline = conn.sql(
                f"SELECT f.* FROM {features_table(spec)} f"
                f' SEMI JOIN served_keys USING ("{spec.entity}", {EVENT_TIMESTAMP})'
            ).pl()
            conn.unregister("served_keys")
        worst = skew(logged.select(spec.entity, EVENT_TIMESTAMP, *names), offline, spec, SKEW_TOLERANCE)
    skewed = {n: d for n, d in worst.items() if n != "compared_rows" and d > SKEW_TOLERANCE}
    return dg.MaterializeResult(
        metadata={
            "compared_rows": worst.get("compared_rows", 0.0),
            **{f"max_abs_difference/{n}": min(d, 1e308) for n, d in worst.items() if n != "compared_rows"},
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="online_offline_skew",
                passed=not skewed,
                description=("skewed features: " + ", ".join(sorted(skewed))) if skewed else None,
                metadata={"skewed_features": sorted(skewed), "tolerance": SKEW_TOLERANCE},
            )
        ],
    )


def serving_slo(spec: UseCaseSpec, warehouse: DuckDBResource, settings: Settings) -> dg.MaterializeResult:
    """Latency and throughput per version from the log, the error rate from ``/metrics``."""
    monitoring = spec.monitoring
    from ml_platform.monitoring.slo import MetricsUnavailable, scrape_error_rate
    from ml_platform.training import registry

    since = dt.datetime.now(dt.UTC) - monitoring.slo_window
    recent = read_predictions(warehouse, spec, since)
    summary = latency_summary(recent, monitoring.slo_window) if not recent.is_empty() else {}
    champion = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    mine: dict[str, float] = {}
    judged_from = since
    if champion is not None:
        promoted = registry.promoted_at(settings, spec.name, champion.version)
        judged_from = max(since, promoted + monitoring.slo_settle) if promoted else since
        started = pl.col("requested_at") - pl.duration(
            microseconds=(pl.col("latency_ms") * 1000).cast(pl.Int64)
        )
        settled = recent.filter((pl.col("model_version") == champion.version) & (started >= judged_from))
        mine = latency_summary(settled, monitoring.slo_window).get(champion.version, {"requests": 0.0})
    unavailable = ""
    try:
        error_rate = scrape_error_rate(settings.serve_url, spec.name)
    except MetricsUnavailable as exc:
        # Latency from the log is still judged; the error rate is said unknown, not zero.
        error_rate, unavailable = None, str(exc)
    if error_rate is not None:
        mine["error_rate"] = error_rate
    broken = []
    if mine.get("requests", 0) >= monitoring.min_slo_requests and mine["p99_ms"] > monitoring.max_p99_ms:
        broken.append(f"p99 {mine['p99_ms']:.1f} ms > {monitoring.max_p99_ms} ms")
    if mine.get("error_rate", 0.0) > monitoring.max_error_rate:
        broken.append(f"error rate {mine['error_rate']:.3f} > {monitoring.max_error_rate}")
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion.version if champion else "",
            **{f"champion/{k}": v for k, v in mine.items()},
            "champion/judged_from": judged_from.isoformat(),
            **({"error_rate_unavailable": unavailable} if unavailable else {}),
            "by_version": markdown_table([{"version": v, **m} for v, m in sorted(summary.items())]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="serving_slo",
                passed=not broken,
                description=f"error rate not judged: {unavailable}" if unavailable else None,
                metadata={"broken": ", ".join(broken) or "none"},
            )
        ],
    )


def champion_guard(
    spec: UseCaseSpec, settings: Settings, live: dict, slo: dict, actor: str
) -> dg.MaterializeResult:
    """Roll back to the previous champion when ``live`` (``live_performance``'s metadata) or ``slo``
    (``serving_slo``'s) says the current one does worse; ``actor`` is recorded with the move."""
    monitoring = spec.monitoring
    from ml_platform.training import registry

    champion = registry.alias_ref(settings, spec.name, registry.CHAMPION)
    reasons = []
    if champion and live.get("champion_version") == champion.version:
        reasons += [
            f"live {name.split('/', 1)[1]} {gap:+.3f} vs previous"
            for name, gap in live.items()
            if name.startswith("gap_vs_previous/") and gap < -monitoring.rollback_margin
        ]
    if champion and slo.get("champion_version") == champion.version:
        judged = slo.get("champion/requests", 0) >= monitoring.min_slo_requests
        if judged and slo.get("champion/p99_ms", 0.0) > monitoring.max_p99_ms:
            reasons.append(f"p99 {slo['champion/p99_ms']:.1f} ms over the SLO")
        if slo.get("champion/error_rate", 0.0) > monitoring.max_error_rate:
            reasons.append(f"error rate {slo['champion/error_rate']:.3f} over the SLO")
    previous = registry.alias_ref(settings, spec.name, registry.PREVIOUS)
    move = None
    if reasons and previous is not None:
        move = registry.rollback(settings, spec.name, actor, "; ".join(reasons))
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion.version if champion else "",
            "rolled_back": move is not None,
            "reasons": "; ".join(reasons) or "none",
            **({"now_serving": move["to_version"]} if move else {}),
        }
    )
