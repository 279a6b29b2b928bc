"""The Dagster code location: every use case's assets, checks and sensors on shared resources."""

from __future__ import annotations

import dagster as dg

from ml_platform.automation.sensors import build_landing_sensor, build_retrain_sensor
from ml_platform.features.assets import build_feature_assets
from ml_platform.ingestion.assets import build_ingestion_assets, build_ingestion_checks, build_label_assets
from ml_platform.monitoring.assets import build_monitoring_assets
from ml_platform.resources.platform import build_resources
from ml_platform.serving.assets import build_serving_assets
from ml_platform.settings import Settings, load_settings
from ml_platform.spec import UseCaseSpec
from ml_platform.training.assets import build_training_assets
from ml_platform.usecases import use_cases as find_use_cases
from ml_platform.validation.dbt_assets import build_dbt_assets


def build_definitions(
    settings: Settings | None = None, use_cases: list[UseCaseSpec] | None = None
) -> dg.Definitions:
    """The code location for ``use_cases`` (default: every use case the settings declare)."""
    settings = settings or load_settings()
    specs = list(find_use_cases(settings).values()) if use_cases is None else use_cases
    # Each use case's dbt models run on the use case's own daily partitions.
    assets: list = build_dbt_assets(specs)
    sensors: list = []
    checks: list = []
    for spec in specs:
        checks += build_ingestion_checks(spec)
        assets += build_ingestion_assets(spec)
        assets += build_label_assets(spec)
        assets += build_feature_assets(spec)
        assets += build_training_assets(spec)
        assets += build_serving_assets(spec, settings.monitor_cron)
        assets += build_monitoring_assets(spec, settings.monitor_cron)
        sensors += [
            build_landing_sensor(spec, settings.sensor_interval_s),
            build_retrain_sensor(spec, settings.sensor_interval_s),
        ]
    # Evaluates the assets' automation conditions (eager staging and features, cron monitors).
    sensors.append(
        dg.AutomationConditionSensorDefinition(
            "ml_platform_automation",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=settings.sensor_interval_s,
        )
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        sensors=sensors,
        resources=build_resources(settings),
        # One process per run: steps share imports and the warehouse is written serially anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
