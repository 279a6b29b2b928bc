"""Work spread over a Ray cluster of two nodes: a head and a second node joined to it with
``ray start --address``, each a process tree of its own on this machine with its own CPU and a
custom resource. The model search's trials, sent to that cluster, run on both nodes (the node ids
each trial records) and score exactly as the same search in one process. A worker on the second
node loads a registered model through a tracking server's artifact proxy, without the home.

Unlike the loopback-only head the other tests use, nodes that join each other listen on the
machine's address, as on a real cluster; both are ended when the module's tests are done."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest

from ml_platform.features.compute import compute_features
from ml_platform.serving.cluster import (
    SINGLE_NODE_FLAG,
    free_port,
    metrics_dir,
    node_ports,
    reachable,
)
from ml_platform.serving.processes import kill_all, processes
from ml_platform.settings import REPO_ROOT, load_settings
from ml_platform.tasks import task_of
from ml_platform.training import registry
from ml_platform.training.evaluate import features_of
from ml_platform.training.tune import Candidate, fit_candidate
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generated_days

from .conftest import fresh_database
from .test_gate import DAYS, SENSORS, SPEC, TODAYS, split, training_set
from .test_mlflow_server import TrackingServer

pytestmark = pytest.mark.integration  # two Ray nodes

# The driver: the search over the given cluster, what each trial scored and where it ran.
SEARCH = """
import json, sys
import ray
from ml_platform.training.tune import fit_candidate
from ml_platform_tests.test_ray_nodes import search_inputs

spec, train, valid = search_inputs()
candidate = fit_candidate(spec, train, valid, sys.argv[1])
nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
trials = [{"params": t.params, "score": t.score, "node": t.node} for t in candidate.trials]
print(json.dumps({"trials": trials, "chosen": candidate.chosen.params, "nodes": nodes}))
"""

# The driver: a task on the second node loads the registered model through the tracking server
# (its environment names no home, and its cache is a folder of its own) and scores the validation
# rows; then the stored artifact is changed behind the registry's back and a fresh load refuses it.
LOAD = """
import json, os, sys, tempfile
from pathlib import Path
import ray
from ml_platform.tasks import task_of
from ml_platform.training.evaluate import features_of
from ml_platform.training.registry import ArtifactIntegrityError, ModelRef, load_verified_model
from ml_platform_tests.test_ray_nodes import search_inputs

ref, stored = ModelRef(**json.loads(sys.argv[2])), Path(sys.argv[3])
spec, _, valid = search_inputs()


@ray.remote(num_cpus=1, resources={"second_node": 1})
def load_and_score(features):
    cache = Path(tempfile.mkdtemp(prefix="model-cache-"))
    node, home = ray.get_runtime_context().get_node_id(), os.environ.get("ML_PLATFORM_HOME")
    try:
        model = load_verified_model(ref, cache, task_of(spec))
    except ArtifactIntegrityError as exc:
        return {"node": node, "home": home, "refused": str(exc)}
    return {"node": node, "home": home, "scores": task_of(spec).scores(model, features).tolist()}


tracking = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
ray.init(address=sys.argv[1], runtime_env={"env_vars": tracking})
features = features_of(valid, spec)
loaded = ray.get(load_and_score.remote(features))
stored.write_bytes(stored.read_bytes() + b"changed")
refused = ray.get(load_and_score.remote(features))
nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
print(json.dumps({"loaded": loaded, "refused": refused, "nodes": nodes}))
"""

# The driver: the sensor use case's features of ten days built over the cluster (whole sensors per
# task), then scored day by day over it with the registered model, as the features and
# batch_predictions assets do from ML_PLATFORM_RAY_MIN_ROWS rows on.
SPREAD_WORK = """
import json, sys
import ray
from ml_platform.features.compute import compute_features_on_cluster
from ml_platform.serving.records import score_days_on_cluster
from ml_platform.settings import load_settings
from ml_platform.training.registry import ModelRef
from ml_platform_tests.test_ray_nodes import spread_inputs

settings = load_settings()
spec, rows = spread_inputs()
features, feature_nodes = compute_features_on_cluster(rows, spec, settings.ray_address)
features.write_parquet(sys.argv[3])
scores, scoring_nodes = score_days_on_cluster(features, spec, ModelRef(**json.loads(sys.argv[2])), settings)
nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
done = {"feature_nodes": feature_nodes, "scoring_nodes": scoring_nodes, "scores": scores.tolist()}
print(json.dumps({**done, "nodes": nodes}))
"""


def generated() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ten generated days of the sensor use case: readings typed as staged, and anomaly windows."""
    first = TODAYS[0] - dt.timedelta(days=DAYS)
    return generated_days(SensorDataConfig(sensors=SENSORS, days=DAYS, start=first, anchor=first))


def spread_inputs():
    """The sensor use case and its generated readings."""
    return SPEC, generated()[0]


def search_inputs():
    """The sensor use case's search (four trials) on the generated days' training set."""
    rows = training_set(*generated())
    return dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, trials=4)), *(
        split(rows, name) for name in ("train", "validation")
    )


def cluster_env() -> dict[str, str]:
    """This process's environment without what points at the session's loopback-only head: its
    RAY_ADDRESS, and the single-node flag an earlier test's driver set here (stay_on_loopback),
    with which a head binds loopback only and no second node can join it. Nor a home: the nodes
    stand for machines that do not have it."""
    dropped = {"RAY_ADDRESS", SINGLE_NODE_FLAG, "ML_PLATFORM_HOME"}
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, "RAY_USAGE_STATS_ENABLED": "0"}


def start_node(command: list[str], log: Path, *, head: bool = False) -> subprocess.Popen:
    ray = str(Path(sys.executable).with_name("ray"))
    port_flags, port_env, _ = node_ports(head=head)
    with log.open("ab") as out:  # the child keeps its own copy
        return subprocess.Popen(
            [ray, "start", "--block", "--disable-usage-stats", *port_flags, *command],
            env={**cluster_env(), **port_env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclasses.dataclass(frozen=True)
class TwoNodes:
    address: str
    head: subprocess.Popen
    second: subprocess.Popen  # each node's processes are in its session (sid = its pid)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[TwoNodes]:
    logs = tmp_path_factory.mktemp("two-nodes")
    port = free_port()
    head = start_node(
        [
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            "--num-cpus=1",
            '--resources={"head_node": 1}',
        ],
        logs / "head.log",
        head=True,
    )
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        address = ""
        while not address:
            assert head.poll() is None and time.monotonic() < deadline, (logs / "head.log").read_text()
            # The head announces its address (the machine's, not loopback) in its log.
            found = re.search(r"ray start --address='?([\w.:-]+:\d+)", (logs / "head.log").read_text())
            address = found.group(1) if found else ""
            time.sleep(0.5)
        assert reachable(address, timeout_s=5)
        nodes.append(
            start_node(
                [f"--address={address}", "--num-cpus=1", '--resources={"second_node": 1}'],
                logs / "second.log",
            )
        )
        yield TwoNodes(address, head, nodes[1])
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
            # What Ray leaves of each node outlives `ray start --block`: its whole session goes.
            kill_all(lambda _, p, sid=node.pid: p.sid == sid)


@pytest.fixture(scope="module")
def in_process() -> Candidate:
    """The search and fit of the search's inputs in this process."""
    return fit_candidate(*search_inputs())


def driver(script: str, *args: str, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        env={**cluster_env(), "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": args[0], **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def node_ids(on_ray: dict) -> tuple[str, str]:
    """The head's and the second node's ids, by the custom resource each was started with."""
    by_resource = {name: node for node, names in on_ray["nodes"].items() for name in names}
    assert by_resource["head_node"] != by_resource["second_node"]
    return by_resource["head_node"], by_resource["second_node"]


def test_the_search_runs_on_both_nodes_and_equals_the_search_in_one_process(two_nodes, in_process):
    on_ray = driver(SEARCH, two_nodes.address)
    # Both nodes joined, and each ran at least one of the four trials.
    assert {t["node"] for t in on_ray["trials"]} == set(node_ids(on_ray))

    assert [t.node for t in in_process.trials] == [""] * 4
    assert [(t["params"], t["score"]) for t in on_ray["trials"]] == [
        (t.params, t.score) for t in in_process.trials
    ]
    assert on_ray["chosen"] == in_process.chosen.params


@dataclasses.dataclass(frozen=True)
class Registered:
    """The in-process candidate registered through an ``mlflow server`` of the module's own."""

    server: TrackingServer
    ref: registry.ModelRef
    stored: Path  # the artifact's model file in the server's store


@pytest.fixture(scope="module")
def registered(in_process, tmp_path_factory) -> Iterator[Registered]:
    spec, _, valid = search_inputs()
    tmp = tmp_path_factory.mktemp("tracking")
    mp = pytest.MonkeyPatch()
    with fresh_database("mlflow") as database_url:
        server = TrackingServer(database_url, free_port(), tmp)
        try:
            server.start()
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            mp.setenv("ML_PLATFORM_HOME", str(tmp / "home"))
            settings = load_settings()
            ref = registry.log_candidate(
                settings,
                spec,
                in_process.pipeline,
                features_of(valid, spec).head(20),
                in_process.chosen.params,
                {},
                {},
            )
            # Registered through the server: its artifacts are in the server's store, behind its
            # proxy, and nothing of the model is under the home.
            location = ref.source
            if location.startswith("models:/"):  # a logged model: its artifacts are elsewhere
                location = registry.configure(settings).get_logged_model(location[8:]).artifact_location
            assert location.startswith("mlflow-artifacts:/"), location
            (stored,) = (tmp / "artifacts").rglob("model.skops")
            assert not list((tmp / "home").rglob("*.skops"))
            yield Registered(server, ref, stored)
        finally:
            mp.undo()
            server.stop()


def test_a_node_without_the_home_loads_the_model_through_the_artifact_proxy(
    two_nodes, in_process, registered
):
    spec, _, valid = search_inputs()
    original = registered.stored.read_bytes()
    try:
        on_ray = driver(
            LOAD,
            two_nodes.address,
            json.dumps(dataclasses.asdict(registered.ref)),
            str(registered.stored),
            MLFLOW_TRACKING_URI=registered.server.uri,
        )
    finally:
        registered.stored.write_bytes(original)
    _, second = node_ids(on_ray)
    loaded, refused = on_ray["loaded"], on_ray["refused"]
    assert loaded["node"] == refused["node"] == second and loaded["home"] is None
    assert loaded["scores"] == task_of(spec).scores(in_process.pipeline, features_of(valid, spec)).tolist()
    # The sha256 check is the same through the proxy: a changed artifact is not loaded.
    assert "does not match the recorded" in refused["refused"] and "scores" not in refused


def test_feature_builds_and_batch_scoring_spread_over_both_nodes_equal_one_process(
    two_nodes, in_process, registered, tmp_path
):
    built = tmp_path / "features.parquet"
    on_ray = driver(
        SPREAD_WORK,
        two_nodes.address,
        json.dumps(dataclasses.asdict(registered.ref)),
        str(built),
        MLFLOW_TRACKING_URI=registered.server.uri,
        # No home on the nodes: models are fetched into a cache of their own.
        ML_PLATFORM_MODEL_CACHE=str(tmp_path / "node-cache"),
    )
    nodes = set(node_ids(on_ray))
    assert set(on_ray["feature_nodes"]) == nodes and set(on_ray["scoring_nodes"]) == nodes

    spec, rows = spread_inputs()
    features = compute_features(rows, spec)
    assert pl.read_parquet(built).equals(features)
    assert on_ray["scores"] == task_of(spec).scores(in_process.pipeline, features_of(features, spec)).tolist()


# The driver: serving deployed to the cluster as `ml-platform serve` deploys it, then gone (Serve's
# applications outlive the driver that deployed them).
SERVE = """
import json, sys
from ml_platform.serving.deploy import deploy, wait_until_serving
from ml_platform.settings import load_settings

settings = load_settings()
deployed = deploy(settings)
wait_until_serving(settings, sys.argv[2], sys.argv[3], timeout_s=300)
print(json.dumps({"deployed": {name: ref.version for name, ref in deployed.items()}}))
"""

REPLICA = "ray::ServeReplica:ml_platform:ModelServer"


def replicas_by_node(nodes: TwoNodes) -> dict[str, list[int]]:
    """The serving replicas' process ids on each node (a node's processes are in its session)."""
    names = {nodes.head.pid: "head", nodes.second.pid: "second"}
    found: dict[str, list[int]] = {"head": [], "second": []}
    for pid, p in processes().items():
        if p.sid in names and not p.zombie:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(REPLICA.encode()):
                found[names[p.sid]].append(pid)
    return found


def answered_by(settings, pid: int) -> float:
    """Requests the replica of process ``pid`` answered, from its own files of the service's
    Prometheus counters (prometheus_client's multiprocess mode keeps one file per process)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    with tempfile.TemporaryDirectory() as own:
        for path in metrics_dir(settings).glob(f"*_{pid}.db"):
            shutil.copy(path, Path(own) / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=own)
        return sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "ml_platform_requests_total"
        )


@dataclasses.dataclass(frozen=True)
class Request:
    started: float
    ended: float
    error: str | None  # None: answered 200 with the expected score


def test_serving_scales_out_to_the_second_node_and_outlives_it(two_nodes, in_process, registered, tmp_path):
    """Last in the module: it ends the second node. Serving autoscales from one replica to two
    under load, one on each node (Serve spreads replicas over nodes); the second node is then
    killed whole, as a machine dies, while eight clients keep asking. A request fails only if it
    was in flight when the node died; serving goes on from the head's replica."""
    spec, _, valid = search_inputs()
    features = features_of(valid, spec)
    row = {name: features[name][0] for name in features.columns}
    expected = task_of(spec).scores(in_process.pipeline, features.head(1))[0]
    home, port = tmp_path / "home", free_port()
    env = {
        "ML_PLATFORM_HOME": str(home),
        "MLFLOW_TRACKING_URI": registered.server.uri,
        "ML_PLATFORM_SERVE_PORT": str(port),
        "ML_PLATFORM_GRPC_PORT": "0",
        "ML_PLATFORM_SERVE_FAST": "0",
        "ML_PLATFORM_API_TOKEN": "",
        # One proxy: the nodes share this machine's loopback, where a second proxy could not bind.
        "ML_PLATFORM_SERVE_PROXY": "HeadOnly",
        "ML_PLATFORM_SERVE_AUTOSCALING": json.dumps(
            {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 1,
                "look_back_period_s": 2,
                "metrics_interval_s": 0.5,
                "downscale_delay_s": 600,
            }
        ),
    }
    settings = load_settings(env)
    registry.move_alias(settings, spec.name, registered.ref.version, registry.CHAMPION, "test", "test")
    deployed = driver(SERVE, two_nodes.address, spec.name, registered.ref.version, **env)
    assert deployed["deployed"][spec.name] == registered.ref.version
    assert sum(len(pids) for pids in replicas_by_node(two_nodes).values()) == 1

    requests: list[Request] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=settings.serve_url, timeout=30) as http:
            while not stop.is_set():
                started, error = time.monotonic(), None
                try:
                    response = http.post(
                        f"/v1/models/{spec.name}/invocations", json={"dataframe_records": [row]}
                    )
                    if response.status_code != 200:
                        error = f"{response.status_code} {response.text[:200]}"
                    elif response.json()["predictions"][0]["anomaly_score"] != pytest.approx(expected):
                        error = f"wrong score {response.json()['predictions'][0]}"
                except Exception as exc:  # every failure counts, whatever it raised
                    error = repr(exc)
                requests.append(Request(started, time.monotonic(), error))

    clients = [threading.Thread(target=client) for _ in range(8)]
    loaded = time.monotonic()
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        placed = replicas_by_node(two_nodes)
        # Scaled out: a replica on each node, and each answering (a new one loads its model first).
        while [len(placed["head"]), len(placed["second"])] != [1, 1] or not all(
            answered_by(settings, pids[0]) for pids in placed.values()
        ):
            assert time.monotonic() < deadline, f"not serving from both nodes: {placed}"
            time.sleep(0.5)
            placed = replicas_by_node(two_nodes)
        scaled_out = time.monotonic() - loaded
        time.sleep(3)
        answered_before = sum(r.error is None for r in requests)
        killed = time.monotonic()
        two_nodes.second.kill()
        kill_all(lambda _, p: p.sid == two_nodes.second.pid)
        dead = time.monotonic()
        time.sleep(20)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)

    failed = [r for r in requests if r.error is not None]
    in_flight = [r for r in requests if r.started < dead and r.ended > killed]
    after = [r for r in requests if r.started > dead]
    on_second = answered_by(settings, placed["second"][0])
    print(
        f"serving from both nodes {scaled_out:.1f} s into the load; {len(requests)} requests, "
        f"{on_second:.0f} answered on the second node, {len(in_flight)} in flight at the kill, "
        f"{len(failed)} failed ({sorted({(r.error or '')[:80] for r in failed})}), {len(after)} after it"
    )
    # Only requests in flight while the node was killed failed: at most one per client.
    assert all(r in in_flight for r in failed), [r for r in failed if r not in in_flight][:5]
    assert len(failed) <= len(clients)
    # And serving went on from the head: every later request answered, with the right score.
    assert answered_before > 0 and len(after) > 50 and all(r.error is None for r in after)
    assert replicas_by_node(two_nodes)["head"] and not replicas_by_node(two_nodes)["second"]
