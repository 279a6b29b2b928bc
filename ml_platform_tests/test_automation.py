"""Declarative automation of the monitors, evaluated by Dagster itself (``evaluate_automation_conditions``)
on a real instance: a monitor runs once per cron tick after *any* of its upstreams updated."""

import datetime as dt

import dagster as dg

from ml_platform.automation.conditions import on_cron_after_any_update
from ml_platform.definitions import build_definitions
from ml_platform.settings import load_settings
from ml_platform.usecases import get_use_case

CRON = "*/10 * * * *"
TICK = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


@dg.asset
def predictions() -> None: ...


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-03-01"))
def labels() -> None: ...


@dg.asset(deps=[predictions, labels], automation_condition=on_cron_after_any_update(CRON))
def monitor() -> None: ...


def _requested(defs, instance, cursor, at: dt.datetime) -> tuple[bool, object]:
    """Whether an evaluation at ``at`` requests the monitor, and the cursor for the next one."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor, evaluation_time=at
    )
    return result.get_num_requested(monitor.key) > 0, result.cursor


def test_a_monitor_runs_once_per_tick_after_predictions_alone_updated():
    defs = dg.Definitions(assets=[predictions, labels, monitor])
    with dg.instance_for_test() as instance:
        dg.materialize([predictions, monitor], instance=instance, selection=[predictions, monitor])
        dg.materialize([labels], instance=instance, partition_key="2026-03-01")
        requested, cursor = _requested(defs, instance, None, TICK - dt.timedelta(minutes=5))
        assert not requested

        # After the tick, only the predictions were ingested: no new label landed.
        instance.report_runless_asset_event(dg.AssetMaterialization(predictions.key))
        requested, cursor = _requested(defs, instance, cursor, TICK + dt.timedelta(minutes=1))
        assert requested
        # Handled for this tick: not again until the next one, whatever updates meanwhile.
        instance.report_runless_asset_event(dg.AssetMaterialization(monitor.key))
        instance.report_runless_asset_event(dg.AssetMaterialization(predictions.key))
        requested, cursor = _requested(defs, instance, cursor, TICK + dt.timedelta(minutes=3))
        assert not requested
        # The next tick: updates from before it do not count; the predictions ingested after it do.
        requested, cursor = _requested(defs, instance, cursor, TICK + dt.timedelta(minutes=11))
        assert not requested
        instance.report_runless_asset_event(dg.AssetMaterialization(predictions.key))
        requested, _ = _requested(defs, instance, cursor, TICK + dt.timedelta(minutes=12))
        assert requested


def test_the_monitors_that_read_predictions_use_it():
    spec = get_use_case("card_fraud")
    defs = build_definitions(load_settings(), [spec])
    for name in ("live_performance", "feature_skew", "serving_slo"):
        key = dg.AssetKey([spec.name, name])
        condition = defs.resolve_assets_def(key).automation_conditions_by_key[key]
        assert condition.get_label() == f"on cron {CRON}, after any upstream update", name
