"""Sensors: new landed files start ingestion; a drifted report starts one retrain."""

import datetime as dt
import json

import dagster as dg

from ml_platform.ingestion.landing import file_sha256, list_landing_files
from ml_platform.ingestion.raw import file_days
from ml_platform.metadata import latest_metadata
from ml_platform.resources.platform import PlatformResource
from ml_platform.spec import UseCaseSpec

INGEST_ASSETS = (
    "raw_readings",
    "readings_quarantine",
    "stg_readings",
    "features",
    "online_features",
)
RETRAIN_ASSETS = ("training_set", "model", "model_evaluation", "champion", "deployment")


def ingested_files(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> dict[str, str]:
    """path -> sha256 of the files the latest materialization of partition ``day`` loaded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return {}
    metadata = records[0].asset_materialization.metadata
    value = metadata.get("source_files")
    return dict(value.value) if value is not None else {}


def build_landing_sensor(spec: UseCaseSpec) -> dg.SensorDefinition:
    keys = [dg.AssetKey([spec.name, name]) for name in INGEST_ASSETS]
    raw_key, drift_key = keys[0], dg.AssetKey([spec.name, "drift_report"])
    training_key = dg.AssetKey([spec.name, "training_set"])
    partitions = dg.DailyPartitionsDefinition(start_date=spec.partitions_start, end_offset=1)

    @dg.sensor(
        name=f"{spec.name}_landing_sensor",
        description="Starts ingestion of each new or changed landed file's days.",
        asset_selection=[*keys, drift_key],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
        valid_days = set(partitions.get_partition_keys(current_time=dt.datetime.now(dt.UTC)))
        # Once a model exists, fresh data also refreshes the drift report (which may retrain).
        selection = keys + (
            [drift_key] if context.instance.get_latest_materialization_event(training_key) else []
        )
        pending: dict[str, list[str]] = {}
        for path in list_landing_files(platform.settings.landing_dir_for(spec.name)):
            stat = path.stat()
            stamp = [stat.st_mtime_ns, stat.st_size]
            if seen.get(str(path)) == stamp:
                continue
            sha = file_sha256(path)
            for day in file_days(path, spec):
                if day not in valid_days:
                    context.log.warning(f"{path}: day {day} is outside the partitions; not ingested")
                    continue
                if ingested_files(context.instance, raw_key, day).get(str(path)) != sha:
                    pending.setdefault(day, []).append(f"{path.name}@{sha[:12]}")
            seen[str(path)] = stamp
        context.update_cursor(json.dumps(seen))
        if not pending:
            return dg.SkipReason("no new or changed landed files")
        return [
            dg.RunRequest(
                run_key=f"{day}:{','.join(files)}",
                partition_key=day,
                asset_selection=selection,
                tags={"ml_platform/trigger": "landing"},
            )
            for day, files in sorted(pending.items())
        ]

    return landing_sensor


def build_drift_sensor(spec: UseCaseSpec) -> dg.SensorDefinition:
    drift_key = dg.AssetKey([spec.name, "drift_report"])
    retrain = [dg.AssetKey([spec.name, name]) for name in RETRAIN_ASSETS]

    @dg.sensor(
        name=f"{spec.name}_drift_sensor",
        description="Requests one retrain (gated by the evaluation checks) per drifted report.",
        asset_selection=retrain,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def drift_sensor(context: dg.SensorEvaluationContext):
        report = latest_metadata(context.instance, drift_key)
        report_id = report.get("report_id")
        if not report_id:
            return dg.SkipReason("no drift report yet")
        if report_id == context.cursor:
            return dg.SkipReason(f"report {report_id} already handled")
        context.update_cursor(report_id)
        if not report.get("dataset_drift"):
            return dg.SkipReason(f"report {report_id}: drift share {report.get('drift_share'):.2f}, no drift")
        return dg.RunRequest(
            run_key=f"drift:{report_id}",
            asset_selection=retrain,
            tags={"ml_platform/trigger": "drift", "ml_platform/drift_report": report_id},
        )

    return drift_sensor
