"""MLFLOW_TRACKING_URI switches tracking and the registry to an `mlflow server` on PostgreSQL."""

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from mlflow import MlflowClient

from ml_platform.metadata import latest_metadata
from ml_platform.serving.cluster import free_port
from ml_platform.tasks import TASKS
from ml_platform.training import registry

from .conftest import DAYS, FIRST_DAY, USE_CASE, key, land_days, make_platform
from .listening import listeners, process_tree

pytestmark = pytest.mark.integration  # an MLflow tracking server

ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch):
    database = f"mlflow_{uuid.uuid4().hex[:10]}"  # earlier runs may have left databases behind
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "--artifacts-destination",
            (tmp_path / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(
                    "mlflow server did not start: " + (tmp_path / "mlflow-server.log").read_text()[-3000:]
                )
            time.sleep(1)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_training_tracks_and_registers_in_a_tracking_server(tmp_path, mlflow_server):
    platform = make_platform(tmp_path / "home")
    assert platform.settings.mlflow_tracking_uri == mlflow_server
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    result = platform.materialize(["training_set", "model", "model_evaluation", "champion"])
    assert result.success

    # The tracking server (uvicorn and its workers) listens on loopback only.
    found = listeners(process_tree(os.getpid()))
    assert any(x.port == int(mlflow_server.rsplit(":", 1)[1]) for x in found)
    assert [str(x) for x in found if not x.loopback] == []

    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias(USE_CASE, registry.CHAMPION)
    model = latest_metadata(platform.instance, key("model"))
    assert str(champion.version) == model["model_version"]
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.params["algorithm"] == "isolation_forest" and "test_roc_auc" in run.data.metrics
    # The artifact went through the server's artifact store and verifies on the way back.
    pipeline = registry.load_verified_model(
        registry.alias_ref(platform.settings, USE_CASE), tmp_path / "cache", TASKS["anomaly_detection"]
    )
    assert pipeline is not None
    assert not (platform.settings.home / "mlflow.db").exists()  # nothing fell back to the embedded store
