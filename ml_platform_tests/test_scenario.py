"""The closed loop, unattended: drifted data lands on a running platform (Dagster daemon, Ray
Serve) and the platform alone detects the drift, retrains once, gates, promotes and switches
serving with no failed request, although the daemon is killed in the tick that requests the
retrain and started again. Sensor intervals are shortened to 5 s.

Dagster's runs, event logs and schedules are in PostgreSQL here (``ML_PLATFORM_DAGSTER_STORAGE``,
a database of the local server), the way a team runs it, and so is the prediction log the replicas
write (``ML_PLATFORM_PREDICTION_LOG_URL``); the demo's test runs the default SQLite and files."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.home import child_env, prepare_home
from ml_platform.metadata import latest_metadata
from ml_platform.serving.log import read_postgres_prediction_log
from ml_platform.serving.processes import descendants, kill_all, processes
from ml_platform.settings import REPO_ROOT, load_settings
from ml_platform.usecases.sensor_anomaly.scenario import run_drift_scenario

from .conftest import DAYS, FIRST_DAY, USE_CASE, Platform, fresh_database, land_days
from .listening import listeners, process_tree

TRAIN_AND_SERVE = ["online_features", "training_set", "model", "model_evaluation", "champion", "deployment"]
TOKEN = "scenario-t0ken"
# What the daemon starts to serve code (gRPC code servers, their proxy), as their command lines say.
SERVER_ROLES = (b"api\x00grpc", b"code-server", b"dagster-daemon")


def assert_guarded(settings, when: str) -> None:
    """Prediction, event and label routes refuse a request without the token and answer one with it."""
    reading = {"sensor_id": "s-1", "timestamp": dt.datetime.now(dt.UTC).isoformat(), "value": 50.0}
    for path, body, ok in (
        (f"/v1/models/{USE_CASE}/predict", {"sensor_id": "s-1"}, 200),
        (f"/v1/events/{USE_CASE}", reading, 202),
        (f"/v1/labels/{USE_CASE}", {"windows": "none"}, 422),  # past the token: the body is checked
    ):
        url = f"{settings.serve_url}{path}"
        refused = httpx.post(url, json=body, timeout=30)
        assert refused.status_code == 401, (when, path, refused.text)
        allowed = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert allowed.status_code == ok, (when, path, allowed.text)


def start_daemon(settings, home: Path) -> subprocess.Popen:
    with (home / "daemon.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=REPO_ROOT,
            env={**child_env(settings), **{k: v for k, v in os.environ.items() if k.startswith("RAY")}},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class DaemonKiller(threading.Thread):
    """Once the retrain sensor's run exists (its tick may not have finished), SIGKILL the daemon
    and its code servers (not run workers: a run keeps its own process) and start a new daemon."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(daemon=True)
        self.platform, self.stop = platform, threading.Event()
        self.killed: list[int] = []
        self.tick_status_at_kill: str | None = None

    def run(self) -> None:
        with dg.DagsterInstance.from_config(str(self.platform.settings.dagster_home)) as instance:
            retrain = dg.RunsFilter(tags={"ml_platform/trigger": "retrain"})
            while not self.stop.wait(0.05):
                if instance.get_runs(retrain):
                    break
            else:
                return
            daemon = self.platform.daemon
            table = processes()
            # Its code servers too; never a run worker (the code server's children that execute
            # runs, whatever their command line): a killed worker would leave its run STARTED.
            tree = [daemon.pid] + [
                pid
                for pid in descendants(daemon.pid, table)
                if any(role in Path(f"/proc/{pid}/cmdline").read_bytes() for role in SERVER_ROLES)
            ]
            for pid in tree:
                os.kill(pid, signal.SIGKILL)
            self.killed = tree
            daemon.wait()
            ticks = [
                t
                for t in instance.get_ticks(*_sensor_ids(instance, f"{USE_CASE}_retrain_sensor"))
                if t.status is not None
            ]
            self.tick_status_at_kill = ticks[0].status.value if ticks else None
            self.platform.daemon = start_daemon(self.platform.settings, self.platform.settings.home)


def _sensor_ids(instance: dg.DagsterInstance, name: str) -> tuple[str, str]:
    state = next(s for s in instance.all_instigator_state() if s.name == name)
    return state.instigator_origin_id, state.selector_id


@pytest.fixture(scope="module")
def dagster_database():
    with fresh_database("scenario") as url:
        yield url


@pytest.fixture(scope="module")
def running_platform(tmp_path_factory, ray_cluster, dagster_database):
    home = tmp_path_factory.mktemp("scenario-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_PLATFORM_HOME", str(home))
    mp.setenv("ML_PLATFORM_DAGSTER_STORAGE", dagster_database)
    mp.setenv("ML_PLATFORM_PREDICTION_LOG_URL", dagster_database.replace("+psycopg2", ""))
    mp.setenv("ML_PLATFORM_SENSOR_INTERVAL_S", "5")
    # The whole loop runs with a token: every redeploy on the way must keep it.
    mp.setenv("ML_PLATFORM_API_TOKEN", TOKEN)
    settings = load_settings()
    prepare_home(settings)
    instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
    platform = Platform(settings, build_definitions(settings), instance)
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    platform.materialize(TRAIN_AND_SERVE)
    platform.materialize(["predictions", "drift_report"])  # as make demo leaves it
    platform.daemon = start_daemon(settings, home)
    try:
        yield platform
    finally:
        daemon = platform.daemon  # the one started again after a kill, if it was
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        # Its code servers outlived it (seen: an hour later, ignoring SIGTERM): end its session.
        kill_all(lambda _, p: p.sid == daemon.pid)
        instance.dispose()
        mp.undo()


def test_drift_is_detected_retrained_once_promoted_and_served_without_a_failed_request(running_platform):
    settings = running_platform.settings
    # The daemon is killed with SIGKILL the moment the retrain run exists, and started again.
    killer = DaemonKiller(running_platform)
    killer.start()
    # Each wait is bounded; the chain (two ingests, staging, features, drift) takes ~8 min here.
    try:
        result = run_drift_scenario(settings, timeout_s=900, log=print)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed, "the retrain run never appeared, so the daemon was not killed"
    print(f"daemon killed; the retrain sensor's last tick was {killer.tick_status_at_kill}")
    assert result.trigger["dataset_drift"] is True  # the drift report
    assert result.retrain_runs == 1
    assert int(result.champion_after) == int(result.champion_before) + 1
    assert result.failed_requests == []
    assert result.versions_served == {result.champion_before, result.champion_after}
    assert result.requests > 50
    runs = running_platform.instance.get_runs(dg.RunsFilter(tags={"ml_platform/trigger": "retrain"}))
    # One run although the daemon died in the tick that made it and evaluated it again.
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert "drift report" in runs[0].tags["ml_platform/reasons"]
    # All of it on PostgreSQL: the landing sensor's runs, declarative automation's and the retrain's
    # are rows of the database, and the home holds no SQLite history.
    with psycopg.connect(settings.dagster_storage_url.replace("+psycopg2", "")) as conn:
        tags = conn.execute("SELECT key, value FROM run_tags").fetchall()
    assert ("dagster/sensor_name", f"{USE_CASE}_landing_sensor") in tags
    assert ("dagster/from_automation_condition", "true") in tags
    assert ("ml_platform/trigger", "retrain") in tags
    assert not (settings.dagster_home / "history").exists()
    # Nothing the loop started (daemon, code server, run workers, Ray, serving) listens beyond loopback.
    tree = process_tree(os.getpid())
    assert running_platform.daemon.pid in tree
    found = listeners(tree)
    assert len(found) >= 8 and [str(x) for x in found if not x.loopback] == []
    # Every prediction served on the way (both versions) went to the PostgreSQL log, none to files,
    # and the predictions asset ingested exactly what is there.
    logged = read_postgres_prediction_log(settings.prediction_log_url, USE_CASE)
    assert {str(r["model_version"]) for r in logged} >= result.versions_served
    assert not list(settings.serving_log_dir.rglob("*.jsonl"))
    running_platform.materialize(["predictions"])
    ingested = latest_metadata(running_platform.instance, dg.AssetKey([USE_CASE, "predictions"]))
    assert ingested["dagster/row_count"] == len({r["prediction_id"] for r in logged}) >= result.requests
    # The daemon that ran it was handed every setting, the token included.
    environ = Path(f"/proc/{running_platform.daemon.pid}/environ").read_bytes().split(b"\0")
    daemon_env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    assert load_settings(daemon_env) == settings


def test_the_token_guards_serving_through_the_whole_loop(running_platform, monkeypatch):
    settings = running_platform.settings
    assert_guarded(settings, "after the deployment asset and the drift-triggered retrain")
    # By hand, from a shell where the token is not exported: serving keeps it.
    monkeypatch.delenv("ML_PLATFORM_API_TOKEN")
    cli = str(Path(sys.executable).with_name("ml-platform"))
    env = {k: v for k, v in child_env(settings).items() if k != "ML_PLATFORM_API_TOKEN"}
    for command in (["rollback", USE_CASE], ["promote", USE_CASE]):
        done = subprocess.run([cli, *command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_guarded(settings, f"after ml-platform {command[0]}")


def test_events_posted_to_replicas_reach_the_landing_zone_through_the_inbox(running_platform):
    """The replicas log to PostgreSQL, so they hold posted events there too; the daemon's landing
    sensor lands them as a file, which no replica wrote."""
    settings = running_platform.settings
    sensor = f"inbox-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.UTC)
    sent = [
        {"sensor_id": sensor, "timestamp": (now + dt.timedelta(seconds=i)).isoformat(), "value": 50.0 + i}
        for i in range(3)
    ]
    response = httpx.post(
        f"{settings.serve_url}/v1/events/{USE_CASE}",
        json=sent,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 202 and response.json()["accepted"] == 3, response.text
    landing = settings.landing_dir_for(USE_CASE)
    deadline = time.monotonic() + 90  # a few sensor ticks of 5 s, while runs may be queued
    found: list[dict] = []
    while time.monotonic() < deadline and not found:
        for path in landing.glob("events_*.jsonl"):
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            found = [line for line in lines if line["sensor_id"] == sensor] or found
        time.sleep(1)
    assert found == sent
    # Every events file there was landed by the sensor from the inbox (named by its rows' ids).
    assert all("_rows_" in p.name for p in landing.glob("events_*.jsonl"))
    with psycopg.connect(settings.prediction_log_url) as conn:
        held = conn.execute("SELECT count(*) FROM ml_platform_landing_inbox").fetchone()[0]
    assert held == 0
