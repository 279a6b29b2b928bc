"""Typed hand-offs between assets: a dataclass kept as the materialization's JSON metadata in the
Dagster instance and read back as the type the next asset declares."""

from dataclasses import dataclass

import dagster as dg
import pytest

from ml_platform.resources.handoffs import HANDOFF, HANDOFFS, HandoffIOManager


@dataclass(frozen=True)
class Window:
    first: str
    rows: int


@dataclass(frozen=True)
class Other:
    first: str
    rows: int


seen: list[Window] = []


def upstream_handing(value: object) -> dg.AssetsDefinition:
    @dg.asset(name="upstream", io_manager_key=HANDOFFS)
    def upstream() -> dg.MaterializeResult:
        return dg.MaterializeResult(value=value, metadata={"rows": 3})

    return upstream


@dg.asset(io_manager_key=HANDOFFS)
def downstream(upstream: Window) -> dg.MaterializeResult:
    seen.append(upstream)
    return dg.MaterializeResult(metadata={"first": upstream.first})


def run(instance: dg.DagsterInstance, assets: list, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        selection=selection,
        instance=instance,
        resources={HANDOFFS: HandoffIOManager()},
        raise_on_error=False,
    )


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.user_failure_data.description


def test_a_value_handed_on_is_read_back_typed_in_a_later_run():
    seen.clear()
    assets = [upstream_handing(Window("2014-01-01", 3)), downstream]
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(instance, assets, ["upstream"]).success
        stored = instance.get_latest_materialization_event(dg.AssetKey("upstream")).asset_materialization
        assert stored.metadata[HANDOFF].value == {
            "type": "Window",
            "value": {"first": "2014-01-01", "rows": 3},
        }
        assert run(instance, assets, ["downstream"]).success  # a run of its own reads it
    assert seen == [Window("2014-01-01", 3)]


def test_an_upstream_never_materialized_fails_naming_it_and_what_to_do():
    with dg.DagsterInstance.ephemeral() as instance:
        result = run(instance, [upstream_handing(Window("2014-01-01", 3)), downstream], ["downstream"])
    assert not result.success
    assert failure_of(result).startswith("upstream has handed on no Window in this Dagster instance")
    assert "materialize upstream first" in failure_of(result)


def test_a_value_of_another_type_is_refused_not_coerced():
    with dg.DagsterInstance.ephemeral() as instance:
        assets = [upstream_handing(Other("2014-01-01", 3)), downstream]
        assert run(instance, assets, ["upstream"]).success
        result = run(instance, assets, ["downstream"])
    assert not result.success
    assert (
        failure_of(result)
        == "upstream handed on a Other, not the Window expected; materialize upstream again"
    )


@pytest.mark.parametrize("value", [{"first": "2014-01-01"}, Window])
def test_only_dataclass_instances_are_handed_on(value):
    with dg.DagsterInstance.ephemeral() as instance:
        result = run(instance, [upstream_handing(value), downstream], ["upstream"])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "upstream: a hand-off is a dataclass" in str(
        failure.step_failure_data.error.cause or failure.step_failure_data.error
    )
