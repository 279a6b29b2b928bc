"""Benchmark: what Dagster orchestration costs the platform, against minimal Dagster peers.

Setup. A template platform home under /tmp/ml_platform_bench/orchestration (``ml-platform init``,
then ``ml-platform generate sensors --days 3 --sensors 5``: three landed days of readings ending
yesterday UTC, and their labels file); every measurement that writes starts from its own copy of
it. Every child gets the same environment: this process's (PYTHONDONTWRITEBYTECODE included; the
venv's bytecode was compiled at install) plus ``ML_PLATFORM_HOME``/``DAGSTER_HOME``. The peer
projects get a Dagster home of their own with the platform's ``dagster.yaml``, and are written to
/tmp: one module whose ``dg.Definitions`` holds one trivial asset with daily partitions from the
same start as the use case's (``minimal_project``, Dagster's default executor), and the same with
``executor=dg.in_process_executor`` as the platform has (``minimal_project_in_process``, reported
as an extra).

(a) ``materialize_one_partition_s``: wall time of the whole CLI process ``dagster asset
materialize -m ml_platform.definitions --select sensor_anomaly/raw_readings --partition <newest
landed day>`` against ``dagster asset materialize -m minimal_project --select trivial --partition
<same day>``; one untimed run of each first. Target ours / peer <= 1.5.
``import_definitions_s``: ``import ml_platform.definitions`` (loading the code location: what
every CLI call, run worker, code server and sensor evaluation pays), timed with
``time.perf_counter`` inside a fresh process, against ``import dagster`` the same way; the
process's whole wall time is an extra. Target: ours <= 3 s.

(b) ``demo_graph_s``: the demo's graph without serving (``deployment`` needs Ray Serve, which is
not orchestration): the ingest assets (raw_readings, readings_quarantine, raw_labels,
stg_readings, features) over the three days in one run, then online_features, training_set, model,
model_evaluation, champion in a second run. Ours: two ``dagster asset materialize`` CLI processes,
as ``make demo`` does, each a fresh process loading the definitions; the sum of their wall times.
Peer: one process that imports ``ml_platform.definitions`` and calls ``dg.materialize`` (Dagster's
in-process execution, same assets, checks, resources and instance kind) for the same two
selections; its wall time. Each run starts from a fresh copy of the template home, so both do the
same work; the first repetition's Dagster event logs are compared (materializations and check
evaluations must be equal). Ours pays one process start more than the peer: the wall time of a
fresh process that imports ``ml_platform.definitions`` is measured and reported as
``process_start_s``. Target: ours <= 1.3 x peer + process_start_s.

(c) ``landing_sensor_latency_s``: ``dagster dev -w workspace.yaml`` (webserver, daemon, code
server) on the home (b) left behind (days ingested, a champion). Once the landing sensor has
ticked, each repetition waits until no run is in progress, then a random part of the sensor's
interval (so the landing falls anywhere in its cycle), then lands a new day's readings file (one
day before the landed ones, renamed into ``landing/sensor_anomaly/``), and polls the instance
every 0.2 s for the landing sensor's run of that file: time from the landing until the run has
started (its ``start_time``: the run worker began the run); when the sensor's tick began and when
the run was created are extras. Peer: the landing sensor's ``minimum_interval_seconds`` (read from
the definition). Target: ours <= interval + 5 s.

(e) ``drift_retrain_latency_s``: in the same ``dagster dev`` after (c), once no run is in
progress, the newest landed day's file is delivered again with drifted readings (the generator's
``drift_from``, 3 noise standard deviations); the landing sensor re-ingests it and automation
recomputes its staging and features. Then ``dagster asset materialize --select
sensor_anomaly/drift_report`` makes a real drift report (Evidently's tests over the day against the
champion's training window), which must say ``dataset_drift``. Measured: from that report's
materialization (its event-log timestamp) until the retrain sensor's run has started. One sample
per run of the benchmark: a retrain is asked once per state and then cools down for an hour (the
spec's ``retrain_cooldown``). The run's end is awaited and its status reported (its last step,
``deployment``, fails here: no Ray Serve runs in the benchmark). Peer: the retrain sensor's
``minimum_interval_seconds``. Target: ours <= interval + 5 s.

(d) ``services_rss_mb``: resident memory summed over the ``dagster dev`` process tree (read from
/proc every second), run workers and their children excluded (reported apart), while (c) runs,
against a ``dagster dev`` of the minimal project, idle for min((c)'s window, 60 s) once its daemon
beats. RSS counts shared pages once per process; PSS is an extra. No target.

The parent imports only the standard library; all Dagster work runs in children (this script
with ``--child``, or the CLIs). Ours and the peer alternate within each repetition; repeated 5 times
(2, and once for (b), with ``--quick``); medians are reported. Output: progress on stderr; on
stdout one JSON line per figure (``ratio`` is ours / peer_value). Logs of every child are kept
under /tmp/ml_platform_bench/orchestration/run/logs; a failing child stops the benchmark naming
its log.

    .venv/bin/python bench/orchestration.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _measure import significant

if TYPE_CHECKING:
    import datetime as dt

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
BENCH_DIR = Path(tempfile.gettempdir()) / "ml_platform_bench" / "orchestration"
RUN_DIR = BENCH_DIR / "run"
LOG_DIR = RUN_DIR / "logs"

USE_CASE = "sensor_anomaly"
DAYS = 3
SENSORS = 5
LANDING_SENSOR = f"{USE_CASE}_landing_sensor"
RETRAIN_SENSOR = f"{USE_CASE}_retrain_sensor"
INGEST = ["raw_readings", "readings_quarantine", "raw_labels", "stg_readings", "features"]
CHAIN = ["online_features", "training_set", "model", "model_evaluation", "champion"]
PARTITIONS_START = "2025-01-01"  # the sensor_anomaly spec's, so the peer has as many partitions

CLI_RATIO_TARGET = 1.5
IMPORT_TARGET_S = 3.0
GRAPH_RATIO_TARGET = 1.3
LATENCY_SLACK_S = 5.0
PEER_MEMORY_WINDOW_S = 60.0
SEED = 7

PEER_MODULE = """\
import dagster as dg


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="{start}", end_offset=1))
def trivial(context: dg.AssetExecutionContext) -> int:
    return len(context.partition_key)


defs = dg.Definitions(assets=[trivial]{executor})
"""

PEER_WORKSPACE = """\
load_from:
  - python_module:
      module_name: minimal_project
      working_directory: {peer}
"""


def log(message: str) -> None:
    print(f"[orchestration] {message}", file=sys.stderr, flush=True)


def keys(names: list[str]) -> str:
    return ",".join(f"{USE_CASE}/{n}" for n in names)


# --- children: everything that imports Dagster or the platform ----------------------------------


def import_child(module: str) -> None:
    import importlib

    start = time.perf_counter()
    importlib.import_module(module)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def graph_child(first: str, last: str) -> None:
    """The peer of (b): the same two selections through ``dg.materialize`` in this one process."""
    start = time.perf_counter()
    import dagster as dg

    from ml_platform.definitions import defs

    loaded = time.perf_counter()
    nodes = [*defs.assets, *defs.asset_checks]
    instance = dg.DagsterInstance.get()
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    common = {"instance": instance, "resources": defs.resources}
    dg.materialize(nodes, selection=[dg.AssetKey([USE_CASE, n]) for n in INGEST], tags=tags, **common)
    ingested = time.perf_counter()
    dg.materialize(nodes, selection=[dg.AssetKey([USE_CASE, n]) for n in CHAIN], **common)
    done = time.perf_counter()
    print(json.dumps({"load_s": loaded - start, "ingest_s": ingested - loaded, "chain_s": done - ingested}))


def count_child() -> None:
    """Runs by status and Dagster events by type in this home's instance."""
    from collections import Counter

    import dagster as dg

    counts: Counter[str] = Counter()
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            counts[f"run_{record.dagster_run.status.value}"] += 1
            for entry in instance.all_logs(record.dagster_run.run_id):
                if entry.is_dagster_event:
                    counts[entry.dagster_event_type.value] += 1
    print(json.dumps(counts))


def wait_daemon_child(timeout_s: float) -> None:
    """Return once this instance's sensor daemon has beaten (its services are up)."""
    import dagster as dg

    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            if "SENSOR" in instance.get_daemon_heartbeats():
                print(json.dumps({"ready": True}))
                return
            time.sleep(0.5)
    raise SystemExit(f"the sensor daemon did not beat within {timeout_s:.0f} s")


def sensor_ticks(
    instance, after: float | None = None, limit: int | None = None, sensor: str = LANDING_SENSOR
) -> list:
    states = [s for s in instance.all_instigator_state() if s.name == sensor]
    ticks = []
    for state in states:
        ticks += instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after, limit=limit)
    return ticks


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.2):
    """``condition()``'s first truthy value, polled every ``poll_s``; SystemExit after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(poll_s)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def in_progress_runs(instance) -> list:
    import dagster as dg

    busy = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    return instance.get_run_records(dg.RunsFilter(statuses=busy))


def land_day(landing: Path, day, anchor, drifted: bool = False) -> Path:
    """One day's readings file, generated aside and renamed into the landing zone at once."""
    from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, write_sensor_data

    aside = landing / ".bench" / day.isoformat()  # a dot folder: the sensor never lists it
    shutil.rmtree(aside, ignore_errors=True)
    drift = {"drift_from": day} if drifted else {}
    config = SensorDataConfig(sensors=SENSORS, days=1, start=day, anchor=anchor, **drift)
    written = [p for p in write_sensor_data(aside, config) if p.parent == aside]
    target = landing / written[0].name
    os.replace(written[0], target)
    return target


def run_for_file(instance, name: str, landed: dt.datetime):
    """The landing sensor's run created after ``landed`` whose run key names the file ``name``."""
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(tags={"ml_platform/trigger": "landing"}, created_after=landed)
    )
    return next((r for r in records if name in r.dagster_run.tags.get("dagster/run_key", "")), None)


def latency_child(repeats: int, seed: int, idle_timeout_s: float) -> None:
    """(c): land a new day's file ``repeats`` times; when the landing sensor's run for it started."""
    import datetime as dt

    import dagster as dg

    from ml_platform.definitions import defs
    from ml_platform.settings import load_settings
    from ml_platform.usecases.sensor_anomaly.generate import landed_anchor

    interval = defs.get_sensor_def(LANDING_SENSOR).minimum_interval_seconds
    landing = load_settings().landing_dir_for(USE_CASE)
    anchor = landed_anchor(landing)
    first = min(dt.date.fromisoformat(p.stem.split("_")[1]) for p in landing.glob("readings_*.csv"))
    rng = random.Random(seed)
    samples = []
    with dg.DagsterInstance.get() as instance:
        log(f"waiting for the first tick of {LANDING_SENSOR} (interval {interval} s)")
        wait_until(lambda: sensor_ticks(instance, limit=1), 300, f"a tick of {LANDING_SENSOR}", 1.0)
        measure_start = time.time()
        for attempt in range(repeats):
            # Automation follows each ingestion within one of its ticks (same interval as ours).
            busy = not wait_quiet(instance, interval + 10, idle_timeout_s)
            time.sleep(rng.uniform(0, interval))
            path = land_day(landing, first - dt.timedelta(days=attempt + 1), anchor)
            landed = time.time()
            landed_at = dt.datetime.fromtimestamp(landed, dt.UTC)
            record = wait_until(
                lambda name=path.name, at=landed_at: started_run(instance, name, at),
                3 * interval + 120,
                f"a started run for {path.name}",
            )
            tick = next(
                (
                    t
                    for t in sensor_ticks(instance, after=landed - 1)
                    if any(path.name in k for k in t.run_keys)
                ),
                None,
            )
            sample = {
                "file": path.name,
                "started_s": record.start_time - landed,
                "created_s": record.create_timestamp.timestamp() - landed,
                "tick_s": None if tick is None else tick.timestamp - landed,
                "starting_s": starting_s(instance, record.dagster_run.run_id, landed),
                "busy_at_landing": busy,
                "run_id": record.dagster_run.run_id,
            }
            samples.append(sample)
            log(
                f"latency run {attempt + 1}/{repeats}: {path.name}: tick began {fmt(sample['tick_s'])} s,"
                f" run created {sample['created_s']:.1f} s, launched {fmt(sample['starting_s'])} s,"
                f" started {sample['started_s']:.1f} s"
            )
            status = wait_until(
                lambda rid=record.dagster_run.run_id: finished_status(instance, rid),
                600,
                f"run {record.dagster_run.run_id} to finish",
                1.0,
            )
            if status != "SUCCESS":
                raise SystemExit(f"the landing sensor's run {record.dagster_run.run_id} ended {status}")
        newest = max(dt.date.fromisoformat(p.stem.split("_")[1]) for p in landing.glob("readings_*.csv"))
        drift = drift_retrain_sample(instance, landing, newest, anchor, idle_timeout_s)
    print(
        json.dumps(
            {
                "interval_s": interval,
                "samples": samples,
                "drift": drift,
                "start": measure_start,
                "end": time.time(),
            }
        )
    )


def drift_retrain_sample(instance, landing: Path, newest, anchor, idle_timeout_s: float) -> dict:
    """(e): the newest day re-delivered drifted, a real drift report, the retrain run it starts."""
    import dagster as dg

    from ml_platform.definitions import defs

    interval = defs.get_sensor_def(RETRAIN_SENSOR).minimum_interval_seconds
    wait_quiet(instance, interval + 10, idle_timeout_s)
    path = land_day(landing, newest, anchor, drifted=True)
    log(f"drift: {path.name} delivered again with drifted readings; waiting for its ingestion")
    redelivered = time.time()
    wait_until(lambda: run_for_file(instance, path.name, _utc(redelivered)), 300, f"the run for {path.name}")
    wait_quiet(instance, interval + 10, idle_timeout_s)
    key = dg.AssetKey([USE_CASE, "drift_report"])
    command = materialize(f"{USE_CASE}/drift_report")
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise SystemExit(f"drift_report failed: {done.stderr.decode()[-2000:]}")
    reports = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_timestamp=redelivered), limit=10
    ).records
    drifted = sorted(
        (
            r
            for r in reports
            if getattr(r.asset_materialization.metadata.get("dataset_drift"), "value", False)
        ),
        key=lambda r: r.timestamp,
    )
    if not drifted:
        raise SystemExit(f"the drift report after {path.name} was delivered drifted found no drift")
    reported = drifted[0].timestamp
    record = wait_until(
        lambda: retrain_run(instance, reported), 3 * interval + 120, "the retrain sensor's run", 0.2
    )
    tick = next(
        (t for t in sensor_ticks(instance, after=reported - 1, sensor=RETRAIN_SENSOR) if t.run_keys), None
    )
    sample = {
        "interval_s": interval,
        "started_s": record.start_time - reported,
        "created_s": record.create_timestamp.timestamp() - reported,
        "tick_s": None if tick is None else tick.timestamp - reported,
        "drift_share": drifted[0].asset_materialization.metadata["drift_share"].value,
        "run_id": record.dagster_run.run_id,
    }
    log(
        f"drift: report {reported - redelivered:.1f} s after the re-delivery; retrain tick began"
        f" {fmt(sample['tick_s'])} s after it, run created {sample['created_s']:.1f} s, started"
        f" {sample['started_s']:.1f} s"
    )
    sample["run_status"] = wait_until(
        lambda: finished_status(instance, record.dagster_run.run_id), 600, "the retrain run to end", 1.0
    )
    return sample


def _utc(timestamp: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def retrain_run(instance, after: float):
    """The retrain sensor's run created after ``after``, once it has started."""
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(tags={"ml_platform/trigger": "retrain"}, created_after=_utc(after - 1))
    )
    started = [r for r in records if r.start_time is not None]
    return min(started, key=lambda r: r.create_timestamp) if started else None


def starting_s(instance, run_id: str, landed: float) -> float | None:
    """Seconds from the landing until the run coordinator took the run off the queue to launch it."""
    import dagster as dg

    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_STARTING)
    return entries[0].timestamp - landed if entries else None


def fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def wait_quiet(instance, quiet_s: float, timeout_s: float) -> bool:
    """Wait until no run is in progress and none was created or ended for ``quiet_s``; False on
    timeout. (A landing while automation's runs hold the warehouse pool waits in the queue.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recent = instance.get_run_records(limit=20)
        last = max((max(r.create_timestamp.timestamp(), r.end_time or 0.0) for r in recent), default=0.0)
        if not in_progress_runs(instance) and time.time() - last >= quiet_s:
            return True
        time.sleep(1.0)
    log(f"warning: runs still in progress or just ended after {timeout_s:.0f} s; landing anyway")
    return False


def started_run(instance, name: str, landed_at):
    record = run_for_file(instance, name, landed_at)
    if record is not None and record.dagster_run.status.value in ("FAILURE", "CANCELED"):
        raise SystemExit(f"the landing sensor's run for {name} ended {record.dagster_run.status.value}")
    return record if record is not None and record.start_time is not None else None


def finished_status(instance, run_id: str) -> str | None:
    status = instance.get_run_by_id(run_id).status.value
    return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None


CHILDREN = {
    "import": lambda args: import_child(args[0]),
    "graph": lambda args: graph_child(args[0], args[1]),
    "count": lambda args: count_child(),
    "wait-daemon": lambda args: wait_daemon_child(float(args[0])),
    "latency": lambda args: latency_child(int(args[0]), int(args[1]), float(args[2])),
}


# --- the parent: standard library only ----------------------------------------------------------


def base_env() -> dict[str, str]:
    """What every child gets, platform and peer alike (no usage pings from benchmarks)."""
    quiet = {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
    return quiet | dict(os.environ)


def home_env(home: Path) -> dict[str, str]:
    return base_env() | {"ML_PLATFORM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


def timed(command: list[str], env: dict[str, str], name: str, cwd: Path = REPO) -> tuple[float, str]:
    """Wall time of ``command`` as a whole process, and its stdout; SystemExit if it fails."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    with log_path.open("ab") as errors:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=errors, check=False)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"{name}: {' '.join(command)} failed with exit code {done.returncode}; see {log_path}"
        )
    with log_path.open("ab") as output:
        output.write(done.stdout)
    return seconds, done.stdout.decode()


def child(kind: str, *args: str, env: dict[str, str], name: str) -> tuple[float, dict]:
    """This script with ``--child kind args``: its wall time and its last stdout line as JSON."""
    seconds, out = timed([sys.executable, __file__, "--child", kind, *args], env, name)
    return seconds, json.loads(out.strip().splitlines()[-1])


@dataclass
class Homes:
    template: Path
    peer: Path  # the peer projects' folder, with a Dagster home of their own
    days: list[str]


def prepare(quick: bool) -> Homes:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    template = RUN_DIR / "template" / "home"
    env = home_env(template)
    log(f"template home {template}: ml-platform init, generate sensors --days {DAYS} --sensors {SENSORS}")
    timed([str(BIN / "ml-platform"), "init"], env, "setup")
    generate = ["generate", "sensors", "--days", str(DAYS), "--sensors", str(SENSORS)]
    timed([str(BIN / "ml-platform"), *generate], env, "setup")
    landing = template / "landing" / USE_CASE
    days = sorted(p.stem.split("_")[1] for p in landing.glob("readings_*.csv"))
    if len(days) != DAYS:
        raise SystemExit(f"expected {DAYS} landed days in {landing}, found {days}")
    peer = RUN_DIR / "peer"
    (peer / "dagster").mkdir(parents=True)
    shutil.copy(template / "dagster" / "dagster.yaml", peer / "dagster" / "dagster.yaml")
    for module, executor in (
        ("minimal_project", ""),
        ("minimal_project_in_process", ", executor=dg.in_process_executor"),
    ):
        (peer / f"{module}.py").write_text(PEER_MODULE.format(start=PARTITIONS_START, executor=executor))
    (peer / "workspace.yaml").write_text(PEER_WORKSPACE.format(peer=peer))
    return Homes(template, peer, days)


def copy_home(homes: Homes, name: str) -> Path:
    home = RUN_DIR / "homes" / name / "home"
    shutil.copytree(homes.template, home)
    return home


def peer_env(homes: Homes) -> dict[str, str]:
    return base_env() | {"DAGSTER_HOME": str(homes.peer / "dagster")}


def materialize(select: str, *extra: str, module: str = "ml_platform.definitions", where: Path | None = None):
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", module, "--select", select, *extra]
    return command + (["-d", str(where)] if where else [])


def figure(
    name: str, ours: float, peer: str, peer_value: float, target=None, allowance: float = 0.0, **extra
):
    """One JSON line; ``met`` is ours <= target (absolute) or ours <= target x peer + allowance."""
    met = None
    if target is not None:
        absolute = extra.get("target_kind", "").startswith("absolute")
        met = ours <= (target if absolute else target * peer_value + allowance)
    line = {
        "bench": "orchestration",
        "figure": name,
        "ours": significant(ours),
        "peer": peer,
        "peer_value": significant(peer_value),
        "ratio": significant(ours / peer_value),
        "better": "lower",
        "target": significant(target),
        "met": met,
    }
    return line | {k: significant(v) if isinstance(v, float) else v for k, v in extra.items()}


def median(values: list[float]) -> float:
    return statistics.median(values)


# (a) ---------------------------------------------------------------------------------------------


def cli_figures(homes: Homes, repeats: int) -> list[dict]:
    home = copy_home(homes, "a")
    day = homes.days[-1]

    def peer(module: str) -> tuple[list[str], dict[str, str], Path]:
        command = materialize("trivial", "--partition", day, module=module, where=homes.peer)
        return command, peer_env(homes), homes.peer

    runs = {
        "ours": (materialize(keys(["raw_readings"]), "--partition", day), home_env(home), REPO),
        "peer": peer("minimal_project"),
        "peer_in_process": peer("minimal_project_in_process"),
    }
    for name, (command, env, cwd) in runs.items():  # untimed: the first run creates tables
        timed(command, env, f"a_{name}", cwd)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for attempt in range(repeats):
        for name, (command, env, cwd) in runs.items():
            seconds[name].append(timed(command, env, f"a_{name}", cwd)[0])
        log(f"materialize one partition {attempt + 1}/{repeats}: " + fmt_runs(seconds, -1))
    ours, peer, in_process = (median(seconds[n]) for n in runs)
    imports = import_figure(home, repeats)
    return [
        figure(
            "materialize_one_partition_s",
            ours,
            "minimal Dagster project, one daily-partitioned asset, same CLI",
            peer,
            CLI_RATIO_TARGET,
            day=day,
            peer_in_process_executor_s=in_process,
            ratio_vs_in_process_executor=significant(ours / in_process),
            samples={n: [significant(s) for s in v] for n, v in seconds.items()},
        ),
        imports,
    ]


def fmt_runs(seconds: dict[str, list[float]], index: int) -> str:
    return ", ".join(f"{name} {values[index]:.2f} s" for name, values in seconds.items())


def import_figure(home: Path, repeats: int) -> dict:
    env = home_env(home)
    inside: dict[str, list[float]] = {"ours": [], "peer": []}
    wall: dict[str, list[float]] = {"ours": [], "peer": []}
    for attempt in range(repeats):
        for name, module in (("ours", "ml_platform.definitions"), ("peer", "dagster")):
            seconds, result = child("import", module, env=env, name=f"import_{name}")
            inside[name].append(result["seconds"])
            wall[name].append(seconds)
        log(
            f"cold import {attempt + 1}/{repeats}: "
            + fmt_runs(inside, -1)
            + " (process: "
            + fmt_runs(wall, -1)
            + ")"
        )
    return figure(
        "import_definitions_s",
        median(inside["ours"]),
        "import dagster",
        median(inside["peer"]),
        IMPORT_TARGET_S,
        target_kind="absolute_seconds",
        process_wall_s=median(wall["ours"]),
        peer_process_wall_s=median(wall["peer"]),
    )


# (b) ---------------------------------------------------------------------------------------------


def ours_graph(home: Path, first: str, last: str, name: str) -> dict[str, float]:
    env = home_env(home)
    ingest = timed(materialize(keys(INGEST), "--partition-range", f"{first}...{last}"), env, name)[0]
    chain = timed(materialize(keys(CHAIN)), env, name)[0]
    return {"seconds": ingest + chain, "ingest_s": ingest, "chain_s": chain}


def peer_graph(home: Path, first: str, last: str, name: str) -> dict[str, float]:
    seconds, parts = child("graph", first, last, env=home_env(home), name=name)
    return {"seconds": seconds} | parts


def same_work(homes: dict[str, Path]) -> None:
    counts = {name: child("count", env=home_env(h), name="b_count")[1] for name, h in homes.items()}
    log(f"demo graph events: {counts}")
    compared = ("ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "run_SUCCESS")
    differ = {
        k: [c.get(k) for c in counts.values()]
        for k in compared
        if len({c.get(k) for c in counts.values()}) > 1
    }
    if differ or not counts["ours"].get("ASSET_MATERIALIZATION"):
        raise SystemExit(f"ours and the peer did different work (ours, peer): {differ or counts}")


def graph_figure(homes: Homes, repeats: int, process_start_s: float) -> tuple[dict, Path]:
    first, last = homes.days[0], homes.days[-1]
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
    order = list(runs)
    for attempt in range(repeats):
        fresh = {}
        for name in order:  # alternating which goes first, so neither always meets a cold cache
            fresh[name] = home = copy_home(homes, f"b_{name}_{attempt}")
            run = (ours_graph if name == "ours" else peer_graph)(home, first, last, f"b_{name}")
            runs[name].append(run)
            log(
                f"demo graph {name} {attempt + 1}/{repeats}: "
                + ", ".join(f"{k} {v:.1f}" for k, v in run.items())
            )
        if attempt == 0:
            same_work(fresh)
        order.reverse()
    ours_home = RUN_DIR / "homes" / f"b_ours_{repeats - 1}" / "home"
    part = {name: {k: median([r[k] for r in rs]) for k in rs[0]} for name, rs in runs.items()}
    ours, peer = part["ours"]["seconds"], part["peer"]["seconds"]
    line = figure(
        "demo_graph_s",
        ours,
        "dg.materialize in one process, same assets",
        peer,
        GRAPH_RATIO_TARGET,
        allowance=process_start_s,
        target_kind="ratio_plus_process_start",
        process_start_s=process_start_s,
        allowed_s=GRAPH_RATIO_TARGET * peer + process_start_s,
        ours_ingest_s=part["ours"]["ingest_s"],
        ours_chain_s=part["ours"]["chain_s"],
        peer_load_s=part["peer"]["load_s"],
        peer_ingest_s=part["peer"]["ingest_s"],
        peer_chain_s=part["peer"]["chain_s"],
        days=f"{first}...{last}",
    )
    return line, ours_home


def process_start(home: Path, repeats: int) -> float:
    """Wall time of a fresh process that loads the definitions: what a second CLI call adds."""
    walls = [
        child("import", "ml_platform.definitions", env=home_env(home), name="b_start")[0]
        for _ in range(repeats)
    ]
    log(f"process start with the definitions: {', '.join(f'{w:.2f}' for w in walls)} s")
    return median(walls)


# (c) and (d) -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dagster_dev(workspace: Path, env: dict[str, str], cwd: Path, name: str) -> Iterator[subprocess.Popen]:
    """``dagster dev`` in a session of its own, ended by that session's id (and nothing else)."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "dagster"), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
    with (LOG_DIR / f"{name}.log").open("ab") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    log(f"started {name}: dagster dev (pid {process.pid}, port {port}, log {LOG_DIR / (name + '.log')})")
    try:
        wait_http(f"http://127.0.0.1:{port}/server_info", process, name)
        yield process
    finally:
        stop_session(process, name)


def wait_http(url: str, process: subprocess.Popen, name: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with code {process.returncode}; see {LOG_DIR / (name + '.log')}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(1)
    raise SystemExit(f"{name}: {url} did not answer within {timeout_s:.0f} s")


def stop_session(process: subprocess.Popen, name: str, grace_s: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # what is left of the session we created
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log(f"stopped {name} (pid {process.pid})")


def role(pid: int) -> str:
    try:
        command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    for needle, name in (
        # The code server starts each run worker as a multiprocessing spawn child.
        ("--multiprocessing-fork", "run"),
        ("execute_run", "run"),
        ("execute_step", "run"),
        ("multiprocessing.resource_tracker", "mp_resource_tracker"),
        ("dagster_webserver", "webserver"),
        ("dagster-webserver", "webserver"),
        ("dagster._daemon", "daemon"),
        ("dagster-daemon", "daemon"),
        ("code-server start", "code_server_proxy"),
        ("api grpc", "code_server"),
        ("dagster dev", "dev"),
    ):
        if needle in command:
            return name
    return "other"


def process_roles(root: int) -> dict[int, str]:
    """Every process under ``root`` with its role; a run worker's children count as the run."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    roles: dict[int, str] = {}
    stack = [(root, "")]
    while stack:
        pid, inherited = stack.pop()
        roles[pid] = inherited or role(pid)
        stack += [(c, "run" if roles[pid] == "run" else "") for c in children.get(pid, [])]
    return roles


def memory_kb(pid: int, path: str, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in (Path("/proc") / str(pid) / path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def sample_memory(root: int) -> dict:
    """RSS and PSS (MB) of the tree's services and of its runs, and RSS per role."""
    sample: dict = {"t": time.time(), "rss": 0.0, "pss": 0.0, "run_rss": 0.0, "roles": {}}
    for pid, name in process_roles(root).items():
        rss = memory_kb(pid, "status", "VmRSS:") / 1024
        if name == "run":
            sample["run_rss"] += rss
            continue
        sample["rss"] += rss
        sample["pss"] += memory_kb(pid, "smaps_rollup", "Pss:") / 1024
        sample["roles"][name] = sample["roles"].get(name, 0.0) + rss
    return sample


def sample_while(process: subprocess.Popen, root: int) -> list[dict]:
    samples = []
    while process.poll() is None:
        samples.append(sample_memory(root))
        time.sleep(1.0)
    return samples


def memory_summary(samples: list[dict]) -> dict:
    if not samples:
        raise SystemExit("no memory samples were taken")
    roles = sorted({r for s in samples for r in s["roles"]})
    return {
        "rss": median([s["rss"] for s in samples]),
        "rss_max": max(s["rss"] for s in samples),
        "pss": median([s["pss"] for s in samples]),
        "run_rss": median([s["run_rss"] for s in samples]),
        "run_rss_max": max(s["run_rss"] for s in samples),
        "roles": {r: significant(median([s["roles"].get(r, 0.0) for s in samples])) for r in roles},
        "samples": len(samples),
    }


def latency_and_memory(home: Path, homes: Homes, repeats: int) -> list[dict]:
    env = home_env(home)
    with dagster_dev(REPO / "workspace.yaml", env, REPO, "dev_ours") as dev:
        command = [sys.executable, __file__, "--child", "latency", str(repeats), str(SEED), "420"]
        # Its progress goes to our stderr; library warnings are left out (the watcher only polls).
        quiet = env | {"PYTHONWARNINGS": "ignore"}
        watcher = subprocess.Popen(command, cwd=REPO, env=quiet, stdout=subprocess.PIPE)
        samples = sample_while(watcher, dev.pid)
        out = watcher.stdout.read().decode()
        if watcher.returncode != 0:
            raise SystemExit(
                f"the latency child failed with exit code {watcher.returncode} (its error is above)"
            )
    result = json.loads(out.strip().splitlines()[-1])
    ours = memory_summary([s for s in samples if result["start"] <= s["t"] <= result["end"]])
    window = min(result["end"] - result["start"], PEER_MEMORY_WINDOW_S)
    with dagster_dev(homes.peer / "workspace.yaml", peer_env(homes), homes.peer, "dev_peer") as dev:
        child("wait-daemon", "180", env=peer_env(homes), name="dev_peer_ready")
        log(f"sampling the peer's memory for {window:.0f} s")
        peer_samples = []
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            peer_samples.append(sample_memory(dev.pid))
            time.sleep(1.0)
    peer = memory_summary(peer_samples)
    return [latency_figure(result), drift_figure(result["drift"]), memory_figure(ours, peer)]


def drift_figure(sample: dict) -> dict:
    interval = float(sample["interval_s"])
    return figure(
        "drift_retrain_latency_s",
        sample["started_s"],
        f"{RETRAIN_SENSOR} minimum_interval_seconds",
        interval,
        interval + LATENCY_SLACK_S,
        target_kind="absolute_seconds",
        created_s=sample["created_s"],
        tick_s=sample["tick_s"],
        drift_share=sample["drift_share"],
        retrain_run_status=sample["run_status"],
        samples=1,
    )


def latency_figure(result: dict) -> dict:
    interval = float(result["interval_s"])
    samples = result["samples"]
    started = [s["started_s"] for s in samples]
    ticks = [s["tick_s"] for s in samples if s["tick_s"] is not None]
    return figure(
        "landing_sensor_latency_s",
        median(started),
        f"{LANDING_SENSOR} minimum_interval_seconds",
        interval,
        interval + LATENCY_SLACK_S,
        target_kind="absolute_seconds",
        max_s=max(started),
        created_s=median([s["created_s"] for s in samples]),
        launched_s=median_of(samples, "starting_s"),
        tick_s=median(ticks) if ticks else None,
        started_after_tick_s=median(
            [s["started_s"] - s["tick_s"] for s in samples if s["tick_s"] is not None]
        )
        if ticks
        else None,
        busy_at_landing=sum(s["busy_at_landing"] for s in samples),
        samples=[significant(s) for s in started],
    )


def median_of(samples: list[dict], key: str) -> float | None:
    values = [s[key] for s in samples if s[key] is not None]
    return median(values) if values else None


def memory_figure(ours: dict, peer: dict) -> dict:
    return figure(
        "services_rss_mb",
        ours["rss"],
        "dagster dev of the minimal project, idle",
        peer["rss"],
        ours_max_mb=ours["rss_max"],
        ours_pss_mb=ours["pss"],
        peer_pss_mb=peer["pss"],
        run_workers_rss_mb=ours["run_rss"],
        run_workers_rss_max_mb=ours["run_rss_max"],
        roles=ours["roles"],
        peer_roles=peer["roles"],
        samples=ours["samples"],
        peer_samples=peer["samples"],
    )


def benchmark(quick: bool) -> None:
    repeats = 2 if quick else 5
    homes = prepare(quick)
    lines = cli_figures(homes, repeats)
    start = process_start(homes.template, repeats)
    line, ours_home = graph_figure(homes, 1 if quick else repeats, start)
    lines.append(line)
    lines += latency_and_memory(ours_home, homes, repeats)
    for line in lines:
        print(json.dumps(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (2; 1 for the demo graph)")
    parser.add_argument("--child", nargs="+", metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child[0]](args.child[1:])
    else:
        benchmark(args.quick)


if __name__ == "__main__":
    main()
