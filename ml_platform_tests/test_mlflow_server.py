"""MLFLOW_TRACKING_URI switches tracking and the registry to an `mlflow server` on PostgreSQL."""

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from ml_platform.metadata import latest_metadata
from ml_platform.serving.cluster import free_port
from ml_platform.tasks import TASKS
from ml_platform.training import registry

from .conftest import DAYS, FIRST_DAY, USE_CASE, fresh_database, key, land_days, make_platform
from .listening import listeners, process_tree

pytestmark = pytest.mark.integration  # an MLflow tracking server


class TrackingServer:
    """``mlflow server`` on a PostgreSQL database of its own, which a test can kill and start again
    on the same port and database."""

    def __init__(self, database_url: str, port: int, tmp_path: Path) -> None:
        self.database_url, self.port, self.tmp_path = database_url, port, tmp_path
        self.uri = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "server",
                    "--backend-store-uri",
                    self.database_url.replace("+psycopg2", "+psycopg"),
                    "--artifacts-destination",
                    (self.tmp_path / "artifacts").as_uri(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that kill() ends its workers too
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail("mlflow server did not start: " + self.log_path.read_text()[-3000:])
            time.sleep(1)

    def kill(self) -> None:
        """SIGKILL to the server and its workers, as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    with fresh_database("mlflow") as database_url:
        server = TrackingServer(database_url, free_port(), tmp_path_factory.mktemp("mlflow-server"))
        mp = pytest.MonkeyPatch()
        try:
            server.start()
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            yield server
        finally:
            mp.undo()
            server.stop()


@pytest.fixture(scope="module")
def trained(tracking_server, tmp_path_factory):
    """A home whose champion was trained, tracked and registered through the tracking server."""
    platform = make_platform(tmp_path_factory.mktemp("mlflow-server-home"))
    assert platform.settings.mlflow_tracking_uri == tracking_server.uri
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    assert platform.materialize(["training_set", "model", "model_evaluation", "champion"]).success
    return platform


def test_training_tracks_and_registers_in_a_tracking_server(tmp_path, tracking_server, trained):
    platform, mlflow_server = trained, tracking_server.uri
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


def test_a_tracking_server_restarted_during_training_loses_nothing_and_one_down_fails_clearly(
    tracking_server, trained, monkeypatch
):
    platform = trained
    client = MlflowClient(tracking_server.uri)

    # Killed with SIGKILL as the model step starts logging its candidate, back 5 s later: MLflow's
    # client retries. The step itself says when (the instance is in memory: polling it from this
    # thread while the run writes to it races on its SQLite connection).
    logging_starts, killed = threading.Event(), threading.Event()
    log_candidate = registry.log_candidate

    def log_after_the_kill(*args, **kwargs):
        logging_starts.set()
        assert killed.wait(120), "the test did not kill the tracking server"
        return log_candidate(*args, **kwargs)

    monkeypatch.setattr(registry, "log_candidate", log_after_the_kill)
    outcome = {}
    training = threading.Thread(
        target=lambda: outcome.update(result=platform.materialize(["model", "model_evaluation", "champion"]))
    )
    training.start()
    assert logging_starts.wait(300), "the model step did not reach MLflow"
    tracking_server.kill()
    killed.set()
    time.sleep(5)
    tracking_server.start()
    training.join(timeout=600)
    assert not training.is_alive()
    assert outcome["result"].success
    model = latest_metadata(platform.instance, key("model"))
    version = client.get_model_version(USE_CASE, model["model_version"])
    assert version.tags.get(registry.SHA_TAG) and client.get_run(version.run_id).info.status == "FINISHED"

    # Down for good: the step fails naming the server, and the champion is where it was.
    champion = client.get_model_version_by_alias(USE_CASE, registry.CHAMPION).version
    versions = len(client.search_model_versions(f"name='{USE_CASE}'"))
    monkeypatch.setattr(registry, "log_candidate", log_candidate)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    tracking_server.kill()
    failed = platform.materialize(["model", "model_evaluation", "champion"], raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    error = failure.step_failure_data.error  # Dagster's wrapper; ours is its cause
    while error.cls_name != "TrackingError" and error.cause is not None:
        error = error.cause
    message = error.message
    assert f"training {USE_CASE}: the MLflow tracking server {tracking_server.uri} failed" in message
    assert "the champion is unchanged" in message
    tracking_server.start()
    assert client.get_model_version_by_alias(USE_CASE, registry.CHAMPION).version == champion
    assert len(client.search_model_versions(f"name='{USE_CASE}'")) == versions
