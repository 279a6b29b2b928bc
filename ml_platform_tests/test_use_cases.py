"""Use cases from the user's own repository: YAML files, Python files, modules and entry points,
each validated when loaded, with a message naming the file, the use case and the field."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ml_platform.definitions import build_definitions
from ml_platform.features.definitions import DiffFromMean, Rolling, Value
from ml_platform.settings import REPO_ROOT, SettingsError, load_settings
from ml_platform.spec_file import UseCaseError, read_spec_file
from ml_platform.usecases import discover, use_cases

PUMPS = """\
name: pumps
description: Pressure of pumps, recorded in 2014.
entity: pump_id
timestamp: ts
columns:
  - {name: pump_id, dtype: string}
  - {name: ts, dtype: timestamp}
  - {name: pressure, dtype: float, min_value: 0, max_value: 50000}
  - {name: flow, dtype: float, required: false}
  - {name: stage, dtype: integer, min_value: 0, max_value: 5}
  - {name: running, dtype: boolean}
  - {name: mode, dtype: string, allowed_values: [auto, manual]}
expectations: {key: [pump_id, ts], max_bad_share: 0.1, max_future: 2h}
features:
  features:
    - {kind: value, column: pressure}
    - {kind: rolling, column: pressure, agg: mean, rows: 12}
    - {kind: diff_from_mean, column: pressure, period: 1h}
    - {kind: value, column: flow}
    - {kind: value, column: stage}
    - {kind: rolling, column: running, agg: mean, rows: 12}
  ttl: 3650d
model:
  algorithm: isolation_forest
  params: {n_estimators: 50}
  training_days: 30
gate:
  min_metrics: {roc_auc: 0.6}
  slices: [{name: level, column: pressure_mean_12, bins: [0, 100, 100000]}]
drift: {columns: [pressure, flow]}
partitions_start: 2014-01-01
"""


@pytest.fixture
def user_repo(tmp_path, monkeypatch) -> Path:
    """A repository of the user's, outside the package, with their spec file."""
    repo = tmp_path / "user-repo"
    repo.mkdir()
    (repo / "pumps.yaml").write_text(PUMPS)
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "home"))
    return repo


def test_a_yaml_file_maps_one_to_one_onto_the_spec(user_repo):
    (spec,) = read_spec_file(user_repo / "pumps.yaml")
    assert spec.name == "pumps" and spec.entity == "pump_id" and spec.partitions_start == "2014-01-01"
    assert [c.name for c in spec.columns if not c.required] == ["flow"]
    assert spec.expectations.max_future == dt.timedelta(hours=2)
    assert spec.features.features == (
        Value("pressure"),
        Rolling("pressure", "mean", rows=12),
        DiffFromMean("pressure", period="1h"),
        Value("flow"),
        Value("stage"),
        Rolling("running", "mean", rows=12),
    )
    assert [c.dtype for c in spec.columns][-3:] == ["integer", "boolean", "string"]
    assert spec.columns[-1].allowed_values == ("auto", "manual")
    assert spec.features.ttl == dt.timedelta(days=3650)
    assert spec.model.params == {"n_estimators": 50} and spec.model.training_days == 30
    assert spec.gate.slices[0].bins == (0.0, 100.0, 100000.0)
    assert spec.drift.columns == ("pressure", "flow")
    defaults = dataclasses.fields(type(spec.monitoring))
    assert all(
        getattr(spec.monitoring, f.name) == f.default
        for f in defaults
        if f.default is not dataclasses.MISSING
    )


def test_user_use_cases_come_from_files_modules_and_entry_points(user_repo, monkeypatch):
    python_file = user_repo / "sensors_copy.py"
    python_file.write_text(
        textwrap.dedent(
            """
            import dataclasses
            from ml_platform.usecases.sensor_anomaly import SPEC as SHIPPED
            SPEC = dataclasses.replace(SHIPPED, name="sensors_copy")
            """
        )
    )
    package = user_repo / "user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "more.py").write_text(
        "import dataclasses\nfrom ml_platform.usecases.sensor_anomaly import SPEC\n"
        "SPECS = [dataclasses.replace(SPEC, name='by_module')]\n"
    )
    (package / "plugin.py").write_text(
        "import dataclasses\nfrom ml_platform.usecases.sensor_anomaly import SPEC\n"
        "PLUGGED = dataclasses.replace(SPEC, name='by_entry_point')\n"
    )
    # An installed distribution declaring the entry point, as `pip install` leaves it.
    dist = user_repo / "user_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ml_platform.use_cases]\nplugged = user_pkg.plugin:PLUGGED\n")
    monkeypatch.syspath_prepend(str(user_repo))
    declared = f"{user_repo / 'pumps.yaml'}, {python_file}, user_pkg.more"
    found = discover(declared)
    assert list(found) == [
        "sensor_anomaly",
        "card_fraud",
        "pumps",
        "sensors_copy",
        "by_module",
        "by_entry_point",
    ]
    assert found["pumps"].origin == str(user_repo / "pumps.yaml")
    assert found["by_module"].origin == "module user_pkg.more"
    assert found["by_entry_point"].origin.startswith("entry point plugged = user_pkg.plugin:PLUGGED")

    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(user_repo / "pumps.yaml"))
    settings = load_settings()
    defs = build_definitions(settings)
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    expected = {"pumps/raw_events", "pumps/events_quarantine", "pumps/stg_events", "pumps/features"}
    assert expected | {"pumps/model", "pumps/drift_report"} <= keys
    assert "sensor_anomaly/model" in keys
    assert f"{'pumps'}_retrain_sensor" in {s.name for s in defs.sensors}
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("ml-platform")), "use-cases"],
        env={**os.environ, "ML_PLATFORM_USE_CASES": str(user_repo / "pumps.yaml")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert listed[0].startswith("sensor_anomaly\tshipped example ml_platform.usecases.sensor_anomaly")
    assert listed[1].startswith("card_fraud\tshipped example ml_platform.usecases.card_fraud")
    assert listed[2] == f"pumps\t{user_repo / 'pumps.yaml'}\tPressure of pumps, recorded in 2014."
    assert use_cases(settings)["pumps"].partitions_start == "2014-01-01"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (("entity: pump_id", "entity: pump"), "entity", "'pump' is not among the columns"),
        (
            ("{kind: value, column: pressure}", "{kind: value, column: presure}"),
            "features.features[0].column",
            "unknown column 'presure'",
        ),
        (("{name: flow, dtype: float", "{name: flow, dtype: complex"), "columns[3].dtype", "unknown type"),
        (("drift: {columns", "drift: {colums"), "drift.colums", "unknown field"),
        (("{kind: rolling,", "{kind: rolling_sum,"), "features.features[1].kind", "unknown kind"),
        (("training_days: 30", "training_days: thirty"), "model.training_days", "expected a whole number"),
        (("  ttl: 3650d\n", "  ttl: ten years\n"), "features.ttl", "is not a duration"),
        (("column: pressure_mean_12", "column: pressure_max"), "gate.slices[0].column", "is not a feature"),
        (("entity: pump_id\n", ""), "entity", "missing"),
        (
            ("partitions_start: 2014-01-01", "partitions_start: 2014-01-01\nserving: {replicas: 0}"),
            "serving.replicas",
            "must be at least 1",
        ),
        (
            ("partitions_start: 2014-01-01", "partitions_start: 2014-01-01\nserving: {replica: 2}"),
            "serving.replica",
            "unknown field (known: replicas, autoscaling, num_cpus)",
        ),
        (
            ("partitions_start: 2014-01-01", "partitions_start: 2014-01-01\npartitions: weekly"),
            "partitions",
            "'weekly' is not one of ('daily', 'hourly', 'monthly')",
        ),
        (
            ("{name: running, dtype: boolean}", "{name: running, dtype: boolean, max_value: 1}"),
            "columns[5].min_value",
            "bounds apply to float and integer columns, not to boolean column 'running'",
        ),
        (
            ("{kind: value, column: flow}", "{kind: is_value, column: mode, value: turbo}"),
            "features.features[3].value",
            "'turbo' is not among 'mode''s allowed values ['auto', 'manual']",
        ),
        (
            ("{kind: value, column: flow}", "{kind: is_value, column: flow, value: high}"),
            "features.features[3].column",
            "column 'flow' is float; is_value reads text",
        ),
        (
            ("{kind: value, column: flow}", "{kind: value, column: mode}"),
            "features.features[3].column",
            "column 'mode' is string; this feature reads numbers (a text column takes is_value)",
        ),
        (
            ("algorithm: isolation_forest", "algorithm: isolation_forest\n  classes: [ok, broken]"),
            "model.classes",
            "only a multiclass_classification names classes, not anomaly_detection",
        ),
        (
            (
                "algorithm: isolation_forest",
                "task: multiclass_classification\n  algorithm: random_forest\n  classes: [ok]",
            ),
            "model.classes",
            "['ok'] must name at least two classes, each once",
        ),
        (
            (
                "algorithm: isolation_forest",
                "task: multiclass_classification\n  algorithm: random_forest\n  classes: [ok, Not OK]",
            ),
            "model.classes[1]",
            "'Not OK' must be lower case letters, digits and _ (it names an output)",
        ),
    ],
)
def test_an_invalid_spec_fails_naming_file_use_case_and_field(user_repo, change, field, problem):
    path = user_repo / "pumps.yaml"
    assert change[0] in PUMPS
    path.write_text(PUMPS.replace(*change))
    with pytest.raises(UseCaseError) as raised:
        discover(str(path))
    message = str(raised.value)
    assert (
        message.startswith(f"{path}: use case 'pumps': ") and f"{field}: " in message and problem in message
    )


def test_a_use_case_serving_apart_gets_a_deployment_of_its_own_size(user_repo, monkeypatch):
    from ml_platform.serving.deploy import serving_app

    path = user_repo / "pumps.yaml"
    path.write_text(PUMPS + "serving:\n  autoscaling: {min_replicas: 1, max_replicas: 3}\n  num_cpus: 0.25\n")
    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(path))
    monkeypatch.setenv("ML_PLATFORM_SERVE_REPLICAS", "2")
    ingress = serving_app({}, {"X": "1"}, load_settings())._bound_deployment
    assert (ingress.name, ingress.num_replicas) == ("ModelServer", 2)
    assert list(ingress.init_kwargs["own"]) == ["pumps"]  # the shipped examples stay in the shared one
    own = ingress.init_kwargs["own"]["pumps"]._bound_deployment
    assert own.name == "ModelServer_pumps" and own.init_kwargs == {"models_of": ("pumps",)}
    assert own._deployment_config.autoscaling_config.max_replicas == 3
    assert own.ray_actor_options["num_cpus"] == 0.25
    assert own.ray_actor_options["runtime_env"] == {"env_vars": {"X": "1"}}
    # A field Ray would ignore is refused before deploying, naming the use case.
    misspelt = user_repo / "misspelt.yaml"
    misspelt.write_text(PUMPS + "serving:\n  autoscaling: {max_replica: 3}\n")
    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(misspelt))
    with pytest.raises(SettingsError, match="use case pumps: serving.autoscaling: max_replica not among"):
        serving_app({}, {}, load_settings())


def test_a_name_declared_twice_names_both_places(user_repo):
    path = user_repo / "again.yaml"
    path.write_text(PUMPS.replace("name: pumps", "name: sensor_anomaly"))
    with pytest.raises(UseCaseError, match="already declared by shipped example ml_platform.usecases"):
        discover(str(path))
    with pytest.raises(UseCaseError, match="no such spec file"):
        discover(str(user_repo / "missing.yaml"))


def test_the_code_location_reports_a_bad_spec_instead_of_loading(user_repo):
    path = user_repo / "pumps.yaml"
    path.write_text(PUMPS.replace("entity: pump_id", "entity: pump"))
    checked = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, "ML_PLATFORM_USE_CASES": str(path), "DAGSTER_HOME": str(user_repo)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode != 0
    assert (
        f"{path}: use case 'pumps': entity: 'pump' is not among the columns"
        in checked.stdout + checked.stderr
    )


def test_definitions_take_their_use_cases_as_input():
    from ml_platform.usecases import get_use_case

    only = dataclasses.replace(get_use_case("sensor_anomaly"), name="only_this_one")
    defs = build_definitions(load_settings(), [only])
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"only_this_one/stg_readings", "only_this_one/model", "only_this_one/deployment"} <= keys
    assert not {k for k in keys if k.startswith("sensor_anomaly/")}  # not even its dbt model
    assert {s.name for s in defs.sensors} >= {"only_this_one_landing_sensor", "only_this_one_retrain_sensor"}


@pytest.mark.integration  # Dagster runs through dbt
def test_a_user_spec_with_old_timestamps_ingests_stages_and_computes_features(user_repo, monkeypatch):
    """The YAML use case, data from 2014 on another schema and without its optional column: raw,
    quarantine, the generated dbt staging model with its tests, features, the training set and a
    drift report that says the optional column has no data, through real Dagster runs."""
    import dagster as dg
    import pandas as pd

    from ml_platform.metadata import latest_metadata

    from .conftest import Platform, day_range_tags

    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(user_repo / "pumps.yaml"))
    settings = load_settings()
    spec = use_cases(settings)["pumps"]
    landing = settings.landing_dir_for("pumps")
    landing.mkdir(parents=True)
    times = pd.date_range("2014-03-01", periods=2 * 288, freq="5min")
    for pump, level in (("p-1", 100.0), ("p-2", 30000.0)):
        frame = pd.DataFrame(
            {
                "pump_id": pump,
                "ts": times.strftime("%Y-%m-%dT%H:%M:%S"),
                "pressure": level,
                "stage": [str(i % 6) for i in range(len(times))],
                "running": ["true" if i % 2 == 0 else "false" for i in range(len(times))],
                "mode": "auto",
            }
        )
        frame.loc[10, "pressure"] = 60000.0  # above the declared maximum: quarantined
        if pump == "p-1":
            frame.loc[20, "stage"] = "1.5"  # not an integer: a type reject, never rounded
            frame.loc[30, "running"] = "maybe"
        else:
            frame.loc[40, "stage"] = "9"  # above the integer column's maximum
            frame.loc[50, "mode"] = "turbo"  # not an allowed value
        frame.to_csv(landing / f"{pump}.csv", index=False)
    platform = Platform(settings, build_definitions(settings, [spec]), dg.DagsterInstance.ephemeral())
    names = [spec.raw_name, spec.quarantine_name, spec.staged_name, "features"]
    result = dg.materialize(
        platform.defs.assets,
        selection=[dg.AssetKey(["pumps", n]) for n in names],
        instance=platform.instance,
        resources=platform.defs.resources,
        tags=day_range_tags(dt.date(2014, 3, 1), dt.date(2014, 3, 2)),
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["value_range"] is False and checks["types"] is False and checks["bad_share"] is True
    assert checks["allowed_values"] is False
    dbt_checks = [
        name for name in checks if name.startswith(("unique_combination", "not_null", "within_range"))
    ]
    assert len(dbt_checks) >= 4 and all(checks[name] for name in dbt_checks)
    with platform.defs.resources["warehouse"].get_connection() as conn:
        staged = conn.sql("SELECT count(*), min(ts) FROM pumps.stg_events").fetchall()[0]
        quarantined = conn.sql("SELECT count(*) FROM pumps.events_quarantine").fetchall()[0][0]
        features = conn.sql("SELECT count(*) FROM pumps.features").fetchall()[0][0]
        reasons = conn.sql("SELECT reject_reason FROM pumps.events_quarantine ORDER BY ALL").fetchall()
        raw_types = dict(
            conn.sql("SELECT column_name, column_type FROM (DESCRIBE pumps.raw_events)").fetchall()
        )
        typed = conn.sql(
            """SELECT typeof(stage), typeof(running_mean_12), avg(running_mean_12)
               FROM pumps.features GROUP BY ALL"""
        ).fetchall()
    assert staged[0] == 2 * 576 - 6 and quarantined == 6 and features == staged[0]
    assert [r for (r,) in reasons] == [
        "allowed:mode",
        "range:pressure",
        "range:pressure",
        "range:stage",
        "type:running",
        "type:stage",
    ]
    assert raw_types["stage"] == "BIGINT" and raw_types["running"] == "BOOLEAN"
    ((stage_type, running_type, running_share),) = typed
    assert stage_type == running_type == "DOUBLE" and 0.45 < running_share < 0.55
    assert staged[1].year == 2014

    # Neither a champion nor a training set: nothing to compare, so no report, and no failure (the
    # monitor cron runs it in homes where this use case has no model yet).
    early = dg.materialize(
        platform.defs.assets,
        selection=[dg.AssetKey(["pumps", "drift_report"])],
        instance=platform.instance,
        resources=platform.defs.resources,
    )
    assert early.success and early.get_asset_materialization_events() == []
    said = [entry.user_message for entry in platform.instance.all_logs(early.run_id)]
    assert any("neither a champion nor a training set" in message for message in said)

    later = dg.materialize(
        platform.defs.assets,
        selection=[dg.AssetKey(["pumps", n]) for n in ("training_set", "drift_report")],
        instance=platform.instance,
        resources=platform.defs.resources,
    )
    assert later.success
    report = latest_metadata(platform.instance, dg.AssetKey(["pumps", "drift_report"]))
    assert report["no_data_columns"] == ["flow"] and report["tests"]["flow"] == "no data"
    assert "drift_score/pressure" in report and "drift_score/flow" not in report


@pytest.mark.integration
def test_a_monthly_spec_ingests_a_month_per_partition_and_a_late_file_its_month_only(user_repo, monkeypatch):
    """`partitions: monthly`: the landing sensor asks for the months a file has rows in; a month's
    run loads, stages and computes features of its days only; a late file re-ingests its month."""
    import dagster as dg
    import pandas as pd

    from .conftest import Platform, requested_partitions

    path = user_repo / "pumps.yaml"
    path.write_text(
        PUMPS.replace("partitions_start: 2014-01-01", "partitions_start: 2014-02-15\npartitions: monthly")
    )
    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(path))
    settings = load_settings()
    spec = use_cases(settings)["pumps"]
    landing = settings.landing_dir_for("pumps")
    landing.mkdir(parents=True)

    def pump_file(pump: str, start: str, periods: int) -> pd.DataFrame:
        times = pd.date_range(start, periods=periods, freq="h")
        return pd.DataFrame(
            {"pump_id": pump, "ts": times.strftime("%Y-%m-%dT%H:%M:%S"), "pressure": 100.0, "stage": 1}
            | {"running": "true", "mode": "auto"}
        )

    for pump in ("p-1", "p-2"):  # 2014-02-27 00:00 .. 2014-03-02 23:00: two days in each month
        pump_file(pump, "2014-02-27", 4 * 24).to_csv(landing / f"{pump}.csv", index=False)
    platform = Platform(settings, build_definitions(settings, [spec]), dg.DagsterInstance.ephemeral())
    raw = next(a for a in platform.defs.assets if dg.AssetKey(["pumps", spec.raw_name]) in a.keys)
    # Partitions start on the first of partitions_start's month: Feb 15-28 are in a partition.
    assert raw.partitions_def.get_partition_keys()[:2] == ["2014-02-01", "2014-03-01"]

    sensor = next(s for s in platform.defs.sensors if s.name == "pumps_landing_sensor")

    requests, cursor = platform.run_requests(sensor)
    assert [requested_partitions(r) for r in requests] == [("2014-02-01", "2014-03-01")]  # one run
    names = [spec.raw_name, spec.quarantine_name, spec.staged_name, "features"]

    def ingest(month: str) -> None:
        result = dg.materialize(
            platform.defs.assets,
            selection=[dg.AssetKey(["pumps", n]) for n in names],
            instance=platform.instance,
            resources=platform.defs.resources,
            partition_key=month,
        )
        assert result.success

    def staged_by_day() -> dict[str, int]:
        with platform.defs.resources["warehouse"].get_connection() as conn:
            return {
                str(day): n
                for day, n in conn.sql(
                    "SELECT CAST(ts AS DATE), count(*) FROM pumps.stg_events GROUP BY 1"
                ).fetchall()
            }

    ingest("2014-02-01")
    assert staged_by_day() == {"2014-02-27": 48, "2014-02-28": 48}  # February's days only
    ingest("2014-03-01")
    assert staged_by_day() == {"2014-02-27": 48, "2014-02-28": 48, "2014-03-01": 48, "2014-03-02": 48}
    with platform.defs.resources["warehouse"].get_connection() as conn:
        features = conn.sql("SELECT count(*) FROM pumps.features").fetchall()[0][0]
    assert features == 4 * 48
    # Every file's months hold it at its current content.
    assert platform.run_requests(sensor, cursor)[0] == []

    pump_file("p-3", "2014-02-28", 24).to_csv(landing / "p-3.csv", index=False)  # late, in February
    requests, _ = platform.run_requests(sensor, cursor)
    assert [r.partition_key for r in requests] == ["2014-02-01"]
    ingest("2014-02-01")
    assert staged_by_day() == {"2014-02-27": 48, "2014-02-28": 72, "2014-03-01": 48, "2014-03-02": 48}


@pytest.mark.integration
def test_an_hourly_spec_replaces_an_hour_per_partition_and_a_late_file_its_hour_only(user_repo, monkeypatch):
    """`partitions: hourly`: rows are stored by hour; the landing sensor asks for the hours a file
    has rows in; an hour's run loads, validates, stages and computes features of that hour only,
    and a late file for one hour re-ingests that hour and leaves its neighbours as they were."""
    import dagster as dg
    import pandas as pd

    from .conftest import Platform, requested_partitions

    path = user_repo / "pumps.yaml"
    path.write_text(
        PUMPS.replace("partitions_start: 2014-01-01", "partitions_start: 2014-02-27\npartitions: hourly")
    )
    monkeypatch.setenv("ML_PLATFORM_USE_CASES", str(path))
    settings = load_settings()
    spec = use_cases(settings)["pumps"]
    landing = settings.landing_dir_for("pumps")
    landing.mkdir(parents=True)

    def pump_file(pump: str, start: str, periods: int, pressure: float = 100.0) -> pd.DataFrame:
        times = pd.date_range(start, periods=periods, freq="5min")
        return pd.DataFrame(
            {"pump_id": pump, "ts": times.strftime("%Y-%m-%dT%H:%M:%S"), "pressure": pressure, "stage": 1}
            | {"running": "true", "mode": "auto"}
        )

    for pump in ("p-1", "p-2"):  # 2014-02-27 00:00 .. 02:55: twelve readings in each of three hours
        pump_file(pump, "2014-02-27", 3 * 12).to_csv(landing / f"{pump}.csv", index=False)
    # One hour of a third pump whose every reading is out of range: isolated in its hour only.
    pump_file("p-9", "2014-02-27 02:00", 12, pressure=-1.0).to_csv(landing / "p-9.csv", index=False)
    platform = Platform(settings, build_definitions(settings, [spec]), dg.DagsterInstance.ephemeral())
    raw = next(a for a in platform.defs.assets if dg.AssetKey(["pumps", spec.raw_name]) in a.keys)
    assert raw.partitions_def.get_partition_keys()[:2] == ["2014-02-27-00:00", "2014-02-27-01:00"]

    sensor = next(s for s in platform.defs.sensors if s.name == "pumps_landing_sensor")

    requests, cursor = platform.run_requests(sensor)
    assert [requested_partitions(r) for r in requests] == [("2014-02-27-00:00", "2014-02-27-02:00")]
    names = [spec.raw_name, spec.quarantine_name, spec.staged_name, "features"]

    def ingest(hour: str) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            platform.defs.assets,
            selection=[dg.AssetKey(["pumps", n]) for n in names],
            instance=platform.instance,
            resources=platform.defs.resources,
            partition_key=hour,
        )
        assert result.success
        return result

    def count_by_hour(table: str, column: str = "ts") -> dict[str, int]:
        with platform.defs.resources["warehouse"].get_connection() as conn:
            return {
                f"{hour:%H}": n
                for hour, n in conn.sql(
                    f"SELECT date_trunc('hour', {column}), count(*) FROM pumps.{table} GROUP BY 1"
                ).fetchall()
            }

    ingest("2014-02-27-01:00")
    assert count_by_hour("raw_rows", "partition_hour") == {"01": 24}  # the hour's rows only
    assert count_by_hour("stg_events") == {"01": 24}
    assert count_by_hour("features", "event_timestamp") == {"01": 24}
    ingest("2014-02-27-00:00")
    bad_hour = ingest("2014-02-27-02:00")
    bad_share = next(e for e in bad_hour.get_asset_check_evaluations() if e.check_name == "bad_share")
    assert bad_share.passed and "p-9.csv" in str(bad_share.metadata["isolated"].value)
    assert count_by_hour("stg_events") == {"00": 24, "01": 24, "02": 24}
    assert count_by_hour("events_quarantine") == {"02": 12}
    assert count_by_hour("features", "event_timestamp") == {"00": 24, "01": 24, "02": 24}
    assert platform.run_requests(sensor, cursor)[0] == []  # every file's hours hold it at its current content

    pump_file("p-3", "2014-02-27 01:30", 6).to_csv(landing / "p-3.csv", index=False)  # late, in hour 1
    requests, _ = platform.run_requests(sensor, cursor)
    assert [r.partition_key for r in requests] == ["2014-02-27-01:00"]
    ingest("2014-02-27-01:00")
    assert count_by_hour("stg_events") == {"00": 24, "01": 30, "02": 24}
    assert count_by_hour("events_quarantine") == {"02": 12}  # hour 2's quarantine was left as it was


def test_a_request_may_leave_out_features_of_optional_columns_only():
    from ml_platform.serving.protocols import RequestError, Signature, predict_rows
    from ml_platform.usecases import get_use_case

    signature = Signature.of(get_use_case("sensor_anomaly"))
    assert signature.optional == {"temperature", "vibration", "vibration_max_1h"}
    given = {n: 1.0 for n in signature.names if n not in signature.optional}
    (row,), flat = predict_rows(signature, given)
    assert flat and row.features["vibration"] is None and row.features["value"] == 1.0
    with pytest.raises(RequestError, match="missing field\\(s\\) hour_of_day"):
        predict_rows(signature, {k: v for k, v in given.items() if k != "hour_of_day"})


# Words the platform also uses in their ordinary sense (a v2 tensor's value, an event's timestamp).
GENERIC_WORDS = {"timestamp", "value"}


def test_no_platform_module_spells_a_shipped_use_cases_columns_table_or_features():
    """Every column, table and feature name reaches the platform from a spec; only the use
    case's own folder spells them. Underscores separate words here, so raw_readings is caught."""
    from ml_platform.usecases.sensor_anomaly import SPEC

    # Features of no column (hour_of_day) are named by the platform's own feature classes.
    derived = [f.name for f in SPEC.features.features if getattr(f, "column", None)]
    names = {SPEC.entity, SPEC.table, *SPEC.column_names, *derived} - GENERIC_WORDS
    pattern = re.compile(rf"(?<![A-Za-z0-9])({'|'.join(map(re.escape, sorted(names)))})(?![A-Za-z0-9])")
    own_folder = REPO_ROOT / "ml_platform" / "usecases" / SPEC.name
    platform_files = [
        *(p for p in (REPO_ROOT / "ml_platform").rglob("*.py") if own_folder not in p.parents),
        *(
            p
            for folder in ("macros", "tests", "models")
            for p in (REPO_ROOT / "dbt_project" / folder).rglob("*.sql")
            if "generated" not in p.parts  # staging generated from the specs
        ),
    ]
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {match.group(1)}"
        for path in platform_files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in pattern.finditer(line)
    ]
    assert len(platform_files) > 40
    assert found == []


def test_no_platform_module_names_an_output_of_one_task():
    """A task's outputs (``anomaly_score``, ``probability``, ``prediction`` ...) are keys in the
    tasks package only (two classifiers share ``probability``); serving, the log, training and
    monitoring ask the task for them. ("prediction" is also a word of prose, so keys are looked
    for: the name quoted, or an ``anomaly_`` identifier.)"""
    from ml_platform.tasks import TASKS

    usecases = REPO_ROOT / "ml_platform" / "usecases"
    tasks = REPO_ROOT / "ml_platform" / "tasks"
    found = []
    for task in TASKS.values():
        names = [o.name for o in task.for_spec(_spec_with_classes(task)).outputs]
        alternatives = [rf"[\"']({'|'.join(map(re.escape, names))})[\"']"]
        alternatives += [rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])" for n in names if "_" in n]
        pattern = re.compile("|".join(alternatives))
        for path in (REPO_ROOT / "ml_platform").rglob("*.py"):
            if tasks in path.parents or usecases in path.parents:  # a use case may speak of its task's
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                where = f"{path.relative_to(REPO_ROOT)}:{number}"
                found += [f"{where}: {m.group(0)}" for m in pattern.finditer(line)]
    assert found == []


def _spec_with_classes(task):
    """A spec of ``task`` whose multiclass outputs would be named after ordinary words."""
    from ml_platform.spec import ModelSpec

    class Spec:
        model = ModelSpec(algorithm="", task=task.name, classes=("spam", "ham"))

    return Spec


def test_events_of_integer_boolean_and_categorical_columns_are_checked_like_landed_rows(user_repo):
    from ml_platform.serving.events import EventError, example_event, validate_event

    (spec,) = read_spec_file(user_repo / "pumps.yaml")
    event = example_event(spec)
    assert event["stage"] == 2 and event["running"] is True
    assert validate_event(spec, event, 0)[1] == event
    for change, problem in (
        ({"stage": 1.5}, "'stage' must be an integer"),
        ({"stage": True}, "'stage' must be an integer"),
        ({"stage": 9}, "'stage' is above 5"),
        ({"running": "yes"}, "'running' must be true or false"),
        ({"running": 1}, "'running' must be true or false"),
        ({"mode": "turbo"}, "'mode' is 'turbo', not one of auto, manual"),  # as in files: allowed:mode
    ):
        with pytest.raises(EventError, match=problem):
            validate_event(spec, {**event, **change}, 0)
