"""Capacity on paper: throughput per core of each stage, and the cores a stated load needs.

Each stage runs what its asset runs, in a process of its own, and is measured in rows per
CPU-second (user + system time of the process, all its threads): a figure per core that holds
whether the stage used one thread or several. Peers are measured in the same run, the same way:
- ingest (``raw_readings`` + ``readings_quarantine`` on one CSV, as bench/ingest.py) vs pandas;
- features (the rolling features of bench/features.py) vs pandas;
- training (``fit_candidate``: the sensor use case's search of four trials and the final fit) vs
  one plain scikit-learn IsolationForest fit on the same rows;
- batch scoring (the registered pipeline's anomaly scores over the rows) vs the same estimator's
  ``score_samples`` on the model input alone.
Serving is not measured here (bench/serving.py does, under wrk); the load table takes its
requests a second per core from ``--serving-rps``, default the README's.

The load (``--readings-per-s``, default 10,000 sensors at one reading a second) then needs, per
stage, load / (rows per CPU-second) cores, printed as one more JSON line per stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time

import features as features_bench
import ingest as ingest_bench
from _measure import cpu_seconds, run_child, significant

QUICK_ROWS, FULL_ROWS = 300_000, 3_000_000
# Serving: requests a second per core at 32 clients in fast mode, 2 replicas (bench/serving.py
# --quick, 2026-12-06: 1,736 requests/s with the server on 1.91 cores).
SERVING_RPS = 900.0
CORES_PER_NODE = 8
TRAINING_DAYS = 7  # the sensor use case's training window


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_rows(sensors: int, days: int):
    """The sensor use case's training set on generated days, as the ``training_set`` asset builds it."""
    import polars as pl

    from ml_platform.features.compute import compute_features
    from ml_platform.training.dataset import SPLIT, build_training_set
    from ml_platform.usecases import get_use_case
    from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, generated_days

    spec = get_use_case("sensor_anomaly")
    first = dt.date(2026, 11, 1)
    data, spans = generated_days(SensorDataConfig(sensors=sensors, days=days, start=first, anchor=first))
    rows = build_training_set(
        data.select(spec.entity, spec.timestamp), compute_features(data, spec), spans, spec
    )
    return spec, rows.filter(pl.col(SPLIT) == "train"), rows.filter(pl.col(SPLIT) == "validation")


def cpu_of(call) -> tuple[object, float]:
    start = cpu_seconds()
    result = call()
    return result, cpu_seconds() - start


def model_child(sensors: int, days: int) -> None:
    """Training and batch scoring, ours and the plain estimator, in this process (one JSON line)."""
    from sklearn.ensemble import IsolationForest

    from ml_platform.tasks import task_of
    from ml_platform.training.evaluate import model_input
    from ml_platform.training.tune import fit_candidate

    spec, train, valid = training_rows(sensors, days)
    task, names = task_of(spec), spec.features.feature_names()
    candidate, fit_cpu = cpu_of(lambda: fit_candidate(spec, train, valid))
    # The peer: the chosen estimator alone, on rows with the gaps filled (it takes no NaN).
    train_x = model_input(train.select(names).to_pandas(), names).fillna(0.0)
    plain = IsolationForest(**{**spec.model.params, **candidate.chosen.params}, random_state=spec.model.seed)
    _, plain_fit_cpu = cpu_of(lambda: plain.fit(train_x))
    scored = model_input(valid.select(names).to_pandas(), names)
    _, score_cpu = cpu_of(lambda: task.scores(candidate.pipeline, scored))
    plain_x = scored.fillna(0.0)
    _, plain_score_cpu = cpu_of(lambda: plain.score_samples(plain_x))
    print(
        json.dumps(
            {
                "train_rows": len(train),
                "trials": len(candidate.trials),
                "fit_cpu_s": fit_cpu,
                "plain_fit_cpu_s": plain_fit_cpu,
                "scored_rows": len(scored),
                "score_cpu_s": score_cpu,
                "plain_score_cpu_s": plain_score_cpu,
            }
        )
    )


def line(stage: str, ours: float, peer: str, peer_value: float) -> dict:
    return {
        "bench": "capacity",
        "figure": f"rows_per_cpu_s_{stage}",
        "ours": significant(ours),
        "peer": peer,
        "peer_value": significant(peer_value),
        "ratio": significant(ours / peer_value),
        "better": "higher",
        "target": None,
        "met": None,
    }


def sized(figure: dict, rows_per_cpu_s: float, load: float) -> dict:
    """``figure`` with the cores a stage at that rate needs to keep up with ``load`` rows a second."""
    cores = load / rows_per_cpu_s
    return figure | {"cores_for_load": significant(cores, 3), "nodes_of_8_cores": -(-cores // CORES_PER_NODE)}


def benchmark(quick: bool, load: float, serving_rps: float) -> None:
    rows = QUICK_ROWS if quick else FULL_ROWS
    label = f"capacity_{rows}"
    lines = []

    ingest_bench.ensure_data(label, rows)
    csv = ingest_bench.data_file(label, "csv")
    ours, pandas = (ingest_bench.measure(impl, csv) for impl in ("ours", "pandas"))
    rate = rows / ours["cpu_seconds"]
    lines.append(sized(line("ingest_csv", rate, "pandas", rows / pandas["cpu_seconds"]), rate, load))

    features_bench.ensure_data(label, rows)
    script = features_bench.__file__
    ours, pandas = (run_child(script, 1, "--child", impl, label) for impl in ("ours", "pandas"))
    rate = rows / ours["cpu_seconds"]
    lines.append(sized(line("features", rate, "pandas", rows / pandas["cpu_seconds"]), rate, load))

    sensors, days = (20, 7) if quick else (60, 14)
    done = subprocess.run(
        [sys.executable, __file__, "--model-child", str(sensors), str(days)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    model = json.loads(done.stdout.strip().splitlines()[-1])
    train_rows = model["train_rows"]
    rate = train_rows / model["fit_cpu_s"]
    plain = train_rows / model["plain_fit_cpu_s"]
    training = line("training", rate, "scikit-learn IsolationForest fit", plain)
    # Training is paid once per retrain on the spec's window, not per reading: its cost is the
    # CPU-hours one retrain over `training_days` of the load takes.
    window_rows = load * 86_400 * TRAINING_DAYS
    lines.append(training | {"cpu_hours_per_retrain": significant(window_rows / rate / 3600, 3)})
    scored = model["scored_rows"]
    rate = scored / model["score_cpu_s"]
    scoring = line("batch_scoring", rate, "scikit-learn score_samples", scored / model["plain_score_cpu_s"])
    lines.append(sized(scoring, rate, load))
    # Not a figure of this run (no peer measured here): the serving bench's, for the table.
    log(f"serving: {serving_rps:.0f} requests/s per core, {load / serving_rps:.1f} cores for the load")
    for item in lines:
        print(json.dumps(item))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows instead of {FULL_ROWS:,}")
    parser.add_argument("--readings-per-s", type=float, default=10_000.0, help="the load to size for")
    parser.add_argument("--serving-rps", type=float, default=SERVING_RPS, help="requests/s per core")
    parser.add_argument("--model-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_child:
        model_child(*args.model_child)
    else:
        started = time.perf_counter()
        benchmark(args.quick, args.readings_per_s, args.serving_rps)
        log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
