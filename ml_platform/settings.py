"""The one place that reads the environment.

Every path the platform uses is derived from ``ML_PLATFORM_HOME`` so that a test, a demo and a
production deployment differ only by that variable (and the few service URLs below).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


@dataclass(frozen=True)
class Settings:
    home: Path
    mlflow_tracking_uri: str
    ray_address: str | None
    serve_host: str
    serve_port: int
    api_token: str | None
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    # None: the embedded store under the home; else a redis:// URL.
    online_store_url: str | None = None
    online_store_namespace: str = "mlp"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # Ray Serve's HAProxy ingress and direct replica data path (throughput-optimized): several times
    # the throughput of Ray's Python proxy. On wherever HAProxy is installed (make installs it).
    serve_fast: bool = False
    serve_replicas: int = 1
    # Ray Serve's own `autoscaling_config` for the serving replicas, as canonical JSON (min_replicas,
    # max_replicas, target_ongoing_requests, ...); "" keeps `serve_replicas` fixed.
    serve_autoscaling: str = ""
    # Where Ray Serve runs its HTTP proxies: on every node holding a replica (Ray's default, for a
    # load balancer in front of the nodes) or on the head only.
    serve_proxy_location: str = "EveryNode"
    # Open Inference Protocol v2 over gRPC (Triton's default port); 0 serves HTTP only.
    grpc_port: int = 8001
    # How often sensors and declarative automation evaluate (shorter in tests and scenarios).
    sensor_interval_s: int = 30
    # When the prediction log is ingested and the monitors reading it run (a cron schedule, UTC).
    monitor_cron: str = "*/10 * * * *"
    # The user's own use cases: comma-separated module paths, .py or .yaml files (see usecases/).
    use_cases: str = ""
    # None: `serving_log/` under the home; else a folder of its own (a volume sized for the log).
    prediction_log_dir: Path | None = None
    # None: the prediction log is files (above); else a postgresql:// URL of a database holding it,
    # which replicas on machines without the home's filesystem reach too.
    prediction_log_url: str | None = None
    # None: Dagster keeps runs, events and schedules in SQLite under the home; else a
    # postgresql+psycopg2:// URL of a database for them (and for the concurrency pools' slots).
    dagster_storage_url: str | None = None
    # None: `run/model_cache/` under the home; else a folder of each machine's own (a serving
    # replica on a node without the home downloads verified artifacts there).
    model_cache_dir: Path | None = None
    # With a Ray cluster: feature builds and batch scoring of at least this many rows are spread
    # over its nodes as Ray tasks (below it, joining the cluster costs more than it saves).
    ray_min_rows: int = 1_000_000

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def online_store_dir(self) -> Path:
        return self.home / "online_store"

    @property
    def serving_log_dir(self) -> Path:
        return self.prediction_log_dir or self.home / "serving_log"

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.run_dir / "model_cache"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def run_dir(self) -> Path:
        """Runtime state of long-running processes (pids, the serving cluster's address)."""
        return self.home / "run"

    @property
    def serve_autoscaling_config(self) -> dict[str, Any] | None:
        return json.loads(self.serve_autoscaling) if self.serve_autoscaling else None

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def grpc_address(self) -> str:
        """Where the v2 gRPC service listens (``host:port``, an IPv6 host in brackets)."""
        host = f"[{self.serve_host}]" if ":" in self.serve_host else self.serve_host
        return f"{host}:{self.grpc_port}"

    def landing_dir_for(self, use_case: str) -> Path:
        return self.landing_dir / use_case

    def labels_dir_for(self, use_case: str) -> Path:
        return self.landing_dir / use_case / "labels"


def without_password(url: str) -> str:
    """``url`` with its password, if any, as ``***``: what messages and status show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _serve_fast(value: str) -> bool:
    """``1``/``0`` as set; unset: the fast path wherever HAProxy is installed."""
    if value.strip() in ("", "auto"):
        return shutil.which("haproxy") is not None
    return value.strip() == "1"


def _absolute_entries(value: str) -> str:
    """Spec files as absolute paths (processes started elsewhere find them); module paths as given."""
    entries = [e.strip() for e in value.split(",") if e.strip()]
    return ",".join(
        str(Path(e).expanduser().resolve()) if e.endswith((".py", ".yaml", ".yml")) else e for e in entries
    )


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its variable and what it takes."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name) or str(default)
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None


PROXY_LOCATIONS = ("EveryNode", "HeadOnly")


def _proxy_location(value: str) -> str:
    if not value.strip():
        return "EveryNode"
    if value.strip() not in PROXY_LOCATIONS:
        raise SettingsError(f"ML_PLATFORM_SERVE_PROXY must be EveryNode or HeadOnly, got {value!r}")
    return value.strip()


def _autoscaling(value: str) -> str:
    """Ray Serve's ``autoscaling_config`` as JSON. Ray validates its fields when serving deploys
    (it needs Ray imported); the shape and the replica bounds are checked here."""
    if not value.strip():
        return ""
    name = "ML_PLATFORM_SERVE_AUTOSCALING"
    example = '{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}'
    try:
        config = json.loads(value)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON ({exc.msg}); set it like {example}") from None
    if not isinstance(config, dict):
        raise SettingsError(f"{name} must be a JSON object, like {example}")
    low, high = config.get("min_replicas", 1), config.get("max_replicas", 1)
    if not (type(low) is int and type(high) is int and 0 <= low <= high and high >= 1):
        raise SettingsError(
            f"{name}: min_replicas {low!r} and max_replicas {high!r} must be whole numbers with "
            "0 <= min_replicas <= max_replicas and max_replicas >= 1"
        )
    return json.dumps(config, sort_keys=True)


def _postgres_url(value: str) -> str | None:
    # Dagster's PostgreSQL storage speaks psycopg2; SQLAlchemy 2.1 reads a bare postgresql:// URL
    # as psycopg 3, on which Dagster's queries fail ("syntax error at or near $1").
    if not value.strip():
        return None
    if not value.strip().startswith("postgresql+psycopg2://"):
        raise SettingsError(
            "ML_PLATFORM_DAGSTER_STORAGE must be a URL of the form "
            "postgresql+psycopg2://user[:password]@host:5432/database (Dagster's storage needs the "
            "psycopg2 driver); unset it to keep Dagster's storage in SQLite under the home"
        )
    return value.strip()


def _prediction_log_url(value: str) -> str | None:
    if not value.strip():
        return None
    if not value.strip().startswith(("postgresql://", "postgres://")):
        raise SettingsError(
            "ML_PLATFORM_PREDICTION_LOG_URL must be a URL of the form "
            "postgresql://user[:password]@host:5432/database; unset it to keep the prediction log "
            "in files (ML_PLATFORM_PREDICTION_LOG_DIR)"
        )
    return value.strip()


# Each setting and the environment variable that sets it. `load_settings` reads them and
# `settings_env` writes them, so a process handed `settings_env(s)` loads exactly `s`.
ENV_VARS = {
    "home": "ML_PLATFORM_HOME",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "ray_address": "RAY_ADDRESS",
    "serve_host": "ML_PLATFORM_SERVE_HOST",
    "serve_port": "ML_PLATFORM_SERVE_PORT",
    "api_token": "ML_PLATFORM_API_TOKEN",
    "mlflow_ui_url": "ML_PLATFORM_MLFLOW_UI",
    "online_store_url": "ML_PLATFORM_ONLINE_STORE",
    "online_store_namespace": "ML_PLATFORM_ONLINE_NAMESPACE",
    "mqtt_url": "ML_PLATFORM_MQTT_URL",
    "serve_fast": "ML_PLATFORM_SERVE_FAST",
    "serve_replicas": "ML_PLATFORM_SERVE_REPLICAS",
    "serve_autoscaling": "ML_PLATFORM_SERVE_AUTOSCALING",
    "serve_proxy_location": "ML_PLATFORM_SERVE_PROXY",
    "grpc_port": "ML_PLATFORM_GRPC_PORT",
    "sensor_interval_s": "ML_PLATFORM_SENSOR_INTERVAL_S",
    "monitor_cron": "ML_PLATFORM_MONITOR_CRON",
    "use_cases": "ML_PLATFORM_USE_CASES",
    "prediction_log_dir": "ML_PLATFORM_PREDICTION_LOG_DIR",
    "prediction_log_url": "ML_PLATFORM_PREDICTION_LOG_URL",
    "dagster_storage_url": "ML_PLATFORM_DAGSTER_STORAGE",
    "model_cache_dir": "ML_PLATFORM_MODEL_CACHE",
    "ray_min_rows": "ML_PLATFORM_RAY_MIN_ROWS",
}
# Never written into Dagster run config or shown in its UI (the resource reads them as dg.EnvVar);
# the Dagster storage and prediction log URLs may hold a password, and dagster.yaml names its
# variable, not its value.
SECRET_VARS = frozenset(
    {"ML_PLATFORM_API_TOKEN", "ML_PLATFORM_DAGSTER_STORAGE", "ML_PLATFORM_PREDICTION_LOG_URL"}
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("ML_PLATFORM_HOME") or REPO_ROOT / ".ml_platform").resolve()
    return Settings(
        home=home,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
        ray_address=env.get("RAY_ADDRESS") or None,
        serve_host=env.get("ML_PLATFORM_SERVE_HOST") or "127.0.0.1",
        serve_port=_int(env, "ML_PLATFORM_SERVE_PORT", 8000),
        api_token=env.get("ML_PLATFORM_API_TOKEN") or None,
        mlflow_ui_url=env.get("ML_PLATFORM_MLFLOW_UI") or "http://127.0.0.1:5000",
        online_store_url=env.get("ML_PLATFORM_ONLINE_STORE") or None,
        online_store_namespace=env.get("ML_PLATFORM_ONLINE_NAMESPACE") or "mlp",
        mqtt_url=env.get("ML_PLATFORM_MQTT_URL") or "mqtt://127.0.0.1:1883",
        serve_fast=_serve_fast(env.get("ML_PLATFORM_SERVE_FAST", "")),
        serve_replicas=_int(env, "ML_PLATFORM_SERVE_REPLICAS", 1),
        serve_autoscaling=_autoscaling(env.get("ML_PLATFORM_SERVE_AUTOSCALING", "")),
        serve_proxy_location=_proxy_location(env.get("ML_PLATFORM_SERVE_PROXY", "")),
        grpc_port=_int(env, "ML_PLATFORM_GRPC_PORT", 8001),
        sensor_interval_s=_int(env, "ML_PLATFORM_SENSOR_INTERVAL_S", 30),
        monitor_cron=env.get("ML_PLATFORM_MONITOR_CRON") or "*/10 * * * *",
        use_cases=_absolute_entries(env.get("ML_PLATFORM_USE_CASES", "")),
        prediction_log_dir=Path(log_dir).resolve()
        if (log_dir := env.get("ML_PLATFORM_PREDICTION_LOG_DIR"))
        else None,
        dagster_storage_url=_postgres_url(env.get("ML_PLATFORM_DAGSTER_STORAGE", "")),
        prediction_log_url=_prediction_log_url(env.get("ML_PLATFORM_PREDICTION_LOG_URL", "")),
        model_cache_dir=Path(cache).expanduser().resolve()
        if (cache := env.get("ML_PLATFORM_MODEL_CACHE"))
        else None,
        ray_min_rows=_int(env, "ML_PLATFORM_RAY_MIN_ROWS", 1_000_000),
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable that sets it, resolved (an unset one is "")."""

    def text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "1" if value else "0"
        return str(value)

    return {ENV_VARS[f.name]: text(getattr(settings, f.name)) for f in fields(Settings)}
