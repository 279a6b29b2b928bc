"""Several local Ray heads on one machine (a demo's beside a second home's, the tests' beside a
user's `ml-platform serve`): each takes ports of its own, so none answers for another."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ml_platform.serving import cluster


@pytest.fixture
def claims(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "REPLICA_PORT_CLAIMS", tmp_path / "claims")
    return tmp_path / "claims"


def test_each_head_claims_replica_ports_no_live_head_holds(claims):
    first = cluster.claim_replica_ports(os.getpid())
    second = cluster.claim_replica_ports(os.getpid())  # the first holder is alive
    assert (first, second) == (cluster.REPLICA_PORT_BLOCKS[0], cluster.REPLICA_PORT_BLOCKS[1])
    ranges = [cluster.replica_port_env(base) for base in (first, second)]
    ports = [
        set(
            range(
                int(env[f"RAY_SERVE_DIRECT_INGRESS_MIN_{p}_PORT"]),
                int(env[f"RAY_SERVE_DIRECT_INGRESS_MAX_{p}_PORT"]) + 1,
            )
        )
        for env in ranges
        for p in ("HTTP", "GRPC")
    ]
    # Four ranges (HTTP and gRPC of each head), none overlapping, below the OS's ephemeral ports.
    assert sum(len(p) for p in ports) == len(set().union(*ports)) and max(set().union(*ports)) < 32768


def test_a_block_whose_head_ended_is_claimed_again(claims):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert cluster.claim_replica_ports(ended.pid) == cluster.REPLICA_PORT_BLOCKS[0]
    assert cluster.claim_replica_ports(os.getpid()) == cluster.REPLICA_PORT_BLOCKS[0]
    # The holder's pid alone is not enough: a later process with the same pid is not the holder.
    (claims / str(cluster.REPLICA_PORT_BLOCKS[1])).write_text(f"{os.getpid()} 1")
    assert cluster.claim_replica_ports(os.getpid()) == cluster.REPLICA_PORT_BLOCKS[1]


def test_every_block_held_is_a_clear_error(claims, monkeypatch):
    monkeypatch.setattr(cluster, "REPLICA_PORT_BLOCKS", range(20000, 22000, 1000))
    for _ in range(2):
        cluster.claim_replica_ports(os.getpid())
    with pytest.raises(RuntimeError, match=re.escape(str(claims)) + ".*RAY_ADDRESS"):
        cluster.claim_replica_ports(os.getpid())


def test_a_node_gets_a_free_port_for_each_server_it_runs():
    head_flags, head_env, extra = cluster.node_ports(head=True, extra=3)
    worker_flags, worker_env, _ = cluster.node_ports(head=False)
    assert {f.split("=")[0] for f in head_flags} == set(cluster.NODE_PORT_FLAGS) | set(
        cluster.HEAD_PORT_FLAGS
    )
    assert set(head_env) == set(cluster.HEAD_PORT_ENV) and len(extra) == 3
    assert {f.split("=")[0] for f in worker_flags} == set(cluster.NODE_PORT_FLAGS) and worker_env == {}
    ports = [int(f.split("=")[1]) for f in head_flags] + [int(v) for v in head_env.values()] + extra
    assert len(set(ports)) == len(ports) and not set(ports) & cluster.RAY_FIXED_PORTS


def test_free_ports_are_distinct_however_many():
    """The OS hands a port it just released out again: ports chosen one after the other repeat."""
    ports = cluster.free_ports(300, avoid={cluster.free_port()})
    assert len(set(ports)) == 300
