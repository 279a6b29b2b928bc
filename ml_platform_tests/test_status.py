"""`ml-platform status`: each part's backend, state and version, against real services (DuckDB,
Dagster's SQLite and PostgreSQL storage, MLflow, Redis, Mosquitto), and a non-zero exit naming the
part and its reason when a required one is down. Serving and a Ray cluster that answer are in
test_serving.py, where one runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ml_platform.cli import main
from ml_platform.home import prepare_home
from ml_platform.serving.cluster import free_port
from ml_platform.settings import load_settings
from ml_platform.status import DOWN, NOT_CREATED, NOT_RUNNING, UP, platform_status, warehouse

from .test_dagster_postgres import database_url  # noqa: F401 (a fixture: a database of its own)

pytestmark = pytest.mark.integration  # PostgreSQL, Redis and Mosquitto of the machine


# Settings an earlier test may have left in this process's environment; "" is their default.
BACKENDS = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ML_PLATFORM_ONLINE_STORE", "ML_PLATFORM_MQTT_URL")


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """A home of its own, serving on a port nothing listens on, default backends unless given."""
    env = {"ML_PLATFORM_HOME": str(home), "ML_PLATFORM_SERVE_PORT": str(free_port())}
    return env | dict.fromkeys(BACKENDS, "") | {"ML_PLATFORM_DAGSTER_STORAGE": ""} | extra


def status_of(env: dict[str, str]) -> tuple[int, dict[str, dict], str]:
    """``ml-platform status --json`` as a user runs it: exit code, parts by name, error output."""
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, {p["part"]: p for p in lines}, result.stderr


def test_a_fresh_home_has_nothing_down(tmp_path):
    env = env_for(tmp_path / "home")
    prepare_home(load_settings(env))
    code, parts, _ = status_of(env)
    assert code == 0
    assert parts["warehouse"]["state"] == NOT_CREATED and parts["warehouse"]["required"]
    assert parts["dagster storage"]["state"] == UP and parts["dagster storage"]["detail"].startswith("0 runs")
    assert parts["mlflow tracking"]["state"] == NOT_CREATED
    assert parts["online store"]["state"] == NOT_CREATED
    assert parts["ray cluster"]["state"] == NOT_RUNNING and not parts["ray cluster"]["required"]
    assert parts["serving"]["state"] == NOT_RUNNING
    assert parts["mqtt broker"]["state"] == UP and parts["mqtt broker"]["version"].startswith("mosquitto")


def test_required_parts_that_do_not_answer_fail_the_command_naming_each(tmp_path):
    closed = free_port()
    prepare_home(load_settings(env_for(tmp_path / "home")))
    env = env_for(
        tmp_path / "home",
        ML_PLATFORM_ONLINE_STORE=f"redis://:s3cret@127.0.0.1:{closed}/0",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed}",
        ML_PLATFORM_DAGSTER_STORAGE=f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{closed}/nowhere",
        RAY_ADDRESS=f"127.0.0.1:{closed}",
        ML_PLATFORM_MQTT_URL=f"mqtt://127.0.0.1:{closed}",
    )
    code, parts, errors = status_of(env)
    assert code == 1
    down = {name for name, p in parts.items() if p["state"] == DOWN}
    assert down == {"online store", "mlflow tracking", "dagster storage", "ray cluster"}
    for name in down:
        assert f"{name} (" in errors  # the message names each part, its backend and why
    assert "Connection refused" in parts["dagster storage"]["detail"]
    assert parts["mqtt broker"]["state"] == NOT_RUNNING  # a service one starts: not required
    assert "s3cret" not in errors and "s3cret" not in json.dumps(parts)


def test_backends_that_answer_report_their_versions(tmp_path, database_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ML_PLATFORM_DAGSTER_STORAGE", database_url)  # dagster.yaml names the variable
    env = env_for(
        tmp_path / "home",
        ML_PLATFORM_ONLINE_STORE="redis://127.0.0.1:6379/0",
        ML_PLATFORM_ONLINE_NAMESPACE=f"status-{tmp_path.name}",
        ML_PLATFORM_DAGSTER_STORAGE=database_url,
    )
    prepare_home(load_settings(env))
    code, parts, _ = status_of(env)
    assert code == 0
    storage = parts["dagster storage"]
    assert storage["state"] == UP and "PostgresRunStorage" in storage["detail"]
    assert "postgresql 1" in storage["version"]  # the server's own version
    store = parts["online store"]
    assert store["state"] == UP and store["version"].startswith("redis ")
    assert "sensor_anomaly 0 entities" in store["detail"]


def test_an_mlflow_registry_is_described_by_its_models_and_aliases(tmp_path):
    import mlflow

    env = env_for(tmp_path / "home")
    settings = load_settings(env)
    prepare_home(settings)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    client.create_registered_model("pumps")
    client.create_model_version("pumps", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("pumps", "champion", "1")
    (tracking,) = [p for p in platform_status(settings, []) if p.part == "mlflow tracking"]
    assert tracking.state == UP and tracking.detail == "1 registered models: pumps (champion v1)"


def test_the_warehouse_is_up_while_a_run_writes_it(tmp_path):
    settings = load_settings(env_for(tmp_path / "home"))
    settings.home.mkdir(parents=True)
    writer = textwrap.dedent(
        f"""
        import duckdb, sys, time
        conn = duckdb.connect({str(settings.warehouse_path)!r})
        conn.sql("CREATE TABLE readings AS SELECT 1 AS x")
        print("holding", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"holding"
        held = warehouse(settings)
        assert held.state == UP and held.detail == "in use by a writer (a Dagster run)"
    finally:
        process.communicate(b"", timeout=30)
    free = warehouse(settings)
    assert free.state == UP and free.detail == "1 tables" and not free.failed
