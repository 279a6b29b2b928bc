"""Soak: the whole platform under steady load for 30 minutes, with a drift-triggered retrain.

Setup. ``ml-platform demo`` in a fresh home of its own (under /tmp/ml_platform_bench/soak, on
free ports, so it does not meet a demo you are running), started as ``make demo`` starts it: both
shipped use cases ingested, trained, served by Ray Serve, the Dagster daemon with its sensors
ticking every 30 s (the default ``ML_PLATFORM_SENSOR_INTERVAL_S``) and monitors on their default
cron. ``--attach`` soaks the platform the environment's settings point at instead (a running
``make demo``).

Load, for ``--minutes`` (30): 8 clients, each asking the predict route in turn with every request
the shipped examples document (by entity, and payments scored with their own fields), 50 ms
apart; readings posted to ``/v1/events/sensor_anomaly`` at 20 per second (their sensors' usual
values, stamped now), which the landing sensor ingests; and once a quarter of the time has
passed, ``ml-platform scenario drift`` (drifted days land, the platform alone reports drift,
retrains, gates, promotes and switches serving; its own 4 clients count too), given until the
load stops to finish.

Reported (no peer: the issue gives absolute targets; ``ratio`` is ours / target where the target
is not 0):

* ``failed_requests``: predictions and events not answered 2xx, and exceptions. Target 0.
* ``replica_rss_growth_pct``: the serving replicas' summed RSS, median of the last 2 minutes
  against the median of minutes 2-4 (after warm-up). Target under 10.
* ``daemon_rss_growth_pct``: the same for the Dagster daemon and its code servers (run workers
  excluded: they come and go). Reported against the same 10.
* ``prediction_log_missing``: 2xx predictions of our clients whose ``prediction_id`` is not in the
  prediction log files once the load stops; the log rows of those ids are an extra. Target 0.
* ``longest_warehouse_lock_wait_s``: the longest wait for the warehouse write lock logged by any
  Dagster run of the soak (``took the warehouse write lock after waiting ... s``). No target.
* extras: requests, events, runs by status, retrain runs, the champion before and after.

Progress on stderr; one JSON line per figure on stdout.

    .venv/bin/python bench/soak.py [--minutes 30] [--attach]
    .venv/bin/python bench/soak.py --quick      # 8 minutes, monitors every minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _measure import significant
from orchestration import free_port, memory_kb, process_roles, stop_session

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
SOAK_DIR = Path("/tmp/ml_platform_bench/soak")
CLIENTS = 8
THINK_S = 0.05
EVENTS_PER_S = 20
SAMPLE_EVERY_S = 10
GROWTH_TARGET_PCT = 10.0
EVENT_USE_CASE = "sensor_anomaly"
REPLICA_MARK = b"ServeReplica:ml_platform:ModelServer"
LOCK_WAIT = re.compile(r"took the warehouse write lock after waiting ([0-9.]+) s")


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcomes:
    """What every client saw; shared by threads (Counter updates and list appends are atomic)."""

    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    answered_ids: list[str] = field(default_factory=list)


def start_demo(home: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """``ml-platform demo`` in a session of its own; returns once it prints that it is up."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = os.environ | {
        "ML_PLATFORM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "ML_PLATFORM_SERVE_PORT": str(free_port()),
        "ML_PLATFORM_GRPC_PORT": str(free_port()),
    }
    ports = ["--dagster-port", str(free_port()), "--mlflow-port", str(free_port())]
    output = home.parent / "demo.log"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [str(BIN / "ml-platform"), "demo", *ports],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log(f"started ml-platform demo (pid {demo.pid}, home {home}, log {output})")
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SystemExit(f"ml-platform demo exited with code {demo.returncode}; see {output}")
        if "ml_platform is up" in output.read_text(errors="replace"):
            log("the demo is up")
            return demo, env
        time.sleep(2)
    stop_session(demo, "ml-platform demo")
    raise SystemExit(f"ml-platform demo was not up within 20 minutes; see {output}")


def stop_demo(demo: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; whatever is left of its session after 30 s is ended by id."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(demo.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        demo.wait(timeout=30)
    stop_session(demo, "ml-platform demo")


def predict_client(index: int, settings, requests: list[tuple[str, dict]], outcomes: Outcomes, stop) -> None:
    import httpx

    from ml_platform.usecases.scenarios import auth_headers

    i = index
    with httpx.Client(timeout=30, headers=auth_headers(settings)) as client:
        while not stop.is_set():
            use_case, body = requests[i % len(requests)]
            i += 1
            try:
                answer = client.post(f"{settings.serve_url}/v1/models/{use_case}/predict", json=body)
                outcomes.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    outcomes.answered_ids.append(answer.json()["prediction_id"])
                else:
                    outcomes.failures.append(f"predict {use_case}: {answer.status_code} {answer.text[:200]}")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                outcomes.failures.append(f"predict {use_case}: {exc!r}")
            time.sleep(THINK_S)


def event_poster(settings, sensors: dict[str, float], outcomes: Outcomes, stop) -> None:
    """Readings at EVENTS_PER_S, paced on the clock so a slow answer does not lower the rate."""
    import httpx

    from ml_platform.usecases.scenarios import auth_headers

    rng = random.Random(7)
    ids = sorted(sensors)
    url = f"{settings.serve_url}/v1/events/{EVENT_USE_CASE}"
    sent, started = 0, time.monotonic()
    with httpx.Client(timeout=30, headers=auth_headers(settings)) as client:
        while not stop.is_set():
            sensor = ids[sent % len(ids)]
            reading = {
                "sensor_id": sensor,
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "value": round(rng.gauss(sensors[sensor], 1.0), 3),
            }
            sent += 1
            try:
                answer = client.post(url, json=reading)
                outcomes.statuses[f"event {answer.status_code}"] += 1
                if answer.status_code != 202:
                    outcomes.failures.append(f"event: {answer.status_code} {answer.text[:200]}")
            except httpx.HTTPError as exc:
                outcomes.failures.append(f"event: {exc!r}")
            time.sleep(max(0.0, started + sent / EVENTS_PER_S - time.monotonic()))


def sensor_levels(settings) -> dict[str, float]:
    """Each sensor's median landed value: the events look like its readings."""
    import polars as pl

    files = sorted(settings.landing_dir_for(EVENT_USE_CASE).glob("readings_*.csv"))
    readings = pl.read_csv(files[-1], columns=["sensor_id", "value"])
    return dict(readings.group_by("sensor_id").agg(pl.col("value").median()).iter_rows())


def platform_pids(home: Path) -> tuple[set[int], set[int]]:
    """The serving replicas (by their Ray name) and the Dagster daemon's processes of this home
    (the daemon and its code servers, not run workers), by their environment's ML_PLATFORM_HOME."""
    replicas, daemon = set(), set()
    mark = f"ML_PLATFORM_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes()
            if REPLICA_MARK in command:
                replicas.add(int(entry.name))
            elif b"dagster-daemon" in command and mark in (entry / "environ").read_bytes().split(b"\0"):
                daemon.update(pid for pid, role in process_roles(int(entry.name)).items() if role != "run")
    return replicas, daemon


def rss_mb(pids: set[int]) -> float:
    return sum(memory_kb(pid, "status", "VmRSS:") for pid in pids) / 1024


def sampler(home: Path, samples: list[dict], stop) -> None:
    started = time.monotonic()
    while not stop.wait(SAMPLE_EVERY_S):
        replicas, daemon = platform_pids(home)
        samples.append(
            {
                "t": time.monotonic() - started,
                "replica_rss": rss_mb(replicas),
                "replicas": sorted(replicas),
                "daemon_rss": rss_mb(daemon),
            }
        )


def growth_pct(samples: list[dict], key: str, minutes: float) -> tuple[float, float, float]:
    """Median of the last 2 minutes against the median of minutes 2-4 (or the first quarter of a
    shorter soak): (growth %, early MB, late MB)."""
    warm = min(120.0, minutes * 60 / 8)
    early = [s[key] for s in samples if warm <= s["t"] < 2 * warm]
    late = [s[key] for s in samples if s["t"] >= samples[-1]["t"] - 120]
    if not early or not late:
        raise SystemExit(f"too few memory samples for {key} ({len(samples)})")
    first, last = statistics.median(early), statistics.median(late)
    return 100 * (last - first) / first, first, last


def logged_prediction_ids(settings) -> Counter:
    ids: Counter = Counter()
    for path in settings.serving_log_dir.glob("*/*/*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if "prediction_id" in record and "shadow_of" not in record:
                    ids[record["prediction_id"]] += 1
    return ids


def runs_since(settings, started: float) -> tuple[Counter, float, int]:
    """Runs created since ``started`` by status, the longest warehouse lock wait they logged, and
    how many of them were retrains."""
    import dagster as dg

    statuses: Counter = Counter()
    longest, retrains = 0.0, 0
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        since = dt.datetime.fromtimestamp(started, dt.UTC)
        for run in instance.get_runs(dg.RunsFilter(created_after=since)):
            statuses[run.status.value] += 1
            retrains += run.tags.get("ml_platform/trigger") == "retrain"
            for record in instance.all_logs(run.run_id):
                if record.dagster_event is None and (found := LOCK_WAIT.search(record.user_message)):
                    longest = max(longest, float(found.group(1)))
    return statuses, longest, retrains


def line(name: str, ours: float, target: float | None, better: str = "lower", **extra) -> dict:
    met = None if target is None else (ours <= target if target == 0 else ours < target)
    ratio = None if not target else significant(ours / target)
    return {
        "bench": "soak",
        "figure": name,
        "ours": significant(ours),
        "peer": None,
        "peer_value": None,
        "ratio": ratio,
        "better": better,
        "target": target,
        "met": met,
    } | extra


def soak(settings, minutes: float) -> list[dict]:
    from ml_platform.usecases import examples
    from ml_platform.usecases.scenarios import serving_champion
    from ml_platform.usecases.sensor_anomaly.scenario import USE_CASE, run_drift_scenario

    requests = [(name, body) for name, example in examples().items() for body in example.requests]
    champion_before, _ = serving_champion(settings, USE_CASE)
    outcomes, samples, stop = Outcomes(), [], threading.Event()
    drift: dict = {}

    def drift_in_the_middle() -> None:
        if stop.wait(minutes * 60 / 4):
            return
        log("landing drifted days (ml-platform scenario drift)")
        try:  # given until the load stops: the soak does not outlast its minutes waiting for it
            timeout_s = minutes * 60 * 3 / 4 - 30
            result = run_drift_scenario(settings, timeout_s=timeout_s, log=lambda m: log(f"drift: {m}"))
            drift.update(result=result)
        except Exception as exc:  # reported as a figure: the soak goes on
            drift.update(error=repr(exc))

    started = time.time()
    threads = [
        threading.Thread(target=predict_client, args=(i, settings, requests, outcomes, stop))
        for i in range(CLIENTS)
    ]
    threads += [
        threading.Thread(target=event_poster, args=(settings, sensor_levels(settings), outcomes, stop)),
        threading.Thread(target=sampler, args=(settings.home, samples, stop)),
    ]
    drifter = threading.Thread(target=drift_in_the_middle)
    for thread in [*threads, drifter]:
        thread.start()
    log(f"soaking for {minutes:g} min: {CLIENTS} clients, events at {EVENTS_PER_S}/s")
    end = time.monotonic() + minutes * 60
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        log(f"{sum(outcomes.statuses.values())} answers, {len(outcomes.failures)} failed so far")
    stop.set()
    for thread in threads:
        thread.join()
    if drifter.is_alive():
        log("waiting for the drift scenario to finish")
    drifter.join()
    time.sleep(2)  # a prediction is logged before it is answered; this is only for file buffers

    logged = logged_prediction_ids(settings)
    answered = set(outcomes.answered_ids)
    missing = len(answered - set(logged))
    statuses, longest_wait, retrains = runs_since(settings, started)
    replica_growth, replica_early, replica_late = growth_pct(samples, "replica_rss", minutes)
    daemon_growth, daemon_early, daemon_late = growth_pct(samples, "daemon_rss", minutes)
    result = drift.get("result")
    failed = outcomes.failures + (result.failed_requests if result else [])
    for failure in failed[:10]:
        log(f"failed: {failure}")
    if "error" in drift:
        log(f"the drift scenario failed: {drift['error']}")
    replica_sets = {tuple(s["replicas"]) for s in samples}
    return [
        line(
            "failed_requests",
            len(failed),
            0,
            requests=sum(v for k, v in outcomes.statuses.items() if isinstance(k, int)),
            events=sum(v for k, v in outcomes.statuses.items() if isinstance(k, str)),
            drift_scenario_requests=result.requests if result else None,
            minutes=minutes,
        ),
        line(
            "replica_rss_growth_pct",
            replica_growth,
            GROWTH_TARGET_PCT,
            early_mb=significant(replica_early),
            late_mb=significant(replica_late),
            replica_sets_seen=len(replica_sets),
        ),
        line(
            "daemon_rss_growth_pct",
            daemon_growth,
            GROWTH_TARGET_PCT,
            early_mb=significant(daemon_early),
            late_mb=significant(daemon_late),
        ),
        line(
            "prediction_log_missing",
            missing,
            0,
            answered=len(answered),
            log_rows_of_answered=sum(logged[i] for i in answered),
        ),
        line(
            "longest_warehouse_lock_wait_s",
            longest_wait,
            None,
            runs=dict(statuses),
            retrain_runs=retrains,
            drift_retrain=None if result is None else result.retrain_runs,
            champion_before=champion_before,
            champion_after=None if result is None else result.champion_after,
            drift_error=drift.get("error"),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="8 minutes, monitors every minute")
    parser.add_argument("--attach", action="store_true", help="soak the running platform of this environment")
    args = parser.parse_args()
    minutes = 8.0 if args.quick else args.minutes
    demo = None
    if args.quick and not args.attach:
        os.environ["ML_PLATFORM_MONITOR_CRON"] = "* * * * *"
    if not args.attach:
        demo, env = start_demo(SOAK_DIR / "home")
        os.environ.update(env)
    from ml_platform.settings import load_settings

    try:
        lines = soak(load_settings(), minutes)
    finally:
        if demo is not None:
            stop_demo(demo)
    for figure in lines:
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
