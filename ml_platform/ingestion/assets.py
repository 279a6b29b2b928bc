"""Raw rows and their quarantine: time partitions in the warehouse, guarded by blocking checks
(what they record is in ``results``), and the labels."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml_platform.ingestion import results
from ml_platform.ingestion.labels import LabelFileError, labels_table, load_label_days
from ml_platform.ingestion.raw import GrainMismatch, load_raw_partitions
from ml_platform.metadata import markdown_table
from ml_platform.partitions import partition_days, partition_grains, time_partitions
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import EventLabels, UseCaseSpec
from ml_platform.validation.summary import (
    partition_filter,
    record_rejects,
    summarize,
    write_quarantine,
)


def freshness_policy(spec: UseCaseSpec) -> dg.FreshnessPolicy:
    window = spec.expectations.fresh_within
    return dg.FreshnessPolicy.time_window(fail_window=window, warn_window=window * 3 / 4)


def build_ingestion_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    raw_key = dg.AssetKey([spec.name, spec.raw_name])
    quarantine_key = dg.AssetKey([spec.name, spec.quarantine_name])
    partitions = time_partitions(spec)

    @dg.asset(
        key=raw_key,
        group_name=spec.name,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description="Landed rows of the partition, one row per input row, with provenance.",
        freshness_policy=freshness_policy(spec),
        check_specs=[
            dg.AssetCheckSpec(name, asset=raw_key, blocking=True, description=text)
            for name, text in results.CHECK_DESCRIPTIONS.items()
        ],
    )
    def raw_rows(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        first, last = partition_grains(context, spec)
        landing = platform.settings.landing_dir_for(spec.name)
        with warehouse.get_connection() as conn:
            try:
                load = load_raw_partitions(conn, spec, landing, first, last)
            except GrainMismatch as mismatch:
                raise dg.Failure(description=str(mismatch), allow_retries=False) from None
            record_rejects(conn, spec, first, last)
            summary = summarize(conn, spec, first, last)
        return results.raw_rows_result(spec, load, summary, first, last)

    @dg.asset(
        key=quarantine_key,
        group_name=spec.name,
        deps=[raw_key],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description="Raw rows that broke an expectation, with the rule they broke.",
    )
    def quarantine(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        first, last = partition_grains(context, spec)
        scope = partition_filter(spec, first, last)
        with warehouse.get_connection() as conn:
            table = write_quarantine(conn, spec, first, last)
            counts = conn.sql(
                f"SELECT reject_reason, count(*) FROM {table} WHERE {scope} GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": sum(n for _, n in counts),
                "by_reason": markdown_table([{"reason": r, "rows": n} for r, n in counts]),
                "table": table,
            }
        )

    return [raw_rows, quarantine]


def build_label_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    labels_key = dg.AssetKey([spec.name, "raw_labels"])
    per_event = isinstance(spec.labels, EventLabels)

    @dg.asset(
        key=labels_key,
        group_name=spec.name,
        partitions_def=time_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description=(
            f"{'Labels of the events' if per_event else 'Anomaly windows'} by day, from the labels "
            "files landed or posted for those days; labels arrive up to "
            f"{spec.monitoring.label_lateness} after the events"
            + ("." if per_event else " (a day is judged once its labels landed).")
        ),
    )
    def raw_labels(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        first, last = partition_days(context)
        try:
            with warehouse.get_connection() as conn:
                metadata = load_label_days(
                    conn, spec, platform.settings.labels_dir_for(spec.name), first, last
                )
        except LabelFileError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        return dg.MaterializeResult(metadata={**metadata, "table": labels_table(spec)})

    return [raw_labels]


def build_ingestion_checks(spec: UseCaseSpec) -> list[dg.AssetChecksDefinition]:
    """Column-schema changes between materializations of the raw and staged tables."""
    return list(
        dg.build_column_schema_change_checks(
            assets=[dg.AssetKey([spec.name, spec.raw_name]), dg.AssetKey([spec.name, spec.staged_name])]
        )
    )
