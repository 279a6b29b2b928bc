"""Sensors: new landed files start ingestion; drift, a live-performance drop or a stale champion
start one retrain."""

import datetime as dt
import json

import dagster as dg

from ml_platform.ingestion.labels import label_files
from ml_platform.ingestion.landing import file_sha256, list_landing_files
from ml_platform.ingestion.raw import file_grains
from ml_platform.metadata import failed_checks, latest_metadata
from ml_platform.monitoring.performance import missed_live_slos
from ml_platform.partitions import (
    contiguous_ranges,
    last_partition_of_day,
    partition_of,
    partitions_of,
    time_partitions,
)
from ml_platform.resources.platform import PlatformResource
from ml_platform.serving.inbox import InboxError, deliver
from ml_platform.settings import Settings
from ml_platform.spec import UseCaseSpec

RETRAIN_ASSETS = ("training_set", "model", "model_evaluation", "champion", "deployment")
STATE_TAG = "ml_platform/retrain_state"


def ingested_files_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]
) -> dict[str, dict[str, str]]:
    """Per partition of ``partitions`` materialized: path -> sha256 of the files its latest
    materialization loaded. A few queries for a file over 720 hours, not one per hour."""
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(partitions), _PAGE):
        chunk = partitions[start : start + _PAGE]
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk), limit=_PAGE, cursor=cursor
            )
            for record in page.records:  # newest first: the first seen per partition is its latest
                materialization = record.asset_materialization
                if materialization.partition not in found:
                    value = materialization.metadata.get("source_files")
                    found[materialization.partition] = dict(value.value) if value is not None else {}
            if not page.has_more or all(p in found for p in chunk):
                break
            cursor = page.cursor
    return found


_PAGE = 500


def ingestion_keys(spec: UseCaseSpec) -> list[dg.AssetKey]:
    """What one landing run materializes for its partitions: raw rows, quarantine, staging, features.

    Staging and features ride in the landing run rather than following it by automation: several
    partitions requested at once become a backfill, which the daemon's backfill loop submits and
    then marks done on its 30 s cycle, so each landing would wait up to a minute before anything
    downstream (drift report, online features) could start. Automation still stages a raw
    partition materialized any other way (``follow_upstream``: an upstream updated after it)."""
    names = (spec.raw_name, spec.quarantine_name, spec.staged_name, "features")
    return [dg.AssetKey([spec.name, name]) for name in names]


def build_landing_sensor(spec: UseCaseSpec, interval_s: int) -> dg.SensorDefinition:
    # Online features, drift and the monitors follow the landing run by declarative automation.
    keys = ingestion_keys(spec)
    raw_key = keys[0]
    labels_key = dg.AssetKey([spec.name, "raw_labels"])
    partitions = time_partitions(spec)

    @dg.sensor(
        name=f"{spec.name}_landing_sensor",
        description=(
            "Starts ingestion of the partitions new or changed landed files have rows in, through "
            "staging and features (one run per range of adjacent partitions), and of labels files."
        ),
        asset_selection=[*keys, labels_key],
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        deliver_posts(context, platform.settings, spec.name)
        seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
        valid = partitions.has_partition_key
        pending: dict[str, list[str]] = {}
        for path in list_landing_files(platform.settings.landing_dir_for(spec.name)):
            stat = path.stat()
            stamp = [stat.st_mtime_ns, stat.st_size]
            if seen.get(str(path)) == stamp:
                continue
            sha = file_sha256(path)
            grains = file_grains(path, spec)
            for value in grains:
                if not valid(partition_of(spec, value)):
                    context.log.warning(f"{path}: {value} is outside the partitions; not ingested")
            file_partitions = [p for p in partitions_of(spec, grains) if valid(p)]
            ingested = ingested_files_by_partition(context.instance, raw_key, file_partitions)
            for partition in file_partitions:
                if ingested.get(partition, {}).get(str(path)) != sha:
                    pending.setdefault(partition, []).append(f"{path.name}@{sha[:12]}")
            seen[str(path)] = stamp
        requests = [
            _ingestion_request(
                keys, first, last, sorted({f for p, fs in pending.items() if first <= p <= last for f in fs})
            )
            for first, last in contiguous_ranges(partitions, list(pending))
        ]
        for path, first, last in label_files(platform.settings.labels_dir_for(spec.name)):
            stat = path.stat()
            stamp = [stat.st_mtime_ns, stat.st_size]
            if seen.get(str(path)) == stamp:
                continue
            seen[str(path)] = stamp
            sha = file_sha256(path)
            # A labels run loads whole days: a day is stale when its first partition does not
            # hold the file at its current content.
            firsts = {day: p for day in _days(first, last) if valid(p := partition_of(spec, day))}
            ingested = ingested_files_by_partition(context.instance, labels_key, sorted(set(firsts.values())))
            stale = [day for day, p in firsts.items() if ingested.get(p, {}).get(str(path)) != sha]
            if stale:  # one run for the file's partitions (raw_labels backfills a range in one run)
                requests.append(
                    dg.RunRequest(
                        run_key=f"labels:{path.name}@{sha[:12]}",
                        asset_selection=[labels_key],
                        tags={
                            "ml_platform/trigger": "landing",
                            "dagster/asset_partition_range_start": partition_of(spec, stale[0]),
                            "dagster/asset_partition_range_end": last_partition_of_day(spec, stale[-1]),
                        },
                    )
                )
        context.update_cursor(json.dumps(seen))
        return requests or dg.SkipReason("no new or changed landed files")

    return landing_sensor


def deliver_posts(context: dg.SensorEvaluationContext, settings: Settings, use_case: str) -> None:
    """Events and labels held for the home by replicas (``serving/inbox.py``) become landed files,
    which this tick then sees like any other. An inbox that does not answer delays them only."""
    try:
        for delivered in deliver(settings, use_case):
            context.log.info(f"landed {delivered.rows} posted batch(es) as {delivered.path}")
    except InboxError as exc:
        context.log.warning(f"{exc.strerror}; posted events and labels wait there until it answers")


def _ingestion_request(keys: list[dg.AssetKey], first: str, last: str, files: list[str]) -> dg.RunRequest:
    """One run over adjacent partitions (each asset of ``keys`` backfills a range in one run)."""
    trigger = {"ml_platform/trigger": "landing"}
    if first == last:
        return dg.RunRequest(
            run_key=f"{first}:{','.join(files)}", partition_key=first, asset_selection=keys, tags=trigger
        )
    return dg.RunRequest(
        run_key=f"{first}...{last}:{','.join(files)}",
        asset_selection=keys,
        tags={
            **trigger,
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _rows_since(instance: dg.DagsterInstance, features_key: dg.AssetKey, since: dt.datetime) -> int:
    """Feature rows (re)computed after ``since``: new days, and days whose data was re-delivered."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=features_key, after_timestamp=since.timestamp()), limit=10_000
    ).records
    latest: dict[str | None, int] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        materialization = record.asset_materialization
        latest[materialization.partition] = int(materialization.metadata["dagster/row_count"].value)
    return sum(latest.values())


def _recent_retrain(instance: dg.DagsterInstance, use_case: str, within: dt.timedelta) -> bool:
    runs = instance.get_run_records(
        dg.RunsFilter(tags={"ml_platform/trigger": "retrain", "ml_platform/use_case": use_case}), limit=1
    )
    if not runs:
        return False
    started = runs[0].create_timestamp
    return dt.datetime.now(dt.UTC) - started < within


def retrain_reasons(
    context: dg.SensorEvaluationContext, spec: UseCaseSpec, cursor: dict, now: dt.datetime
) -> tuple[list[str], dict]:
    """Why a retrain is due now: a new drifted report, new live performance below the SLO, or a
    champion older than its maximum age. Returns the reasons and the cursor once they are consumed."""

    seen = dict(cursor)
    reasons = []
    drift = latest_metadata(context.instance, dg.AssetKey([spec.name, "drift_report"]))
    if drift.get("report_id") and drift["report_id"] != cursor.get("drift"):
        seen["drift"] = drift["report_id"]
        if drift.get("dataset_drift"):
            reasons.append(f"drift report {drift['report_id']} (drift share {drift['drift_share']:.2f})")
    records = context.instance.fetch_materializations(
        dg.AssetKey([spec.name, "live_performance"]), limit=1
    ).records
    if records and str(records[0].storage_id) != cursor.get("performance"):
        seen["performance"] = str(records[0].storage_id)
        metadata = records[0].asset_materialization.metadata
        live = {k.split("/", 1)[1]: v.value for k, v in metadata.items() if k.startswith("live/")}
        missed = [str(m["metric"]) for m in missed_live_slos(spec, live)]
        if missed:
            reasons.append(f"live {', '.join(missed)} below the SLO")
    return reasons, seen


def retrain_state(instance: dg.DagsterInstance, spec: UseCaseSpec, champion_version: str) -> str:
    """What a retrain would start from: the champion's version and the newest feature data (the
    storage id of the latest ``features`` materialization, which any new or re-delivered day
    changes)."""
    records = instance.fetch_materializations(dg.AssetKey([spec.name, "features"]), limit=1).records
    return f"champion-v{champion_version}:features-{records[0].storage_id if records else 'none'}"


def earlier_retrain(instance: dg.DagsterInstance, spec: UseCaseSpec, state: str) -> str | None:
    """How the retrain already started from ``state`` went (None when there was none)."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={"ml_platform/use_case": spec.name, STATE_TAG: state}), limit=1
    )
    if not records:
        return None
    run = records[0].dagster_run
    refused = [f"{e.asset_key.to_user_string()} {e.check_name}" for e in failed_checks(instance, run.run_id)]
    outcome = f"run {run.run_id[:8]} {run.status.value}"
    return f"{outcome}, failed check(s): {', '.join(refused)}" if refused else outcome


def build_retrain_sensor(spec: UseCaseSpec, interval_s: int) -> dg.SensorDefinition:
    """One sensor for every reason to retrain, so that reasons arriving together give one run.

    A retrain is asked for at most once per state (the champion's version and the newest feature
    data): whatever fires, and however often a tick is evaluated (a restarted daemon repeats the
    tick it was in), the same state asks for the same run (one run key), and once that run has
    been made, for instance refused by the gate, the same state does not ask again; new data or a
    new champion does.
    """
    retrain = [dg.AssetKey([spec.name, name]) for name in RETRAIN_ASSETS]
    features_key = dg.AssetKey([spec.name, "features"])
    monitoring = spec.monitoring

    @dg.sensor(
        name=f"{spec.name}_retrain_sensor",
        description="Requests one retrain (gated) per drift event, live-performance drop or stale champion.",
        asset_selection=retrain,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def retrain_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        from ml_platform.training import registry

        now = dt.datetime.now(dt.UTC)
        cursor = json.loads(context.cursor) if context.cursor else {}
        reasons, seen = retrain_reasons(context, spec, cursor, now)
        settings = platform.settings
        champion = registry.alias_ref(settings, spec.name, registry.CHAMPION)
        if champion is None:
            context.update_cursor(json.dumps(seen))
            return dg.SkipReason("no champion yet: the first model is trained by hand or by the demo")
        version = registry.configure(settings).get_model_version(spec.name, champion.version)
        created = dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC)
        if now - created > monitoring.champion_max_age:
            reasons.append(f"champion v{champion.version} is older than {monitoring.champion_max_age}")
        if not reasons:
            context.update_cursor(json.dumps(seen))
            return dg.SkipReason("no drift, no performance drop, champion fresh")
        state = retrain_state(context.instance, spec, champion.version)
        done = earlier_retrain(context.instance, spec, state)
        if done is not None:
            # These reasons concern data a retrain has already been made from: consumed.
            context.update_cursor(json.dumps(seen))
            return dg.SkipReason(
                f"{'; '.join(reasons)}: a retrain from this state ({state}) was already made ({done}); "
                "waiting for new data or another champion"
            )
        # Guard rails: the events stay pending (cursor kept) until a retrain may run.
        if _recent_retrain(context.instance, spec.name, monitoring.retrain_cooldown):
            return dg.SkipReason(f"cool-down: a retrain started less than {monitoring.retrain_cooldown} ago")
        new_rows = _rows_since(context.instance, features_key, created)
        if new_rows < monitoring.min_new_rows:
            return dg.SkipReason(
                f"only {new_rows} new rows since the champion's data; {monitoring.min_new_rows} needed"
            )
        context.update_cursor(json.dumps(seen))
        return dg.RunRequest(
            run_key=f"retrain:{spec.name}:{state}",
            asset_selection=retrain,
            tags={
                "ml_platform/trigger": "retrain",
                "ml_platform/use_case": spec.name,
                STATE_TAG: state,
                "ml_platform/reasons": "; ".join(reasons)[:250],
            },
        )

    return retrain_sensor
