"""Monitoring assets per use case: drift, live performance, skew, serving SLOs and the champion
guard, declared to Dagster; what each computes is in ``results``."""

from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml_platform.automation.conditions import after_any_update, on_cron_after_any_update
from ml_platform.metadata import latest_metadata
from ml_platform.monitoring import results
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import UseCaseSpec


def build_monitoring_assets(spec: UseCaseSpec, cron: str) -> list[dg.AssetsDefinition]:
    """``cron``: when the monitors reading the prediction log run (``Settings.monitor_cron``)."""
    return [build_drift_report(spec), *build_live_monitors(spec, cron), build_champion_guard(spec)]


def _key(spec: UseCaseSpec, name: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, name])


def build_drift_report(spec: UseCaseSpec) -> dg.AssetsDefinition:
    key = {n: _key(spec, n) for n in ("features", "training_set", "predictions", "drift_report")}

    @dg.asset(
        key=key["drift_report"],
        group_name=spec.name,
        deps=[key["features"], key["training_set"], key["predictions"]],
        pool=WAREHOUSE_POOL,
        kinds={"evidently"},
        automation_condition=after_any_update(),
        description=(
            f"Data and prediction drift: the champion's training window vs the last "
            f"{spec.drift.window_days} day(s) of features."
        ),
        # Before any features, or with neither a champion nor a training set, there is nothing
        # to compare: the run succeeds without a report instead of failing on every cron tick.
        output_required=False,
    )
    def drift_report(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> Iterator[dg.MaterializeResult]:
        try:
            yield results.drift_report(spec, warehouse, platform.settings)
        except results.NothingToCompare as nothing:
            context.log.info(f"no drift report: {nothing}")

    return drift_report


def build_live_monitors(spec: UseCaseSpec, cron: str) -> list[dg.AssetsDefinition]:
    """The monitors of what serving did: live performance, online/offline skew, SLOs."""
    names = ("features", "predictions", "raw_labels", "live_performance", "feature_skew", "serving_slo")
    key = {n: _key(spec, n) for n in names}
    on_cron = on_cron_after_any_update(cron)

    @dg.asset(
        key=key["live_performance"],
        group_name=spec.name,
        deps=[key["predictions"], key["raw_labels"]],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        automation_condition=on_cron,
        description="Served predictions joined with labels once they matured: live metrics per version.",
        check_specs=[
            dg.AssetCheckSpec("live_performance_slo", asset=key["live_performance"]),
            dg.AssetCheckSpec("not_worse_than_previous", asset=key["live_performance"]),
        ],
    )
    def live_performance(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        return results.live_performance(spec, warehouse, platform.settings)

    @dg.asset(
        key=key["feature_skew"],
        group_name=spec.name,
        deps=[key["predictions"], key["features"]],
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        automation_condition=on_cron,
        description="Feature vectors served online, recomputed offline for the same entity and time.",
        check_specs=[dg.AssetCheckSpec("online_offline_skew", asset=key["feature_skew"])],
    )
    def feature_skew(warehouse: DuckDBResource) -> dg.MaterializeResult:
        return results.feature_skew(spec, warehouse)

    @dg.asset(
        key=key["serving_slo"],
        group_name=spec.name,
        deps=[key["predictions"]],
        pool=WAREHOUSE_POOL,
        kinds={"prometheus"},
        automation_condition=on_cron,
        description=(
            f"Latency p50/p99, throughput and error rate per version over {spec.monitoring.slo_window}."
        ),
        check_specs=[dg.AssetCheckSpec("serving_slo", asset=key["serving_slo"])],
    )
    def serving_slo(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        return results.serving_slo(spec, warehouse, platform.settings)

    return [live_performance, feature_skew, serving_slo]


def build_champion_guard(spec: UseCaseSpec) -> dg.AssetsDefinition:
    key = {n: _key(spec, n) for n in ("live_performance", "serving_slo", "champion_guard")}

    @dg.asset(
        key=key["champion_guard"],
        group_name=spec.name,
        deps=[key["live_performance"], key["serving_slo"]],
        kinds={"mlflow"},
        automation_condition=dg.AutomationCondition.eager(),
        description="Rolls a promotion back when the new champion does worse live than the previous one.",
    )
    def champion_guard(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        return results.champion_guard(
            spec,
            platform.settings,
            latest_metadata(context.instance, key["live_performance"]),
            latest_metadata(context.instance, key["serving_slo"]),
            actor=f"champion_guard run {context.run.run_id}",
        )

    return champion_guard
