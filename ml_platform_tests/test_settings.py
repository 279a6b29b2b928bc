"""One carrier for settings: every setting, set to something other than its default, arrives
intact in a Dagster run, in what the deployment hands its replicas and in the processes the
platform starts; the token never enters Dagster's run config."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.home import child_env
from ml_platform.resources.platform import PlatformResource, build_resources
from ml_platform.serving.deploy import replica_env, serving_app
from ml_platform.settings import ENV_VARS, SECRET_VARS, Settings, SettingsError, load_settings, settings_env


@pytest.fixture
def unusual(tmp_path, monkeypatch) -> Settings:
    """Every setting away from its default, set through the environment as a user would."""
    values = {
        "ML_PLATFORM_HOME": str(tmp_path / "elsewhere"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'tracking.db'}",
        "RAY_ADDRESS": "127.0.0.1:6391",
        "ML_PLATFORM_SERVE_HOST": "127.0.0.2",
        "ML_PLATFORM_SERVE_PORT": "18123",
        "ML_PLATFORM_API_TOKEN": "t0ken-for-settings-test",
        "ML_PLATFORM_MLFLOW_UI": "http://127.0.0.1:5999",
        "ML_PLATFORM_ONLINE_STORE": "redis://127.0.0.1:6379/3",
        "ML_PLATFORM_ONLINE_NAMESPACE": "settings-test",
        "ML_PLATFORM_MQTT_URL": "mqtt://127.0.0.1:1999",
        "ML_PLATFORM_SERVE_FAST": "0",
        "ML_PLATFORM_SERVE_REPLICAS": "3",
        "ML_PLATFORM_SERVE_AUTOSCALING": '{"min_replicas": 1, "max_replicas": 3}',
        "ML_PLATFORM_SERVE_PROXY": "HeadOnly",
        "ML_PLATFORM_GRPC_PORT": "18124",
        "ML_PLATFORM_SENSOR_INTERVAL_S": "7",
        "ML_PLATFORM_MONITOR_CRON": "*/3 * * * *",
        "ML_PLATFORM_USE_CASES": "ml_platform.usecases.sensor_anomaly_copy_for_settings_test",
        "ML_PLATFORM_PREDICTION_LOG_DIR": str(tmp_path / "prediction-log"),
        "ML_PLATFORM_DAGSTER_STORAGE": "postgresql+psycopg2://settings:s3cret@127.0.0.1:5432/settings_test",
        "ML_PLATFORM_MODEL_CACHE": str(tmp_path / "model-cache"),
        "ML_PLATFORM_RAY_MIN_ROWS": "1234",
        "ML_PLATFORM_PREDICTION_LOG_URL": "postgresql://settings:s3cret@127.0.0.1:5432/settings_log",
    }
    assert set(values) == set(ENV_VARS.values())  # a new setting must be added here too
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    defaults = load_settings({})
    unchanged = [
        f.name for f in dataclasses.fields(Settings) if getattr(settings, f.name) == getattr(defaults, f.name)
    ]
    assert unchanged == [], f"still at their defaults: {unchanged}"
    return settings


def test_every_setting_has_one_variable_and_survives_the_round_trip(unusual):
    assert set(ENV_VARS) == {f.name for f in dataclasses.fields(Settings)}
    assert load_settings(settings_env(unusual)) == unusual


def test_every_setting_reaches_a_dagster_run(unusual):
    seen: list[Settings] = []

    @dg.asset
    def reads_settings(platform: PlatformResource) -> None:
        seen.append(platform.settings)

    result = dg.materialize([reads_settings], resources=build_resources(unusual))
    assert result.success
    assert seen == [unusual]


def test_the_secrets_are_read_from_the_environment_never_stored_in_run_config(unusual):
    resource = PlatformResource.from_settings(unusual)
    assert not SECRET_VARS & set(resource.environment)
    for secret in (unusual.api_token, unusual.dagster_storage_url, "s3cret"):
        assert secret not in json.dumps(resource.environment)
    for field in (resource.api_token, resource.dagster_storage_url, resource.prediction_log_url):
        assert isinstance(field, dg.EnvVar) and field.env_var_name in SECRET_VARS


def test_every_setting_reaches_replicas_and_the_processes_the_platform_starts(unusual, monkeypatch):
    assert load_settings(replica_env(unusual)) == unusual
    assert replica_env(unusual)["OMP_NUM_THREADS"] == "1"
    # A child started with a clean environment of its own loads the same settings.
    for name in ENV_VARS.values():
        monkeypatch.delenv(name)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from ml_platform.settings import load_settings, settings_env;"
            "print(json.dumps(settings_env(load_settings())))",
        ],
        env=child_env(unusual),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(child.stdout.strip().splitlines()[-1]) == settings_env(unusual)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("ML_PLATFORM_SERVE_PORT", "80a", "ML_PLATFORM_SERVE_PORT must be a whole number, got '80a'"),
        (
            "ML_PLATFORM_DAGSTER_STORAGE",
            "postgresql://u@h/db",
            "must be a URL of the form postgresql+psycopg2://",
        ),
        (
            "ML_PLATFORM_PREDICTION_LOG_URL",
            "/var/log/predictions",
            "ML_PLATFORM_PREDICTION_LOG_URL must be a URL of the form postgresql://",
        ),
        ("ML_PLATFORM_SERVE_PROXY", "Everywhere", "ML_PLATFORM_SERVE_PROXY must be EveryNode or HeadOnly"),
        ("ML_PLATFORM_SERVE_AUTOSCALING", "{max_replicas: 4}", "SERVE_AUTOSCALING is not valid JSON"),
        (
            "ML_PLATFORM_SERVE_AUTOSCALING",
            '{"min_replicas": 3, "max_replicas": 2}',
            "min_replicas 3 and max_replicas 2 must be whole numbers with 0 <= min_replicas <= max_replicas",
        ),
    ],
)
def test_a_setting_that_cannot_be_used_is_named_without_a_traceback(tmp_path, name, value, said):
    with pytest.raises(SettingsError, match=re.escape(said)):
        load_settings({name: value})
    env = {**child_env(load_settings({"ML_PLATFORM_HOME": str(tmp_path)})), name: value}
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("ml-platform")), "use-cases"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and said in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.parametrize(
    ("config", "said"),
    [
        # Ray Serve itself accepts a field it does not know and ignores it.
        ({"max_replicas": 2, "target_ongoing_request": 2}, "target_ongoing_request not among"),
        ({"max_replicas": 2, "target_ongoing_requests": -1}, "target_ongoing_requests Input should be"),
    ],
)
def test_an_autoscaling_config_ray_would_refuse_or_ignore_is_named_before_deploying(tmp_path, config, said):
    settings = load_settings(
        {"ML_PLATFORM_HOME": str(tmp_path), "ML_PLATFORM_SERVE_AUTOSCALING": json.dumps(config)}
    )
    with pytest.raises(SettingsError, match=f"ML_PLATFORM_SERVE_AUTOSCALING: .*{said}"):
        serving_app({}, {}, settings)


def test_autoscaling_replaces_the_fixed_replica_count(tmp_path):
    config = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4}
    scaled = load_settings(
        {"ML_PLATFORM_HOME": str(tmp_path), "ML_PLATFORM_SERVE_AUTOSCALING": json.dumps(config)}
    )
    fixed = load_settings({"ML_PLATFORM_HOME": str(tmp_path), "ML_PLATFORM_SERVE_REPLICAS": "2"})
    autoscaled = serving_app({}, {}, scaled)._bound_deployment._deployment_config
    assert autoscaled.autoscaling_config.max_replicas == 3
    assert autoscaled.autoscaling_config.target_ongoing_requests == 4
    assert serving_app({}, {}, fixed)._bound_deployment.num_replicas == 2


def test_talking_to_one_homes_tracking_store_leaves_the_next_homes_settings_alone(tmp_path, monkeypatch):
    """MLflow exports the tracking URI it is given to the environment, where the settings are read:
    a process that switches homes (the test session, a long-lived command) must not keep the first."""
    import mlflow

    from ml_platform.training.registry import configure

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings({"ML_PLATFORM_HOME": str(tmp_path / "first")})
    configure(first)
    assert mlflow.get_tracking_uri() == first.mlflow_tracking_uri
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path / "second"))
    assert load_settings().mlflow_tracking_uri == f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}"
    # A URI the user exported stays the one the settings read.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    configure(first)
    assert load_settings().mlflow_tracking_uri == "http://127.0.0.1:5999"
