"""Work spread over a Ray cluster of two nodes: a head and a second node joined to it with
``ray start --address``, each a process tree of its own on this machine with its own CPU and a
custom resource. The model search's trials, sent to that cluster, run on both nodes (the node ids
each trial records) and score exactly as the same search in one process.

Unlike the loopback-only head the other tests use, nodes that join each other listen on the
machine's address, as on a real cluster; both are ended when the module's tests are done."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_platform.serving.cluster import SINGLE_NODE_FLAG, free_port, reachable
from ml_platform.serving.processes import kill_all
from ml_platform.settings import REPO_ROOT
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generated_days

from .test_gate import DAYS, SENSORS, SPEC, TODAYS, split, training_set

pytestmark = pytest.mark.integration  # two Ray nodes

# Every port a node takes by default and another node on the same machine would also want.
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)

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


def search_inputs():
    """The sensor use case's search (four trials) on ten generated days."""
    first = TODAYS[0] - dt.timedelta(days=DAYS)
    rows = training_set(
        *generated_days(SensorDataConfig(sensors=SENSORS, days=DAYS, start=first, anchor=first))
    )
    return dataclasses.replace(SPEC, model=dataclasses.replace(SPEC.model, trials=4)), *(
        split(rows, name) for name in ("train", "validation")
    )


def cluster_env() -> dict[str, str]:
    """This process's environment without what points at the session's loopback-only head: its
    RAY_ADDRESS, and the single-node flag an earlier test's driver set here (stay_on_loopback),
    with which a head binds loopback only and no second node can join it."""
    dropped = {"RAY_ADDRESS", SINGLE_NODE_FLAG}
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, "RAY_USAGE_STATS_ENABLED": "0"}


def start_node(command: list[str], log: Path) -> subprocess.Popen:
    ports = [f"{flag}={free_port()}" for flag in NODE_PORT_FLAGS]
    with log.open("ab") as out:  # the child keeps its own copy
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats", *ports]
            + command,
            env=cluster_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("two-nodes")
    port = free_port()
    head = start_node(
        [
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
            "--num-cpus=1",
            '--resources={"head_node": 1}',
        ],
        logs / "head.log",
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
        yield address
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


def test_the_search_runs_on_both_nodes_and_equals_the_search_in_one_process(two_nodes):
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, two_nodes],
        cwd=REPO_ROOT,
        env={**cluster_env(), "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": two_nodes},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = json.loads(done.stdout.strip().splitlines()[-1])
    # Both nodes joined, and each ran at least one of the four trials.
    by_resource = {name: node for node, names in on_ray["nodes"].items() for name in names}
    head, second = by_resource["head_node"], by_resource["second_node"]
    assert head != second
    assert {t["node"] for t in on_ray["trials"]} == {head, second}

    spec, train, valid = search_inputs()
    from ml_platform.training.tune import fit_candidate

    local = fit_candidate(spec, train, valid)
    assert [t.node for t in local.trials] == [""] * 4
    in_process = [(t.params, t.score) for t in local.trials]
    assert [(t["params"], t["score"]) for t in on_ray["trials"]] == in_process
    assert on_ray["chosen"] == local.chosen.params
