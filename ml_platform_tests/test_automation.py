"""Declarative automation of the monitors, evaluated by Dagster itself (``evaluate_automation_conditions``)
on a real instance: a monitor runs once per cron tick after *any* of its upstreams updated, and the
one judging labels also once when they land."""

import datetime as dt

import dagster as dg

from ml_platform.automation.conditions import after_update_of, on_cron_after_any_update
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


@dg.asset(
    key="labelled_monitor",
    deps=[predictions, labels],
    automation_condition=on_cron_after_any_update(CRON) | after_update_of(labels.key),
)
def labelled_monitor() -> None: ...


def _requested(
    defs, instance, cursor, at: dt.datetime, asset: dg.AssetsDefinition = monitor
) -> tuple[bool, object]:
    """Whether an evaluation at ``at`` requests ``asset``, and the cursor for the next one."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=cursor, evaluation_time=at
    )
    return result.get_num_requested(asset.key) > 0, result.cursor


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


def test_labels_that_land_between_ticks_are_judged_at_once_and_once():
    defs = dg.Definitions(assets=[predictions, labels, labelled_monitor])
    with dg.instance_for_test() as instance:
        dg.materialize(
            [predictions, labelled_monitor], instance=instance, selection=[predictions, labelled_monitor]
        )
        requested, cursor = _requested(defs, instance, None, TICK + dt.timedelta(minutes=1), labelled_monitor)
        assert not requested
        # Between ticks, predictions alone wait for the next tick.
        instance.report_runless_asset_event(dg.AssetMaterialization(predictions.key))
        requested, cursor = _requested(
            defs, instance, cursor, TICK + dt.timedelta(minutes=2), labelled_monitor
        )
        assert not requested
        # Labels of an old day land: judged now, not at the tick eight minutes away.
        instance.report_runless_asset_event(dg.AssetMaterialization(labels.key, partition="2026-03-01"))
        requested, cursor = _requested(
            defs, instance, cursor, TICK + dt.timedelta(minutes=3), labelled_monitor
        )
        assert requested
        # Requested once: not again until labels land anew.
        requested, cursor = _requested(
            defs, instance, cursor, TICK + dt.timedelta(minutes=4), labelled_monitor
        )
        assert not requested
        # More labels of that day land while that run is going: once it is done, one more.
        instance.report_runless_asset_event(dg.AssetMaterialization(labels.key, partition="2026-03-01"))
        instance.report_runless_asset_event(dg.AssetMaterialization(labelled_monitor.key))
        requested, _ = _requested(defs, instance, cursor, TICK + dt.timedelta(minutes=5), labelled_monitor)
        assert requested


def test_the_monitors_that_read_predictions_use_it():
    spec = get_use_case("card_fraud")
    defs = build_definitions(load_settings(), [spec])
    labels = dg.AssetKey([spec.name, "raw_labels"]).to_user_string()
    on_cron = f"on cron {CRON}, after any upstream update"
    for name, wanted in (
        ("live_performance", [on_cron, f"after {labels} updates"]),
        ("feature_skew", [on_cron]),
        ("serving_slo", [on_cron]),
    ):
        key = dg.AssetKey([spec.name, name])
        condition = defs.resolve_assets_def(key).automation_conditions_by_key[key]
        labels_of = (
            [c.get_label() for c in condition.operands] if len(wanted) > 1 else [condition.get_label()]
        )
        assert labels_of == wanted, name
