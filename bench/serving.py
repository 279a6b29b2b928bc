"""Benchmark: our Ray Serve app against ``mlflow models serve`` and a minimal FastAPI app.

What is compared, all serving the same registered ``sensor_anomaly`` version (trained in the same
run through the real pipeline: generated readings -> Dagster ingest, features, training set,
model, evaluation, champion; in a temporary home under ``/tmp/ml_platform_bench/serving``):

* ours: ``ml_platform.serving`` on a local Ray head of our own (``start_local_cluster``), deployed
  with ``deploy(settings)``, reached at its public address ``127.0.0.1:<port>/invocations`` (the
  MLflow scoring protocol). Measured in the default mode (Ray Serve's Python proxy, 1 replica) and
  in fast mode (``ML_PLATFORM_SERVE_FAST=1``: HAProxy ingress and the throughput-optimized data
  path) with 1 and 2 replicas; the better fast configuration (by throughput at 32 connections) is
  "ours", the proxy mode is printed as separate ``*_proxy_mode`` figures.
* ``mlflow models serve -m models:/sensor_anomaly/<v> --env-manager local -w N`` against the same
  registry, N = 1 and 2; the better (by throughput at 32 connections) is the peer.
* ``bench/_fastapi_peer.py``: FastAPI under uvicorn (1 and 2 workers, access log off), the model loaded
  in-process with ``load_verified_model``, the task's ``scores`` called per request.
* ours over the Open Inference Protocol v2, on each fast configuration while it runs: the same row
  as one FP64 tensor of shape [1] per feature, in the binary tensor extension POSTed to
  ``/v2/models/sensor_anomaly/infer`` (the body tritonclient.http sends by default; wrk), and as a
  ``ModelInfer`` call with raw contents over gRPC (h2load, HTTP/2 without TLS, one stream per
  connection; a gRPC error still answers HTTP 200, so calls answered OK are counted from our
  ``/metrics``). Figures ``*_v2_binary`` and ``*_grpc`` compare the better configuration (by
  throughput at 32 connections) with the same peers, which answer the MLflow protocol.

Request: one full feature row (the model's 15 features, the newest row of the features table),
``{"dataframe_records": [row]}`` POSTed to ``/invocations``. Before measuring, every server is
checked on that row and on a few more (one of them anomalous): ours and the FastAPI peer must return
the in-process task scores to 1e-9. ``mlflow models serve`` runs the registered pyfunc, whose
sklearn flavour calls ``IsolationForest.predict`` (the same ``decision_function`` plus a threshold)
and so answers labels: it must answer -1 exactly where the score is above 0. During the load,
wrk's script checks every 2xx answer the same way (the score within 1e-9, mlflow's label, the v2
binary answer's raw FP64 score); one wrong answer stops the benchmark naming the server.

How: wrk (LuaJIT script for the POST body, status counting and a JSON summary), closed loop, 1 and
32 connections, each measured for 20 s after a 5 s warm-up; one server runs at a time: start,
check, measure, stop, next. The machine is shared: other tenants' work shows up as CPU time that is
neither the server's nor wrk's (printed per run), so each server gets two rounds of both loads and
keeps, per load, its least disturbed round (highest throughput at 32, lowest p50 at 1), the same
rule for every server. ``--quick``: one round of 5 s after a 2 s warm-up. CPUs: the
servers may use both cores (``--server-cpus 0,1``; the Ray head and so all its workers, mlflow's and
uvicorn's workers are started under that affinity), wrk is pinned to core 1 (``--client-cpus 1``),
so on this 2-core machine the load generator shares a core with the servers; its CPU use is
printed per run. ``OMP_NUM_THREADS=1`` for every server (ours sets it for its replicas anyway).

Reported: throughput (2xx answers per second), p50 and p99 latency (ms, wrk's per-request
latency), and requests not answered 2xx (non-2xx status, timeouts, socket errors). Progress and a
table of every configuration go to stderr; on stdout one JSON line per figure (``ratio`` is ours /
peer; ``better`` says which direction wins; ``met`` is null where there is no target).

    .venv/bin/python bench/serving.py [--quick]
    .venv/bin/python bench/serving.py --profile fast|proxy [--quick]   # where ours spends a request
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ml_platform.serving.processes import Proc, descendants, kill_all, processes  # stdlib only

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
WORK_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench" / "serving"
USE_CASE = "sensor_anomaly"
DAYS = 10
SENSORS = 6
CONCURRENCY = (1, 32)
TOLERANCE = 1e-9
START_TIMEOUT_S = 180
HAPROXY_DIR = Path("/tmp/haproxy-serve")  # Ray's default; it keeps each node's files in a subfolder

# Usage pings off, one OpenMP thread per process for every server; set before anything imports them.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["OMP_NUM_THREADS"] = "1"


def log(message: str) -> None:
    print(f"[serving] {message}", file=sys.stderr, flush=True)


# --- the model -----------------------------------------------------------------------------------


@dataclass
class Model:
    version: str
    rows: list[dict]  # rows[0] is the one the load uses
    scores: list[float]  # in-process task scores of rows


def build_model(home: Path) -> Model:
    """Readings -> ingest -> features -> training set -> model -> evaluation -> champion, for real."""
    import dagster as dg

    from ml_platform.definitions import build_definitions
    from ml_platform.settings import load_settings
    from ml_platform.tasks import task_of
    from ml_platform.training import registry
    from ml_platform.usecases import get_use_case
    from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, write_sensor_data

    settings = load_settings()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS)
    write_sensor_data(
        settings.landing_dir_for(USE_CASE), SensorDataConfig(sensors=SENSORS, days=DAYS, start=first)
    )

    def materialize(names: list[str], **kwargs) -> None:
        keys = [dg.AssetKey([USE_CASE, n]) for n in names]
        dg.materialize(defs.assets, selection=keys, instance=instance, resources=defs.resources, **kwargs)

    started = time.perf_counter()
    last = first + dt.timedelta(days=DAYS - 1)
    range_tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    materialize(
        ["raw_readings", "readings_quarantine", "raw_labels", "stg_readings", "features"], tags=range_tags
    )
    materialize(["online_features", "training_set", "model", "model_evaluation", "champion"])
    ref = registry.alias_ref(settings, USE_CASE, registry.CHAMPION)
    if ref is None:
        raise RuntimeError("the pipeline registered no champion")
    log(f"trained and registered {USE_CASE} v{ref.version} in {time.perf_counter() - started:.0f} s")

    import pandas as pd

    names = get_use_case(USE_CASE).features.feature_names()
    with defs.resources["warehouse"].get_connection() as conn:
        query = f"SELECT * FROM {USE_CASE}.features ORDER BY event_timestamp DESC, sensor_id LIMIT 5"
        rows = conn.sql(query).pl().select(names).fill_null(0.0).to_dicts()
    rows = [{n: float(v) for n, v in row.items()} for row in rows]
    # A jump of the value and the vibration (and so of the features that follow them): the check
    # then sees normal rows and an anomaly.
    jump = {n: rows[0][n] + 30.0 for n in ("value", "value_diff_mean_12", "value_diff_mean_72")}
    jump |= {n: rows[0][n] * 4.0 for n in ("vibration", "vibration_max_1h")}
    jump |= {n: rows[0][n] + 10.0 for n in names if "_zscore_" in n}
    rows.append({**rows[0], **jump})
    task = task_of(get_use_case(USE_CASE))
    pipeline = registry.load_verified_model(ref, home / "bench_cache", task)
    scores = task.scores(pipeline, pd.DataFrame.from_records(rows, columns=names).astype(float))
    if not (scores > 0).any() or not (scores <= 0).any():
        log(f"warning: the check rows are not both normal and anomalous (scores {scores.round(3)})")
    return Model(ref.version, rows, [float(s) for s in scores])


# --- processes -----------------------------------------------------------------------------------


def cpu_list(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run the block (and every process it starts) on ``cpus``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def family(root: int) -> dict[int, Proc]:
    """``root``, its live descendants and every process of its session (a server we started in a
    session of its own: ``root`` is the session's id)."""
    table = processes()
    found = {pid: p for pid, p in table.items() if (p.sid == root or pid == root) and not p.zombie}
    return found | descendants(root, table)


def family_cpu_s(root: int) -> float:
    return sum(p.ticks for p in family(root).values()) / os.sysconf("SC_CLK_TCK")


def kill_leftovers(root: int, known: dict[int, Proc]) -> None:
    """SIGKILL what is left of a server we started in its own session (``root`` is the session id):
    the processes seen before stopping it, if still the same, and whatever is still in the session
    (Ray's HAProxy manager starts a new HAProxy, in a process group of its own, while replicas stop;
    the manager then dies and leaves it behind)."""
    if kill_all(lambda pid, p: p.sid == root or (pid in known and known[pid].start == p.start)):
        log(f"warning: processes of session {root} still alive after SIGKILL")


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """Stop a server we started in its own session: SIGTERM, then SIGKILL whatever is left of it."""
    known = family(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    kill_leftovers(process.pid, known)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the figures: what the pipeline (and dbt under it) prints goes to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def wait_for(url: str, process: subprocess.Popen, log_file: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_file}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {START_TIMEOUT_S} s; see {log_file}")


# --- the servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    kind: str  # ours | mlflow | fastapi
    label: str
    fast: bool = False
    replicas: int = 1
    workers: int = 1
    protocol: str = "invocations"  # invocations | v2_binary | grpc (ours only)

    def over(self, protocol: str) -> Server:
        """The same server measured over another protocol."""
        return dataclasses.replace(
            self, label=f"{self.label}, {PROTOCOL_LABELS[protocol]}", protocol=protocol
        )


SERVERS = (
    Server("ours", "ours proxy mode, 1 replica", fast=False, replicas=1),
    Server("ours", "ours fast mode, 1 replica", fast=True, replicas=1),
    Server("ours", "ours fast mode, 2 replicas", fast=True, replicas=2),
    Server("mlflow", "mlflow models serve -w 1", workers=1),
    Server("mlflow", "mlflow models serve -w 2", workers=2),
    Server("fastapi", "fastapi (uvicorn, 1 worker)", workers=1),
    Server("fastapi", "fastapi (uvicorn, 2 workers)", workers=2),
)
# Ours in fast mode is measured over the Open Inference Protocol v2 too, on the same running server:
# the binary tensor extension over HTTP (wrk) and gRPC (h2load), the same row as FP64 tensors.
PROTOCOL_LABELS = {"v2_binary": "v2 binary", "grpc": "v2 gRPC"}
V2_PATH = f"/v2/models/{USE_CASE}/infer"
V2_HEADER = "Inference-Header-Content-Length"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


@contextlib.contextmanager
def run_ours(server: Server, model: Model, cpus: set[int]) -> Iterator[tuple[str, int]]:
    from ml_platform.serving.cluster import free_port, start_local_cluster, stop_local_cluster
    from ml_platform.settings import load_settings

    port = free_port()
    os.environ["ML_PLATFORM_SERVE_PORT"] = str(port)
    os.environ["ML_PLATFORM_GRPC_PORT"] = str(free_port())
    os.environ["ML_PLATFORM_SERVE_FAST"] = "1" if server.fast else "0"  # read by the Ray head at start
    os.environ["ML_PLATFORM_SERVE_REPLICAS"] = str(server.replicas)
    if server.fast:
        # HAProxy's stats and metrics ports of our own (Ray's defaults are fixed and bound on all
        # interfaces); its files go to Ray's default directory, one per Ray node, removed below.
        os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
        os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    settings = load_settings()
    with pinned(cpus):
        head = start_local_cluster(settings)
    node_id = ""
    try:
        log(f"Ray head pid {head.pid}; deploying ({server.label}) on port {port}")
        # Deployed from a child driver that exits: the Serve app lives on in the cluster, and this
        # process holds no Ray connection while the load runs.
        deployed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--deploy", model.version],
            check=True,
            timeout=START_TIMEOUT_S,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        node_id = deployed.stdout.strip().splitlines()[-1]
        yield f"http://127.0.0.1:{port}", head.pid
    finally:
        known = family(head.pid)
        stop_local_cluster(settings, head)
        kill_leftovers(head.pid, known)
        if node_id:
            shutil.rmtree(HAPROXY_DIR / node_id, ignore_errors=True)


def deploy_child(version: str) -> None:
    """``--deploy``: deploy the champion to the running local cluster and wait until it answers."""
    import ray

    from ml_platform.serving.deploy import deploy, wait_until_serving
    from ml_platform.settings import load_settings

    settings = load_settings()
    deploy(settings)
    wait_until_serving(settings, USE_CASE, version, timeout_s=START_TIMEOUT_S)
    print(ray.get_runtime_context().get_node_id(), flush=True)  # names HAProxy's folder
    ray.shutdown()


@contextlib.contextmanager
def run_process(
    command: list[str], env: dict[str, str], name: str, ready_path: str
) -> Iterator[tuple[str, int]]:
    from ml_platform.serving.cluster import free_port

    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    log_file = WORK_DIR / f"{name}.log"
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        log(f"{name} pid {process.pid} on port {port}")
        wait_for(url + ready_path, process, log_file)
        yield url, process.pid
    finally:
        stop_process(process)


def running(server: Server, model: Model, cpus: set[int]):
    if server.kind == "ours":
        return run_ours(server, model, cpus)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    taskset = ["taskset", "-c", cpu_list(cpus)]
    if server.kind == "mlflow":
        command = [
            *taskset,
            str(VENV_BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{USE_CASE}/{model.version}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            "{port}",
            "-w",
            str(server.workers),
        ]
        return run_process(command, env, f"mlflow-w{server.workers}", "/ping")
    command = [
        *taskset,
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH_DIR),
        "_fastapi_peer:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(server.workers),
        "--no-access-log",
    ]
    return run_process(
        command, {**env, "BENCH_MODEL_VERSION": model.version}, f"fastapi-w{server.workers}", "/ping"
    )


def body_of(rows: list[dict]) -> str:
    return json.dumps({"dataframe_records": rows})


def check_answers(server: Server, url: str, model: Model) -> None:
    """The server's answers for the check rows, one request per row and all in one request."""
    import httpx

    def answers(rows: list[dict]) -> list:
        response = httpx.post(
            f"{url}/invocations",
            content=body_of(rows),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{server.label}: {response.status_code} {response.text[:300]}")
        predictions = response.json()["predictions"]
        return [p["anomaly_score"] if isinstance(p, dict) else p for p in predictions]

    single = [answers([row])[0] for row in model.rows]
    together = answers(model.rows)
    if server.kind == "mlflow":  # the pyfunc answers IsolationForest.predict: -1 anomaly, 1 normal
        expected = [-1 if s > 0 else 1 for s in model.scores]
        ok = single == expected and together == expected
        what = f"labels {single} (expected {expected} from scores {[round(s, 4) for s in model.scores]})"
    else:
        ok = len(single) == len(together) == len(model.scores) and all(
            abs(a - b) <= TOLERANCE
            for got in (single, together)
            for a, b in zip(got, model.scores, strict=True)
        )
        what = f"scores {[round(s, 6) for s in single]}"
    if not ok:
        raise RuntimeError(f"{server.label} disagrees with the in-process model: {what}, got {together}")
    log(f"{server.label}: answers agree with the in-process model ({what})")


def v2_inputs(row: dict, client_module) -> list:
    """The row as one FP64 tensor of shape [1] per feature, for tritonclient's http or grpc module
    (tritonclient.http sends them in the binary extension by default)."""
    import numpy as np

    tensors = []
    for name, value in row.items():
        tensor = client_module.InferInput(name, [1], "FP64")
        tensor.set_data_from_numpy(np.array([value], dtype=np.float64))
        tensors.append(tensor)
    return tensors


def v2_binary_request(row: dict) -> tuple[bytes, int]:
    """The v2 request body in the binary tensor extension, and its JSON header's length."""
    import tritonclient.http as triton

    return triton.InferenceServerClient.generate_request_body(v2_inputs(row, triton))


def grpc_message(row: dict) -> bytes:
    """ModelInferRequest with the row as raw FP64 contents, serialized."""
    import struct

    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=USE_CASE)
    for name, value in row.items():
        request.inputs.add(name=name, datatype="FP64", shape=[1])
        request.raw_input_contents.append(struct.pack("<d", value))
    return request.SerializeToString()


def grpc_address() -> str:
    """Where ours serves gRPC (the port ``run_ours`` chose)."""
    return f"127.0.0.1:{os.environ['ML_PLATFORM_GRPC_PORT']}"


def check_v2_answers(server: Server, url: str, model: Model) -> None:
    """The exact request bytes the load sends, answered with the in-process model's score."""
    import grpc
    import httpx
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.grpc import service_pb2

    if server.protocol == "v2_binary":
        body, header_length = v2_binary_request(model.rows[0])
        response = httpx.post(
            f"{url}{V2_PATH}",
            content=body,
            headers={
                "Content-Type": "application/octet-stream",
                V2_HEADER: str(header_length),
            },
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{server.label}: {response.status_code} {response.text[:300]}")
        answer_length = response.headers.get(V2_HEADER)
        result = triton.InferenceServerClient.parse_response_body(
            response.content, header_length=int(answer_length) if answer_length else None
        )
        score = float(result.as_numpy("anomaly_score")[0])
    else:
        with grpc.insecure_channel(grpc_address()) as channel:
            call = channel.unary_unary(GRPC_PATH)  # bytes in, bytes out: exactly what h2load sends
            answer = service_pb2.ModelInferResponse.FromString(call(grpc_message(model.rows[0]), timeout=30))
        names = [output.name for output in answer.outputs]
        raw = answer.raw_output_contents[names.index("anomaly_score")]
        score = float(np.frombuffer(raw, dtype="<f8")[0])
    if abs(score - model.scores[0]) > TOLERANCE:
        raise RuntimeError(
            f"{server.label} disagrees with the in-process model: {score} != {model.scores[0]}"
        )
    log(f"{server.label}: the load's request answers the in-process score ({score:.6f})")


# --- load ----------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
%(headers)s
wrk.body = %(body)s

-- Every 2xx answer is checked against the in-process model while the load runs: the score (ours,
-- FastAPI), the label IsolationForest.predict gives (mlflow: -1 anomaly, 1 normal), or in the v2
-- binary extension the first output's raw FP64 after the JSON header.
local expected = %(expected)s
local expected_label = %(expected_label)d
local tolerance = %(tolerance)s
local binary = %(binary)s
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  wrong = 0
end

local function f64le(s, i)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(s, i, i + 7)
  if not b8 then return nil end
  local sign = b8 > 127 and -1 or 1
  local exponent = (b8 %% 128) * 16 + math.floor(b7 / 16)
  local mantissa = ((((((b7 %% 16) * 256 + b6) * 256 + b5) * 256 + b4) * 256 + b3) * 256 + b2) * 256 + b1
  if exponent == 0 then return sign * mantissa * 2 ^ -1074 end
  return sign * (1 + mantissa / 2 ^ 52) * 2 ^ (exponent - 1023)
end

local function header_length(headers)
  for name, value in pairs(headers) do
    if string.lower(name) == "inference-header-content-length" then return tonumber(value) end
  end
end

local function right(headers, body)
  if binary then
    local n = header_length(headers)
    local first = n and string.match(string.sub(body, 1, n), '"outputs": *%%[ *{ *"name": *"([^"]+)"')
    local score = first == "anomaly_score" and f64le(body, n + 1)
    return score and math.abs(score - expected) <= tolerance
  end
  local score = string.match(body, '"anomaly_score": *(-?[%%d%%.eE+-]+)')
  if score then return math.abs(tonumber(score) - expected) <= tolerance end
  local label = string.match(body, '"predictions": *%%[ *(-?%%d+) *%%]')
  return label ~= nil and tonumber(label) == expected_label
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not right(headers, body) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local bad, wrongs = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    wrongs = wrongs + thread:get("wrong")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%.0f, "p99_us": %%.0f, ' ..
    '"non_2xx_status": %%d, "wrong_answers": %%d, "socket_errors": %%d, "timeouts": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    bad, wrongs, e.connect + e.read + e.write, e.timeout))
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # non-2xx answers, timeouts and socket errors
    server_cpus: float  # cores the server's processes used
    wrk_cpus: float  # cores the load generator used
    busy_cpus: float  # cores busy on the whole machine (the server, wrk and anyone else)
    load_avg: float = field(default_factory=lambda: os.getloadavg()[0])


def cpu_busy_jiffies() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class CpuUse:
    """CPU seconds of one load: the server's process tree, the load generator, the whole machine."""

    server_s: float
    client_s: float
    busy_cores: float  # cores busy on average over the load, whoever used them

    def cores(self, elapsed: float) -> dict[str, float]:
        """``Load``'s CPU fields."""
        return {
            "server_cpus": self.server_s / elapsed,
            "wrk_cpus": self.client_s / elapsed,
            "busy_cpus": self.busy_cores,
        }


def run_load_generator(
    command: list[str], root: int, seconds: float
) -> tuple[subprocess.CompletedProcess, CpuUse]:
    """Run wrk or h2load to its end, measuring whose CPU the load used."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, total = cpu_busy_jiffies()
    server_cpu = family_cpu_s(root)
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    busy_after, total_after = cpu_busy_jiffies()
    server_cpu = family_cpu_s(root) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    busy_cores = (busy_after - busy) / max(1, total_after - total) * os.cpu_count()
    return result, CpuUse(server_cpu, client, busy_cores)


def wrk_script(path: Path, headers: dict[str, str], body: bytes, score: float, binary: bool = False) -> Path:
    """wrk's Lua script POSTing ``body`` (every byte a decimal escape, so binary bodies pass) and
    checking every 2xx answer against ``score``, the in-process model's for that body."""
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    values = {
        "headers": lines,
        "body": '"' + "".join(f"\\{b:03d}" for b in body) + '"',
        "expected": repr(score),
        "expected_label": -1 if score > 0 else 1,
        "tolerance": repr(TOLERANCE),
        "binary": "true" if binary else "false",
    }
    path.write_text(WRK_SCRIPT % values)
    return path


def run_wrk(target: str, root: int, script: Path, connections: int, seconds: float, cpus: set[int]) -> Load:
    threads = max(1, min(connections, len(cpus)))
    command = [
        *("taskset", "-c", cpu_list(cpus)),
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s"),
        *("-s", str(script), target),
    ]
    result, cpu = run_load_generator(command, root, seconds)
    lines = [line for line in result.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}")
    summary = json.loads(lines[0].removeprefix("WRK_RESULT "))
    if summary["wrong_answers"]:
        raise RuntimeError(
            f"{target}: {summary['wrong_answers']} of {summary['requests']} answers under load differ "
            "from the in-process model's"
        )
    elapsed = summary["duration_us"] / 1e6
    ok = summary["requests"] - summary["non_2xx_status"]
    return Load(
        rps=ok / elapsed,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        non_2xx=summary["non_2xx_status"] + summary["socket_errors"] + summary["timeouts"],
        **cpu.cores(elapsed),
    )


def grpc_answered(url: str) -> tuple[float, float]:
    """Our /metrics: ModelInfer calls answered OK and answered with an error so far (the whole service)."""
    import httpx

    ok = errors = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if 'route="grpc_infer"' not in line or line.startswith("#"):
            continue
        if line.startswith("ml_platform_requests_total{") and 'status="200"' in line:
            ok += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ml_platform_errors_total{"):
            errors += float(line.rsplit(" ", 1)[1])
    return ok, errors


def run_h2load(url: str, root: int, body: Path, connections: int, seconds: float, cpus: set[int]) -> Load:
    """h2load over HTTP/2 without TLS, one stream at a time per connection (a closed loop like wrk's).
    A gRPC error still answers HTTP 200, so what was answered OK is read from our /metrics."""
    import re

    log_file = WORK_DIR / "h2load_requests.tsv"  # per request: start (us), HTTP status, duration (us)
    threads = max(1, min(connections, len(cpus)))
    command = [
        *("taskset", "-c", cpu_list(cpus)),
        *("h2load", f"-t{threads}", f"-c{connections}", "-m1", f"-D{seconds:.0f}"),
        *("-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body)),
        f"--log-file={log_file}",
        f"http://{grpc_address()}{GRPC_PATH}",
    ]
    answered = grpc_answered(url)
    result, cpu = run_load_generator(command, root, seconds)
    finished = re.search(r"finished in ([\d.]+)(ms|s)", result.stdout)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", result.stdout)
    if result.returncode != 0 or not finished or not counts:
        raise RuntimeError(
            f"h2load failed ({result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}"
        )
    ok, errors = (now - then for now, then in zip(grpc_answered(url), answered, strict=True))
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    durations = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line)
    return Load(
        rps=ok / elapsed,
        p50_ms=durations[len(durations) // 2] / 1000,
        p99_ms=durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000,
        non_2xx=int(errors) + sum(int(n) for n in counts.groups()[1:]),
        **cpu.cores(elapsed),
    )


def load_of(server: Server, url: str, root: int, setup: Setup):
    """A function running one load (connections, seconds) against ``server`` over its protocol."""
    if server.protocol == "grpc":
        return lambda c, s: run_h2load(url, root, setup.grpc_body, c, s, setup.client_cpus)
    script, path = (setup.script, "/invocations")
    if server.protocol == "v2_binary":
        script, path = setup.v2_script, V2_PATH
    return lambda c, s: run_wrk(f"{url}{path}", root, script, c, s, setup.client_cpus)


def measure(server: Server, url: str, root: int, setup: Setup, rounds: int) -> dict[int, Load]:
    """Each load after its warm-up, ``rounds`` times in turn; per load the least disturbed round
    (highest throughput at 32 connections, lowest p50 at 1) is kept."""
    runs: dict[int, list[Load]] = {c: [] for c in CONCURRENCY}
    run_load = load_of(server, url, root, setup)
    for round_ in range(rounds):
        for connections in CONCURRENCY:
            if round_ == 0:
                run_load(connections, setup.warmup_s)
            load = run_load(connections, setup.seconds)
            runs[connections].append(load)
            log(
                f"{server.label} c{connections}: {load.rps:.1f} rps, p50 {load.p50_ms:.2f} ms, "
                f"p99 {load.p99_ms:.2f} ms, not 2xx {load.non_2xx} (cores used: server "
                f"{load.server_cpus:.2f}, wrk {load.wrk_cpus:.2f}, whole machine {load.busy_cpus:.2f}; "
                f"load avg {load.load_avg:.2f})"
            )
    return {
        c: max(loads, key=lambda load: load.rps) if c > 1 else min(loads, key=lambda load: load.p50_ms)
        for c, loads in runs.items()
    }


# --- figures -------------------------------------------------------------------------------------


def figure(
    name: str,
    ours: tuple[str, Load],
    peer_name: str,
    peer: tuple[str, Load],
    attr: str,
    better: str,
    target: float | None,
) -> dict:
    ours_value, peer_value = getattr(ours[1], attr), getattr(peer[1], attr)
    ratio = ours_value / peer_value
    met = None if target is None else (ratio >= target if better == "higher" else ratio <= target)
    return {
        "bench": "serving",
        "figure": name,
        "ours": round(ours_value, 2),
        "peer": peer_name,
        "peer_value": round(peer_value, 2),
        "ratio": round(ratio, 2),
        "better": better,
        "target": target,
        "met": met,
        "ours_config": ours[0],
        "peer_config": peer[0],
        "ours_non_2xx": ours[1].non_2xx,
        "peer_non_2xx": peer[1].non_2xx,
    }


def best(results: dict[Server, dict[int, Load]], wanted) -> tuple[Server, dict[int, Load]]:
    """The configuration with the highest throughput at 32 connections among ``wanted``."""
    return max(((s, r) for s, r in results.items() if wanted(s)), key=lambda item: item[1][32].rps)


def figures(results: dict[Server, dict[int, Load]]) -> list[dict]:
    fast, fast_loads = best(results, lambda s: s.kind == "ours" and s.fast and s.protocol == "invocations")
    proxy, proxy_loads = best(results, lambda s: s.kind == "ours" and not s.fast)
    mlflow, mlflow_loads = best(results, lambda s: s.kind == "mlflow")
    fastapi, fastapi_loads = best(results, lambda s: s.kind == "fastapi")
    log(f'"ours" is {fast.label}; the mlflow peer is {mlflow.label}')
    specs = [  # name, connections, attr, better, peer, target
        ("throughput_rps_c32", 32, "rps", "higher", "mlflow", 5.0),
        ("throughput_rps_c32", 32, "rps", "higher", "fastapi", 5.0),
        ("p99_ms_c32", 32, "p99_ms", "lower", "mlflow", 1.0),
        ("p99_ms_c32", 32, "p99_ms", "lower", "fastapi", 1.0),
        ("p50_ms_c1", 1, "p50_ms", "lower", "fastapi", 1.5),
        ("p50_ms_c1", 1, "p50_ms", "lower", "mlflow", None),
    ]
    peers = {
        "mlflow": ("mlflow models serve", mlflow, mlflow_loads),
        "fastapi": ("fastapi", fastapi, fastapi_loads),
    }
    lines = []
    for suffix, (server, loads) in (("", (fast, fast_loads)), ("_proxy_mode", (proxy, proxy_loads))):
        for name, connections, attr, better, peer, target in specs:
            peer_name, peer_server, peer_loads = peers[peer]
            lines.append(
                figure(
                    name + suffix,
                    (server.label, loads[connections]),
                    peer_name,
                    (peer_server.label, peer_loads[connections]),
                    attr,
                    better,
                    target if not suffix else None,
                )
            )
    # The v2 protocols against the same peers (which answer the MLflow protocol): no targets.
    for protocol in PROTOCOL_LABELS:
        server, loads = best(results, lambda s, p=protocol: s.protocol == p)
        for name, connections, attr, better, peer, _ in specs:
            peer_name, peer_server, peer_loads = peers[peer]
            lines.append(
                figure(
                    f"{name}_{protocol}",
                    (server.label, loads[connections]),
                    peer_name,
                    (peer_server.label, peer_loads[connections]),
                    attr,
                    better,
                    None,
                )
            )
    return lines


def table(results: dict[Server, dict[int, Load]]) -> None:
    """Every configuration; the last three columns are cores used: by the server, by wrk, by all."""
    head = f"{'configuration':<40} {'c':>3} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'not 2xx':>7}"
    log(f"{head} {'server':>6} {'wrk':>5} {'all':>5}")
    for server, loads in results.items():
        for connections, load in loads.items():
            log(
                f"{server.label:<40} {connections:>3} {load.rps:>8.1f} {load.p50_ms:>8.2f} "
                f"{load.p99_ms:>8.2f} {load.non_2xx:>7} {load.server_cpus:>6.2f} {load.wrk_cpus:>5.2f} "
                f"{load.busy_cpus:>5.2f}"
            )


# --- main ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    model: Model
    script: Path  # wrk: the MLflow scoring protocol's JSON on /invocations
    v2_script: Path  # wrk: the v2 binary tensor extension
    grpc_body: Path  # h2load: one ModelInfer call
    warmup_s: float
    seconds: float
    rounds: int
    server_cpus: set[int]
    client_cpus: set[int]


def prepare(args: argparse.Namespace) -> Setup:
    """A fresh home with a champion trained by the pipeline, and wrk's script for its request."""
    warmup_s, seconds, rounds = (2, 5, 1) if args.quick else (5, 20, 2)
    server_cpus = {int(c) for c in args.server_cpus.split(",")}
    client_cpus = {int(c) for c in args.client_cpus.split(",")}
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not installed: make bench-deps (Debian's wrk and nghttp2-client)"
        )
    home = WORK_DIR / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ.pop("RAY_ADDRESS", None)  # our own local head, never a configured cluster
    os.environ["ML_PLATFORM_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    log(f"home {home}; servers on CPUs {cpu_list(server_cpus)}, wrk on CPUs {cpu_list(client_cpus)}")
    loads = ", ".join(f"c{c}" for c in CONCURRENCY)
    log(f"per server: {rounds} round(s) of {loads}, {seconds} s each, after a {warmup_s} s warm-up of each")
    with stdout_to_stderr():
        model = build_model(home)
    script = wrk_script(
        WORK_DIR / "wrk_invocations.lua",
        {"Content-Type": "application/json"},
        body_of(model.rows[:1]).encode(),
        model.scores[0],
    )
    log(f"request body: {body_of(model.rows[:1])}")
    body, header_length = v2_binary_request(model.rows[0])
    v2_script = wrk_script(
        WORK_DIR / "wrk_v2_binary.lua",
        {"Content-Type": "application/octet-stream", V2_HEADER: str(header_length)},
        body,
        model.scores[0],
        binary=True,
    )
    message = grpc_message(model.rows[0])
    grpc_body = WORK_DIR / "grpc_model_infer.bin"  # a gRPC frame: not compressed, length, message
    grpc_body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    return Setup(model, script, v2_script, grpc_body, warmup_s, seconds, rounds, server_cpus, client_cpus)


def benchmark(args: argparse.Namespace) -> None:
    setup = prepare(args)
    results: dict[Server, dict[int, Load]] = {}
    for server in SERVERS:
        log(f"--- {server.label}")
        started = time.perf_counter()
        with running(server, setup.model, setup.server_cpus) as (url, root):
            log(f"{server.label} answering after {time.perf_counter() - started:.0f} s")
            check_answers(server, url, setup.model)
            results[server] = measure(server, url, root, setup, setup.rounds)
            if server.kind == "ours" and server.fast:
                for protocol in PROTOCOL_LABELS:
                    variant = server.over(protocol)
                    check_v2_answers(variant, url, setup.model)
                    results[variant] = measure(variant, url, root, setup, setup.rounds)
    table(results)
    for line in figures(results):
        print(json.dumps(line), flush=True)


# --- profile: where a request's time goes in ours ------------------------------------------------

# A sample's category: the first pattern (in this order) found in any frame of its stack.
CATEGORIES = (
    ("model: sklearn pipeline (impute, scale, IsolationForest)", ("(sklearn/", "(joblib/")),
    ("pandas frame construction", ("(pandas/",)),
    ("request validation (protocols.py)", ("ml_platform/serving/protocols.py",)),
    ("JSON parse / render", ("(json/", "JSONResponse.render")),
    ("prometheus metrics", ("(prometheus_client/",)),
    ("registry watcher (mlflow, sqlalchemy)", ("(mlflow/", "(sqlalchemy/")),
    ("prediction log, routing, uuid (app.py)", ("ml_platform/serving/", "(uuid.py")),
    ("FastAPI / Starlette", ("(fastapi/", "(starlette/")),
    ("Serve batching (@serve.batch)", ("ray/serve/batching.py",)),
    ("Ray Serve replica: HTTP, routing, metrics", ("(ray/",)),
    ("asyncio / uvicorn event loop", ("(asyncio/", "(uvicorn/", "(uvloop/")),
)


def process_kind(pid: int) -> str:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    for marker, kind in (
        ("ServeReplica", "replica"),
        ("ProxyActor", "Ray proxy"),
        ("haproxy", "HAProxy"),
        ("HAProxyManager", "HAProxy manager"),
        ("ServeController", "Serve controller"),
    ):
        if marker in title:
            return kind
    return "other Ray processes"


def cpu_by_kind(root: int) -> dict[int, tuple[str, int]]:
    return {pid: (process_kind(pid), p.ticks) for pid, p in family(root).items()}


def summarize_stacks(path: Path) -> tuple[dict[str, int], int]:
    """py-spy's raw (collapsed) stacks of busy threads -> samples per category, all samples."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        total += int(number)
        name = next((c for c, patterns in CATEGORIES if any(p in stack for p in patterns)), "other")
        counts[name] = counts.get(name, 0) + int(number)
    return counts, total


def time_steps(model: Model) -> None:
    """In-process cost of each step ours runs for a one-row request, and of the model per batch size."""
    import statistics

    import pandas as pd

    from ml_platform.serving.protocols import Signature, mlflow_rows
    from ml_platform.settings import load_settings
    from ml_platform.tasks import task_of
    from ml_platform.training import registry
    from ml_platform.usecases import get_use_case

    settings = load_settings()
    task = task_of(get_use_case(USE_CASE, settings))
    ref = registry.model_ref(settings, USE_CASE, model.version)
    pipeline = registry.load_verified_model(ref, settings.home / "bench_cache", task)
    signature = Signature.of(get_use_case(USE_CASE, settings))
    names = list(signature.names)
    body = body_of(model.rows[:1])
    row = model.rows[0]

    def timed(label: str, function, repeat: int) -> None:
        function()
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        median, best = statistics.median(samples) * 1e3, min(samples) * 1e3
        log(f"  {label:<52} median {median:8.3f} ms, min {best:8.3f} ms")

    log("in-process cost of each step (one row unless said):")
    timed("json.loads of the body", lambda: json.loads(body), 2000)
    timed("mlflow_rows (signature validation)", lambda: mlflow_rows(signature, json.loads(body)), 2000)
    timed(
        "DataFrame.from_records(...).astype(float)",
        lambda: pd.DataFrame.from_records([row], columns=names).astype(float),
        1000,
    )
    frame = pd.DataFrame.from_records([row], columns=names).astype(float)
    timed("impute + scale (pipeline[:-1].transform)", lambda: pipeline[:-1].transform(frame), 300)
    for n in (1, 8, 32, 64):
        batch = pd.DataFrame.from_records([row] * n, columns=names).astype(float)
        timed(f"task.scores, batch of {n}", lambda b=batch: task.scores(pipeline, b), 50)
    timed("json.dumps of a one-row answer", lambda: json.dumps({"predictions": [dict(row)]}), 2000)


def profile(args: argparse.Namespace) -> None:
    """``--profile``: ours under wrk with py-spy on its Python processes in the request path (the
    replica; in proxy mode also Ray's proxy): CPU per request by process, and where the busy
    samples fall (model, pandas, JSON, validation, app, FastAPI, Serve batching, Ray Serve)."""
    setup = prepare(args)
    time_steps(setup.model)
    fast = args.profile == "fast"
    server = Server("ours", f"ours {args.profile} mode, 1 replica", fast=fast, replicas=1)
    py_spy = VENV_BIN / "py-spy"
    with running(server, setup.model, setup.server_cpus) as (url, root):
        check_answers(server, url, setup.model)
        for connections in CONCURRENCY:
            run_wrk(url, root, setup.script, connections, setup.warmup_s, setup.client_cpus)
            before = cpu_by_kind(root)
            profiled = {pid: kind for pid, (kind, _) in before.items() if kind in ("replica", "Ray proxy")}
            recorders = []
            for pid, kind in profiled.items():
                out = WORK_DIR / f"py-spy-{args.profile}-c{connections}-{kind.replace(' ', '_')}-{pid}.txt"
                command = [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
                command += ["--format", "raw", "--duration", f"{setup.seconds:.0f}", "-o", str(out)]
                recorders.append(
                    (out, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                )
            load = run_wrk(url, root, setup.script, connections, setup.seconds, setup.client_cpus)
            after = cpu_by_kind(root)
            for _, recorder in recorders:
                recorder.wait(timeout=60)
            requests = load.rps * setup.seconds
            log(
                f"--- {server.label}, c{connections}: {load.rps:.1f} rps, p50 {load.p50_ms:.2f} ms, "
                f"p99 {load.p99_ms:.2f} ms (py-spy attached)"
            )
            per_kind: dict[str, float] = {}
            for pid, (kind, ticks) in after.items():
                used = ticks - before.get(pid, (kind, 0))[1]
                per_kind[kind] = per_kind.get(kind, 0) + used / os.sysconf("SC_CLK_TCK")
            busy = per_kind.get("replica", 0) / setup.seconds
            log(f"CPU per request by process, ms (the replica used {busy:.2f} of a core):")
            for kind, seconds in sorted(per_kind.items(), key=lambda item: -item[1]):
                log(f"  {kind:<28} {seconds / requests * 1e3:7.3f}")
            for out, _ in recorders:
                counts, total = summarize_stacks(out)
                log(f"where the CPU goes: {total} samples of busy threads in {out.name}")
                for name, n in sorted(counts.items(), key=lambda item: -item[1]):
                    log(f"  {name:<56} {n / max(1, total):6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s warm-up and 5 s per load")
    parser.add_argument("--server-cpus", default="0,1", help="CPUs the servers run on (default 0,1)")
    parser.add_argument("--client-cpus", default="1", help="CPUs wrk runs on (default 1)")
    parser.add_argument(
        "--profile",
        choices=("fast", "proxy"),
        help="instead of the benchmark: ours (1 replica) under wrk with py-spy on its replica",
    )
    parser.add_argument("--deploy", metavar="VERSION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.deploy:
        deploy_child(args.deploy)
        return
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped by its finally block.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.profile:
        profile(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
