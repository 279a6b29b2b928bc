"""Serving assets per use case: the Ray Serve deployment of the champion, the prediction log
ingested from serving, and batch predictions; what the last two write is in ``records``."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml_platform.partitions import partition_grains, time_partitions
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.serving import records
from ml_platform.spec import UseCaseSpec
from ml_platform.training.handoffs import Champion


def build_serving_assets(spec: UseCaseSpec, cron: str) -> list[dg.AssetsDefinition]:
    """``cron``: when the prediction log is ingested (``Settings.monitor_cron``)."""
    champion_key = dg.AssetKey([spec.name, "champion"])
    deployment_key = dg.AssetKey([spec.name, "deployment"])

    @dg.asset(
        key=deployment_key,
        group_name=spec.name,
        ins={"champion": dg.AssetIn(champion_key)},
        kinds={"ray"},
        description="Ray Serve serving the champion (a reconfigure: no request is dropped).",
    )
    def deployment(champion: Champion, platform: PlatformResource) -> dg.MaterializeResult:
        from ml_platform.serving.deploy import deploy, wait_until_serving  # Ray: load in runs only

        settings = platform.settings
        deployed = deploy(settings)
        served = wait_until_serving(settings, spec.name, champion.version)
        return dg.MaterializeResult(
            metadata={
                "model_version": champion.version,
                "served_versions": served["versions"],
                "endpoint": dg.MetadataValue.url(f"{settings.serve_url}/v1/models/{spec.name}/predict"),
                "use_cases_served": sorted(deployed),
            }
        )

    @dg.asset(
        key=[spec.name, "predictions"],
        group_name=spec.name,
        deps=[deployment_key],
        # Ingested on a schedule; the monitors downstream follow it.
        automation_condition=dg.AutomationCondition.cron_tick_passed(cron)
        & ~dg.AutomationCondition.in_progress(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        description="Prediction log from serving, ingested once per prediction id.",
    )
    def predictions(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        return records.ingest_prediction_log(spec, warehouse, platform.settings)

    @dg.asset(
        key=[spec.name, "batch_predictions"],
        group_name=spec.name,
        deps=[dg.AssetKey([spec.name, "features"]), champion_key],
        partitions_def=time_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "scikitlearn"},
        description="Every event of the partition scored by the champion, with version and id.",
    )
    def batch_predictions(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        first, last = partition_grains(context, spec)
        return records.score_span(spec, warehouse, platform.settings, first, last)

    return [deployment, predictions, batch_predictions]
