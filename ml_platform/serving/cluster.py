"""The Ray cluster that serving runs on: ``RAY_ADDRESS`` when set, else a local head we start.

A local head is started with ``ray start --head --block`` as our child process, so stopping
serving means ending that one process (by its id), never a broad ``ray stop``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import ray

from ml_platform.locks import file_lock
from ml_platform.serving.processes import kill_all, proc
from ml_platform.settings import Settings

NAMESPACE = "ml_platform"


def address_file(settings: Settings) -> Path:
    return settings.run_dir / "ray_address"


def free_port() -> int:
    """A free port on loopback (for ports chosen together, ``free_ports``)."""
    return free_ports(1)[0]


def free_ports(count: int, *, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports, none of ``avoid``. Every socket stays bound until all are
    chosen: the OS hands a port it just released out again (two servers of one Ray node were
    given the same port, and the node did not start)."""
    ports: list[int] = []
    with contextlib.ExitStack() as held:
        while len(ports) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) not in avoid:
                ports.append(port)
    return ports


def reachable(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def cluster_address(settings: Settings) -> str | None:
    """The configured cluster, or the local one ``ml-platform serve`` started, if it is up."""
    if settings.ray_address:
        return settings.ray_address
    path = address_file(settings)
    if path.exists():
        address = path.read_text().strip()
        if address and reachable(address):
            return address
    return None


# Ray Serve 2.60's HAProxy template binds its stats and Prometheus frontends on every interface
# (`bind *:8404`, `bind :9101`), with no setting to change it. Ray starts HAProxy (and each reload)
# as `<binary> -db -f <config> ...`, so a wrapper given as the binary rewrites those binds to
# loopback before running the real HAProxy.
_HAPROXY_WRAPPER = """#!/bin/sh
set -e
previous=""
for argument in "$@"; do
  if [ "$previous" = "-f" ]; then
    sed -i -E 's/^([[:space:]]*bind[[:space:]]+)(\\*|0\\.0\\.0\\.0|::|\\[::\\])?:/\\1127.0.0.1:/' "$argument"
  fi
  previous="$argument"
done
exec {haproxy} "$@"
"""


def loopback_haproxy(settings: Settings) -> Path:
    """An executable that runs HAProxy with every frontend of its config bound to 127.0.0.1."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise RuntimeError("ML_PLATFORM_SERVE_FAST=1 needs HAProxy: make bench-deps installs it")
    wrapper = settings.run_dir / "haproxy-loopback"
    wrapper.write_text(_HAPROXY_WRAPPER.format(haproxy=shlex.quote(haproxy)))
    wrapper.chmod(0o755)
    return wrapper


# Ports a Ray head takes by default whatever the GCS port (dashboard agent, client server,
# dashboard, autoscaler and dashboard metrics).
RAY_FIXED_PORTS = {52365, 10001, 8265, 44217, 44227}

# What a Ray node listens on besides the GCS, each on a fixed or default port unless told. A second
# node on the machine (a demo's head beside the tests', two test workers' heads, a worker node)
# finds them taken: its dashboard agent and client server fail to bind. So every node we start
# gets free ones of its own, the head two more; the two metrics servers are set by environment.
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
)
HEAD_PORT_FLAGS = ("--ray-client-server-port", "--dashboard-port")
HEAD_PORT_ENV = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")


def node_ports(*, head: bool, extra: int = 0) -> tuple[list[str], dict[str, str], list[int]]:
    """``ray start`` flags and, for a head, environment giving a node on this machine free ports of
    its own, and ``extra`` more for the caller: all distinct, none of Ray's fixed ones."""
    flags = NODE_PORT_FLAGS + (HEAD_PORT_FLAGS if head else ())
    names = HEAD_PORT_ENV if head else ()
    ports = free_ports(len(flags) + len(names) + extra, avoid=RAY_FIXED_PORTS)
    env_ports = ports[len(flags) : len(flags) + len(names)]
    return (
        [f"{flag}={port}" for flag, port in zip(flags, ports[: len(flags)], strict=True)],
        {name: str(port) for name, port in zip(names, env_ports, strict=True)},
        ports[len(flags) + len(names) :],
    )


# `ray start --node-ip-address=127.0.0.1` replaces a loopback address by the machine's outward one
# (services.resolve_ip_for_localhost), and every Ray server binds according to that address: the
# GCS, raylet and workers on every interface, the client server (10001) and the agents on it.
# With "Ray clusters" switched off (the setting that is off by default on macOS and Windows) the
# node's address is 127.0.0.1 and each server binds loopback only. A local head is one node: it
# loses nothing, and other nodes cannot join it (for a cluster, set RAY_ADDRESS).
SINGLE_NODE_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_RAY_ENV = {SINGLE_NODE_FLAG: "0", "RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def stay_on_loopback(address: str) -> None:
    """Before a driver connects to ``address``: when it is a local head, keep this process (and
    its children) on loopback too. A driver resolves a loopback address to the machine's outward
    one the same way, and then can neither reach a loopback-only head nor be reached by it."""
    if address.rpartition(":")[0] not in LOOPBACK_HOSTS:
        return
    os.environ[SINGLE_NODE_FLAG] = "0"
    # Ray reads the flag once, when imported; this process may have imported it already.
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def bind_replica_grpc_to_node_address() -> None:
    """In a Serve replica, before Serve starts it: bind the replica's inter-deployment gRPC server
    to the node's address. Ray Serve 2.60 binds it on every interface (``"[::]:0"``, hard-coded in
    ``ray.serve._private.replica``); its callers reach it through the node's address anyway, so on
    a local head (127.0.0.1) it listens on loopback only, and on a cluster node on that node's IP.
    The listening-socket test in test_serving.py fails if a Ray upgrade changes this."""
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "binds_node_address", False):
        return
    node = ray.util.get_node_ip_address()
    host = f"[{node}]" if ":" in node else node

    def bind(server, address: str):
        return original(server, address.replace("[::]", host, 1) if address.startswith("[::]:") else address)

    bind.binds_node_address = True
    replica.add_port_to_grpc_server = bind


def metrics_dir(settings: Settings) -> Path:
    """Where this home's serving replicas keep their Prometheus counters (prometheus_client's
    multiprocess mode), so that whichever replica answers ``/metrics`` reports the sums over all
    of them, replicas since replaced included. Replicas on other nodes count on their own disk."""
    return settings.run_dir / "serve-metrics"


# Serve's fast path: HAProxy forwards to each replica's own port, which the head's Serve controller
# hands out from one range (30000-31000 HTTP, 40000-41000 gRPC by default) and keeps idle for a
# while once released, as HAProxy may still send to it. The controller of another head on this
# machine knows nothing of that, hands out the same ports, and its new replica answered the first
# head's requests (seen with two heads: the other home's models, and its token). So each local head
# claims a block of ports of its own, below the OS's ephemeral ports and above Ray's worker ports.
REPLICA_PORT_BLOCKS = range(20000, 30000, 1000)  # each: 500 HTTP ports, then 500 gRPC ports
REPLICA_PORT_CLAIMS = Path(tempfile.gettempdir()) / "ml_platform-replica-ports"


def _held(claim: Path) -> bool:
    """Whether the process named in ``claim`` ("<pid> <start time>") is alive (and not a later one
    with its pid)."""
    try:
        pid, _, start = claim.read_text().strip().partition(" ")
    except OSError:
        return False
    found = proc(int(pid)) if pid.isdigit() else None
    return found is not None and not found.zombie and found.start == start


def claim_replica_ports(pid: int) -> int:
    """The first block of replica ports no live head holds, now held by process ``pid``."""
    with file_lock(REPLICA_PORT_CLAIMS / ".lock"):
        for base in REPLICA_PORT_BLOCKS:
            if not _held(REPLICA_PORT_CLAIMS / str(base)):
                hold_replica_ports(base, pid)
                return base
    raise RuntimeError(
        f"every block of Serve replica ports is held by a running Ray head ({REPLICA_PORT_CLAIMS}): "
        "stop one (`ml-platform serve` with Ctrl-C), or set RAY_ADDRESS to serve on a running cluster"
    )


def hold_replica_ports(base: int, pid: int) -> None:
    """Record process ``pid`` as the holder of the block at ``base`` (the head, once started)."""
    found = proc(pid)
    (REPLICA_PORT_CLAIMS / str(base)).write_text(f"{pid} {found.start if found else ''}")


def replica_port_env(base: int) -> dict[str, str]:
    """The environment giving a head's Serve controller the replica ports of the block at ``base``."""
    half = REPLICA_PORT_BLOCKS.step // 2
    return {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(base),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(base + half - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(base + half),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(base + 2 * half - 1),
    }


def start_local_cluster(settings: Settings, num_cpus: int = 2, timeout_s: float = 90) -> subprocess.Popen:
    """Start a Ray head bound to 127.0.0.1 (dashboard off) and record its address."""
    shutil.rmtree(metrics_dir(settings), ignore_errors=True)  # a new cluster counts from zero
    # Ray refuses a port of its fixed ones, which the OS may hand out.
    port_flags, port_env, (port, haproxy_stats_port, haproxy_metrics_port) = node_ports(head=True, extra=3)
    address = f"127.0.0.1:{port}"
    ray_bin = Path(sys.executable).with_name("ray")
    command = [
        str(ray_bin),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        *port_flags,
    ]
    env = {**os.environ, **LOOPBACK_RAY_ENV, **port_env}
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    replica_ports = None
    if settings.serve_fast:
        replica_ports = claim_replica_ports(os.getpid())  # until the head is started
        env |= replica_port_env(replica_ports) | {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(loopback_haproxy(settings)),
            # Ports of our own, so that several heads on one machine (a demo and the tests) coexist.
            "RAY_SERVE_HAPROXY_STATS_PORT": str(haproxy_stats_port),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(haproxy_metrics_port),
            # A replica being replaced stays up this long before it stops taking requests. Serve's
            # 30 s default leaves time for an external load balancer to forget it; here the balancer
            # is Serve's own HAProxy, told within a second, and every redeploy (a promotion, a new
            # setting) waited the 30 s (31 s per deployment asset, 62 s of the demo's first answer).
            # serve.run returns after it: a redeploy took 12.3 s with 5 s, 9.3 s with 2 s or 1 s.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": os.environ.get(
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2"
            ),
        }
    # Its own session, so that stopping it can also end the agents Ray leaves behind. The child
    # keeps its own copy of the log's descriptor; ours is closed at once.
    with (settings.run_dir / "ray.log").open("ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    if replica_ports is not None:
        hold_replica_ports(replica_ports, process.pid)
    deadline = time.monotonic() + timeout_s
    while not reachable(address):
        if process.poll() is not None:
            raise RuntimeError(
                f"ray start exited with {process.returncode}; see {settings.run_dir / 'ray.log'}"
            )
        if time.monotonic() > deadline:
            process.terminate()
            raise TimeoutError(f"Ray head did not come up on {address} within {timeout_s:.0f} s")
        time.sleep(0.5)
    address_file(settings).write_text(address)
    return process


def stop_local_cluster(settings: Settings, process: subprocess.Popen, timeout_s: float = 2) -> None:
    """Stop the head we started, then whatever is left of its session. ``ray start --block`` was
    seen to outlast SIGTERM by 30 s and more, so it gets ``timeout_s``: longer than the replicas'
    one-second flush of the prediction log, and nothing else lives only in the cluster (models are
    in the registry, events and labels in the landing zone)."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Ray's dashboard and runtime-env agents outlive `ray start --block` and ignore SIGTERM, and
    # Ray's HAProxy manager starts HAProxy in a process group of its own (then dies, leaving it
    # behind): end everything still in the session the head was started in.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    kill_all(lambda _, p: p.sid == process.pid)
    address_file(settings).unlink(missing_ok=True)


def connect(settings: Settings) -> str:
    """Connect this process to the serving cluster as a Ray driver."""
    address = cluster_address(settings)
    if address is None:
        raise RuntimeError(
            "no Ray cluster for serving: start one with `ml-platform serve`, or set RAY_ADDRESS"
        )
    if not ray.is_initialized():
        stay_on_loopback(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
    return address
