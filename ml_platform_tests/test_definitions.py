"""The code location loads and holds the contract's asset graph."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from ml_platform.definitions import defs

from .conftest import key

# Each contract key and the upstream keys it must have (the lineage of ARCHITECTURE.md).
CONTRACT_UPSTREAMS = {
    "raw_readings": set(),
    "readings_quarantine": {"raw_readings"},
    "stg_readings": {"raw_readings", "readings_quarantine"},
    "features": {"stg_readings"},
    "online_features": {"features"},
    "training_set": {"features", "stg_readings", "raw_labels"},
    "model": {"training_set"},
    "model_evaluation": {"model"},
    "champion": {"model_evaluation"},
    "deployment": {"champion"},
    "predictions": {"deployment"},
    "drift_report": {"features", "training_set", "predictions"},
}


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_contract_key_exists_with_its_upstreams():
    graph = defs.resolve_asset_graph()
    for name, upstreams in CONTRACT_UPSTREAMS.items():
        node = graph.get(key(name))
        assert node.parent_keys == {key(u) for u in upstreams}, name
        assert node.group_name == "sensor_anomaly", name


def test_raw_assets_are_daily_partitioned_and_checked():
    graph = defs.resolve_asset_graph()
    for name in ("raw_readings", "readings_quarantine"):
        assert isinstance(graph.get(key(name)).partitions_def, dg.DailyPartitionsDefinition)
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == key("raw_readings")}
    assert {"schema", "not_null", "types", "value_range", "unique_key", "bad_share"} <= checks
    dbt_checks = {k.name for k in graph.asset_check_keys if k.asset_key == key("stg_readings")}
    assert any(name.startswith("unique_combination") for name in dbt_checks)


def test_warehouse_writers_share_one_pool():
    graph = defs.resolve_asset_graph()
    for name in ("raw_readings", "readings_quarantine", "stg_readings", "features", "training_set"):
        assert graph.get(key(name)).pools == {"warehouse"}, name


def test_sensors_are_running_by_default():
    sensors = {s.name: s for s in defs.sensors}
    for name in ("sensor_anomaly_landing_sensor", "sensor_anomaly_retrain_sensor"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING


# What loading the code location must not import: every Dagster process (CLI call, run worker,
# code server, sensor evaluation) pays for it. Asset bodies import them when they run.
HEAVY_AT_LOAD = ("sklearn", "pandas", "mlflow", "evidently", "ray", "skops", "httpx", "pyarrow.dataset")


def test_loading_the_definitions_imports_no_heavy_library():
    code = (
        "import sys, ml_platform.definitions\n"
        f"print(','.join(m for m in {HEAVY_AT_LOAD!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_raw_staged_and_champion_carry_freshness_policies_from_the_spec():
    from ml_platform.usecases import get_use_case

    spec = get_use_case("sensor_anomaly")
    graph = defs.resolve_asset_graph()
    for name, window in (
        ("raw_readings", spec.expectations.fresh_within),
        ("features", spec.expectations.fresh_within),
        ("champion", spec.monitoring.champion_max_age),
    ):
        policy = graph.get(key(name)).freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta() == window, name


@pytest.mark.integration  # runs dbt parse
def test_processes_loading_together_parse_the_dbt_project_once(monkeypatch):
    """A code server, the daemon and a CLI run load the definitions at once: one of them parses the
    stale project, the others wait and read the manifest it wrote, whole."""
    from ml_platform.usecases import get_use_case
    from ml_platform.validation import dbt_assets
    from ml_platform.validation.staging import model_name, staging_files

    spec = get_use_case("sensor_anomaly")
    dbt_assets.prepare_dbt_project([spec])  # the generated models exist and the manifest is current
    os.utime(next(iter(staging_files(spec))))  # a model newer than the manifest: it is stale
    parses = []
    real = dbt_assets.invoke_dbt

    def counted(args, target):
        parses.append(args)
        return real(args, target)

    monkeypatch.setattr(dbt_assets, "invoke_dbt", counted)
    with ThreadPoolExecutor(3) as pool:
        manifests = list(pool.map(lambda _: dbt_assets.prepare_dbt_project([spec]), range(3)))
    assert len(parses) == 1
    assert all(m == manifests[0] for m in manifests)
    assert f"model.ml_platform.{model_name(spec)}" in manifests[0]["nodes"]
