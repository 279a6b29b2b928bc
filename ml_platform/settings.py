"""The one place that reads the environment.

Every path the platform uses is derived from ``ML_PLATFORM_HOME`` so that a test, a demo and a
production deployment differ only by that variable (and the few service URLs below).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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
    # How often sensors and declarative automation evaluate (shorter in tests and scenarios).
    sensor_interval_s: int = 30

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
        return self.home / "serving_log"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def run_dir(self) -> Path:
        """Runtime state of long-running processes (pids, the serving cluster's address)."""
        return self.home / "run"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    def landing_dir_for(self, use_case: str) -> Path:
        return self.landing_dir / use_case

    def labels_dir_for(self, use_case: str) -> Path:
        return self.landing_dir / use_case / "labels"


def _serve_fast(value: str) -> bool:
    """``1``/``0`` as set; unset: the fast path wherever HAProxy is installed."""
    if value.strip() in ("", "auto"):
        return shutil.which("haproxy") is not None
    return value.strip() == "1"


def load_settings() -> Settings:
    home = Path(os.environ.get("ML_PLATFORM_HOME", REPO_ROOT / ".ml_platform")).resolve()
    return Settings(
        home=home,
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        serve_host=os.environ.get("ML_PLATFORM_SERVE_HOST", "127.0.0.1"),
        serve_port=int(os.environ.get("ML_PLATFORM_SERVE_PORT", "8000")),
        api_token=os.environ.get("ML_PLATFORM_API_TOKEN") or None,
        mlflow_ui_url=os.environ.get("ML_PLATFORM_MLFLOW_UI", "http://127.0.0.1:5000"),
        online_store_url=os.environ.get("ML_PLATFORM_ONLINE_STORE") or None,
        online_store_namespace=os.environ.get("ML_PLATFORM_ONLINE_NAMESPACE", "mlp"),
        mqtt_url=os.environ.get("ML_PLATFORM_MQTT_URL", "mqtt://127.0.0.1:1883"),
        serve_fast=_serve_fast(os.environ.get("ML_PLATFORM_SERVE_FAST", "")),
        serve_replicas=int(os.environ.get("ML_PLATFORM_SERVE_REPLICAS", "1")),
        sensor_interval_s=int(os.environ.get("ML_PLATFORM_SENSOR_INTERVAL_S", "30")),
    )
